"""The rescans: reconciliation walks that find what inotify did not report (reference §2, §3.5).

Scans are asked for at start-up and when a root comes back (:mod:`stampd.daemon.watch.root_watch`),
every ``daemon.rescan``, after an inotify overflow, after a reload widened a watch's filter,
by a directory event (a walk of that directory only) and by ``stampd rescan`` (a deep look,
every sidecar's bytes compared). They queue in a :class:`ScanQueue` (coalesced) and run one at
a time in a thread with its own read-only connection (DESIGN §3), so a long walk never waits
behind the index writer. What a walk finds enters the pipeline through the
:class:`~stampd.daemon.watch.intake.Intake`, like every other candidate.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from stampd.daemon.config.model import DaemonSettings
from stampd.daemon.service.logs import get_logger
from stampd.daemon.service.pause import PauseState
from stampd.daemon.watch.hash_workers import Hashing, InlineHashing
from stampd.daemon.watch.hasher import HashOutcome
from stampd.daemon.watch.intake import Candidate, Intake
from stampd.daemon.watch.runtime import Watches, WatchRuntime
from stampd.daemon.watch.scan import ScanReport, scan_watch
from stampd.daemon.watch.scan_ahead import AheadInWorkers, Comparisons
from stampd.daemon.watch.scan_batches import SCAN_BATCH, ScanBatches
from stampd.daemon.watch.scan_queue import ScanQueue
from stampd.daemon.watch.scan_tracker import FullScanTracker
from stampd.daemon.watch.sidecar_check import SidecarCheck
from stampd.daemon.watch.watcher import count_inotify_watches
from stampd.store.index.database import index_path, open_reader

if TYPE_CHECKING:
    from stampd.daemon.service.metrics import Metrics

# The events were the daemon's before the rescans had a module of their own: one logger name.
log = get_logger("stampd.daemon")

__all__ = ["MAX_BACKLOG", "SCAN_BATCH", "Rescans", "SidecarRepairs"]

#: The scan pauses while this many files wait to settle, hash or be committed (bounded memory).
MAX_BACKLOG = 20_000


class SidecarRepairs(Protocol):
    """Where a walk sends sidecars to put right (the sidecar repair worker)."""

    def check_file(self, file_id: int) -> None:
        """Look at the sidecars of the file with this row id (missing or wrong ones)."""
        ...

    def check_leftover(self, path: Path) -> None:
        """A sidecar whose data file is gone: a rename left it behind."""
        ...


class Rescans:
    """The scan queue, the scanner task, periodic rescans and what scans found out."""

    def __init__(
        self,
        *,
        watches: Watches,
        intake: Intake,
        queue: ScanQueue,
        pause: PauseState,
        repairs: SidecarRepairs,
        settings: DaemonSettings,
        loop: asyncio.AbstractEventLoop,
        stopping: threading.Event,
        metrics: Callable[[], Metrics | None],
        hashing: Hashing | None = None,
    ) -> None:
        self._watches = watches
        #: Where settled scan candidates are hashed: the worker processes, or this thread.
        self._hashing = hashing or InlineHashing()
        self._intake = intake
        self._queue = queue
        self._pause = pause
        self._repairs = repairs
        self._settings = settings
        self._loop = loop
        self._stopping = stopping
        self._metrics = metrics
        self._full_scans = FullScanTracker()
        self._scanning: str | None = None
        self._scan_files = 0
        self._scans_done = 0
        self._subtree_scans_done = 0
        self._unwatched_dirs = 0
        self._inotify_watches: int | None = None
        self._overflows = 0
        #: A temp file older than this daemon was left by a killed one (store/files/leftovers.py).
        self.started_at = time.time()

    # --- what status, health and metrics read ------------------------------------------------

    @property
    def scanning(self) -> str | None:
        """The root or directory being walked now."""
        return self._scanning

    @property
    def scan_files(self) -> int:
        """Files the current walk has seen so far."""
        return self._scan_files

    @property
    def scans_done(self) -> int:
        """Full scans finished since start."""
        return self._scans_done

    @property
    def subtree_scans_done(self) -> int:
        """Walks of one directory finished since start."""
        return self._subtree_scans_done

    @property
    def pending(self) -> int:
        """Scans asked for and not started yet."""
        return len(self._queue)

    @property
    def inotify_watches(self) -> int | None:
        """inotify watches placed, as counted after the last full scan (None: not yet)."""
        return self._inotify_watches

    @property
    def unwatched_dirs(self) -> int:
        """Directories seen by full scans beyond the inotify watches placed (limit reached)."""
        return self._unwatched_dirs

    @property
    def overflows(self) -> int:
        """inotify queue overflows since start."""
        return self._overflows

    @property
    def full_scans(self) -> FullScanTracker:
        """Who waits for which full scan (``stampd rescan``), and their reports."""
        return self._full_scans

    def retune(self, settings: DaemonSettings) -> None:
        """A reload changed ``[daemon]`` (``rescan``, ``fallback_rescan``)."""
        self._settings = settings

    # --- asking for scans ----------------------------------------------------------------------

    def request(
        self, watch: WatchRuntime, subtree: Path | None = None, *, deep: bool = False
    ) -> None:
        """Ask for a full scan of ``watch``, or a walk of ``subtree`` only (coalesced:
        daemon/watch/scan_queue.py); ``deep`` also compares every sidecar's bytes."""
        self._queue.request(watch.root, subtree, deep=deep)

    def rescan_all(self) -> None:
        """Ask for a full scan of every watch."""
        for watch in self._watches:
            self.request(watch)

    async def periodic(self) -> None:
        """Every ``daemon.rescan``: a full scan of every watch."""
        while True:
            await asyncio.sleep(self._settings.rescan)
            self.rescan_all()

    def on_overflow(self) -> None:
        """inotify's queue overflowed: events were lost (called on the observer thread)."""
        # One inotify instance serves every root (#1099).
        log.warning("inotify_overflow", action="rescanning every watch")
        self._overflows += 1
        metrics = self._metrics()
        if metrics is not None:
            metrics.inotify_overflows.inc()
        self._loop.call_soon_threadsafe(self._events_lost)

    def _events_lost(self) -> None:
        self._intake.events_lost()
        self.rescan_all()

    def stop(self) -> None:
        """No more scans: the scanner ends after the walk in progress (which sees the stop)."""
        self._queue.close()

    # --- the scanner -------------------------------------------------------------------------

    async def scanner(self) -> None:
        """Run requested scans one at a time, in a thread with its own read-only connection."""
        conn = open_reader(index_path(self._settings.state_dir))
        try:
            while (request := await self._queue.get()) is not None:
                await self._pause.wait_resumed()
                target = self._watches.at(request.root)
                if target is None:
                    continue  # a reload removed it meanwhile
                subtree = request.subtree
                self._scanning = str(subtree or target.root)
                self._scan_files = 0
                if subtree is None:
                    self._full_scans.started(target.root)
                report, sidecars = await asyncio.to_thread(
                    self._scan_one, conn, target, subtree, request.deep
                )
                self._scanning = None
                if subtree is None:
                    self._full_scan_finished(target, report)
                    await self._full_scans.finished(target.root, report)
                else:
                    # A subtree walk says nothing about the whole tree: the last full scan's
                    # time, length and directory count stay as they were.
                    self._subtree_scans_done += 1
                    metrics = self._metrics()
                    if metrics is not None:
                        metrics.subtree_scans.labels(root=str(target.root)).inc()
                log.info(
                    "scan_finished",
                    root=str(report.root),
                    subtree=str(subtree) if subtree else None,
                    directories=report.directories,
                    files=report.files,
                    candidates=report.candidates,
                    missing=report.missing,
                    errors=report.errors,
                    seconds=round(report.seconds, 3),
                    sidecars_checked=sidecars.checked,
                    sidecars_to_repair=sidecars.flagged,
                    temp_files_removed=sidecars.temps_removed,
                    deep=request.deep,
                    **({"problem": report.problem} if report.problem else {}),
                )
        finally:
            conn.close()

    def _full_scan_finished(self, watch: WatchRuntime, report: ScanReport) -> None:
        self._scans_done += 1
        watch.directories = report.directories
        if not report.stopped and report.problem is None:
            watch.last_scan_at = time.time()
            watch.last_scan_seconds = report.seconds
            metrics = self._metrics()
            if metrics is not None:
                metrics.scans.labels(root=str(watch.root)).inc()
        self.check_watch_limit()

    def _scan_one(
        self,
        conn: sqlite3.Connection,
        watch: WatchRuntime,
        subtree: Path | None = None,
        deep: bool = False,
    ) -> tuple[ScanReport, SidecarCheck]:
        """The scan thread: walk, have what has settled already hashed by the hash workers
        while the walk goes on, hand the rest to the loop (daemon/watch/scan_batches.py).
        Everything crosses to the loop in batches."""
        loop, intake = self._loop, self._intake

        def hand_over(unsettled: list[Candidate], outcomes: list[HashOutcome]) -> None:
            if unsettled:
                loop.call_soon_threadsafe(intake.add_candidates, watch, unsettled)
            if outcomes:
                loop.call_soon_threadsafe(intake.add_outcomes, watch, outcomes)
            while (
                intake.backlog() > MAX_BACKLOG or self._pause.paused
            ) and not self._stopping.is_set():
                time.sleep(0.05)

        batches = ScanBatches(
            watch, self._hashing, hand_over=hand_over, stopping=self._stopping.is_set
        )

        def on_progress(_directories: int, files: int) -> None:
            self._scan_files = files

        def on_missing(paths: list[Path]) -> None:
            # Re-checked just before the write: the file may have come back meanwhile.
            asyncio.run_coroutine_threadsafe(intake.check_gone(paths), loop)

        # Sidecars missing or wrong, and leftovers of renames, go to the repair worker.
        repairs = self._repairs
        sidecars = SidecarCheck(
            layout=watch.config.sidecars,
            state_dir=self._settings.state_dir,
            deep=deep,
            on_file=lambda file_id: loop.call_soon_threadsafe(repairs.check_file, file_id),
            on_leftover=lambda path: loop.call_soon_threadsafe(repairs.check_leftover, path),
            stale_before=self.started_at,
        )
        # With worker processes, they compare the directories of a full scan ahead of its walk
        # (scan_ahead.py). A subtree scan (a directory just made or moved in) is mostly one
        # small directory, which costs less to compare here than a pipe round trip to a
        # worker (bench_scan.py's "100 mkdir+file" figure).
        comparisons: Comparisons | None = None
        if self._hashing.count > 1 and subtree is None:
            comparisons = AheadInWorkers(
                self._hashing,
                index=index_path(self._settings.state_dir),
                include=watch.config.include,
                exclude=watch.config.exclude,
                stopping=self._stopping.is_set,
            )
        try:
            report = scan_watch(
                watch.root,
                conn=conn,
                file_filter=watch.filter,
                on_candidate=batches.settle_later,  # not called: the next one takes them
                on_missing=on_missing,
                should_stop=self._stopping.is_set,
                on_progress=on_progress,
                subtree=subtree,
                sidecars=sidecars,
                on_directory_candidates=batches.directory,
                comparisons=comparisons,
            )
        finally:
            # What is in flight is waited for; on a stop it is not (a worker may be deep in
            # a large file): the next start's scan finds what was not recorded.
            batches.finish()
        return report, sidecars

    def check_watch_limit(self) -> None:
        """After scans: directories seen vs inotify watches placed (reference §2)."""
        expected = sum(watch.directories for watch in self._watches if watch.root_dev is not None)
        try:
            placed = count_inotify_watches()
        except OSError:
            return
        self._inotify_watches = placed
        shortfall = max(0, expected - placed)
        if shortfall and not self._unwatched_dirs:
            log.warning(
                "inotify_watch_limit_reached",
                directories=expected,
                watches=placed,
                unwatched=shortfall,
                fix="raise fs.inotify.max_user_watches (sysctl) and restart stampd; until then"
                " every watch is rescanned every daemon.fallback_rescan"
                f" ({self._settings.fallback_rescan:.0f} s)",
            )
        self._unwatched_dirs = shortfall
