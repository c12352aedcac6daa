"""The intake: every candidate's one way from an event, a scan or a ``stamp`` request to a
recorded version (DESIGN §3: candidates → settle → hash pool → index).

- Events (:meth:`Intake.on_change`, on the loop; the watchdog thread only enqueues) go to the
  settler of the watch holding their path; directory events ask for a walk of that directory.
- The settle tick (:meth:`Intake.settle`) moves settled paths to the hash queue; hash workers
  take them in batches to a thread pool (:meth:`Intake.hash_worker`).
- A scan's pre-hashed outcomes and unsettled candidates enter through
  :meth:`Intake.add_outcomes` and :meth:`Intake.add_candidates`; the scan thread hashes with
  :meth:`Intake.hash`, the same guarded read as the pool's.
- ``stampd stamp`` hashes one file at once and commits it ahead of the queue
  (:meth:`Intake.stamp_now`).

Whatever the way in, one outcome leads to one action: hashed → :meth:`Recorder.submit`,
unreadable → recorded with its reason (retried on a permission change), changed while read →
settled again, skipped → checked for being gone. The counters the health check and the metrics
read (ticks, hash reads, queue sizes) are properties here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stampd.daemon.config.model import DaemonSettings
from stampd.daemon.service.logs import get_logger
from stampd.daemon.service.pause import PauseState
from stampd.daemon.watch.hasher import (
    FileOutcome,
    Hashed,
    HashOutcome,
    Retry,
    Skipped,
    Unreadable,
    hash_file,
)
from stampd.daemon.watch.recorder import Recorder
from stampd.daemon.watch.runtime import Watches, WatchRuntime
from stampd.daemon.watch.scan_queue import ScanQueue
from stampd.daemon.watch.settle import Ready
from stampd.daemon.watch.watcher import Change
from stampd.store.files.filestat import FileStat
from stampd.store.index.new_files import SettledFiles
from stampd.store.index.scan_rows import present_under
from stampd.store.index.versions import Recorded, Settled

if TYPE_CHECKING:
    from stampd.daemon.service.metrics import Metrics

# The events were the daemon's before the intake had a module of its own: one logger name.
log = get_logger("stampd.daemon")

#: Most files one hash thread takes per hand-off from the loop.
HASH_BATCH = 64
#: Longest pause between two settle ticks (a tick is cheap: a heap peek per watch).
TICK_MAX_S = 1.0

#: A candidate the scan saw but that has not met the settle rule: path, stat, and the
#: monotonic time it last changed.
Candidate = tuple[Path, FileStat, float]


@dataclass(frozen=True)
class Stamped:
    """A file ``stamp`` hashed and committed at once."""

    hashed: Hashed
    recorded: Recorded


class Intake:
    """Events, scan results and ``stamp`` requests in; versions to the :class:`Recorder` out."""

    def __init__(
        self,
        *,
        watches: Watches,
        recorder: Recorder,
        pause: PauseState,
        scans: ScanQueue,
        metrics: Callable[[], Metrics | None],
        settings: DaemonSettings,
        workers: int,
    ) -> None:
        self._watches = watches
        self._recorder = recorder
        self._pause = pause
        self._scans = scans
        self._metrics = metrics
        self._stall_after = settings.stall_after
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stampd-hash")
        self._hash_queue: asyncio.Queue[tuple[WatchRuntime, Ready]] = asyncio.Queue()
        self._hashing = 0
        #: Files recorded as unreadable: a permission change (attrib event) retries them.
        self._unreadable: set[Path] = set()
        self._spawned: set[asyncio.Task[None]] = set()
        # Signs of life for the health check: settle ticks, and hash reads and files hashed.
        self._ticks = 0
        self._hash_reads = 0

    # --- what health, status and metrics read ----------------------------------------------

    @property
    def ticks(self) -> int:
        """Settle ticks so far: the settle stage's sign of life."""
        return self._ticks

    @property
    def hash_reads(self) -> int:
        """Reads (and empty files) hashed so far: the hashing stage's sign of life."""
        return self._hash_reads

    @property
    def hashing(self) -> int:
        """Files waiting for a hash thread or being hashed."""
        return self._hash_queue.qsize() + self._hashing

    @property
    def hashing_now(self) -> int:
        """Files a hash thread holds now."""
        return self._hashing

    def backlog(self) -> int:
        """Files between discovery and commit (read from the scan thread; ints are atomic)."""
        return self._watches.settling() + self.hashing + self._recorder.backlog()

    def retune(self, settings: DaemonSettings) -> None:
        """A reload changed ``[daemon]`` (the settle tick follows ``stall_after``)."""
        self._stall_after = settings.stall_after

    # --- events ------------------------------------------------------------------------------

    def deliver_threadsafe(self, loop: asyncio.AbstractEventLoop) -> Callable[[Change], None]:
        """What the watcher's thread calls: hand each event to :meth:`on_change` on ``loop``."""

        def deliver(change: Change) -> None:
            loop.call_soon_threadsafe(self.on_change, change)

        return deliver

    def on_change(self, change: Change) -> None:
        """One filesystem event, on the loop thread."""
        metrics = self._metrics()
        if metrics is not None:
            metrics.events.labels(type=change.kind).inc()
        if change.kind in ("dir_created", "dir_deleted", "dir_moved"):
            self._on_directory_change(change)
        elif change.kind == "moved":
            self._on_move(change)
        else:
            watch = self._watches.of(change.path)
            if watch is None or not watch.filter.accepts(change.path):
                return
            if change.kind == "attrib":
                # Metadata alone does not change content; it matters only to an unreadable file.
                if change.path in self._unreadable:
                    self._unreadable.discard(change.path)
                    watch.settler.on_event("created", change.path)
                return
            watch.settler.on_event(change.kind, change.path)  # type: ignore[arg-type]
            if change.kind == "deleted":
                self._spawn(self.check_gone([change.path]))

    def _on_directory_change(self, change: Change) -> None:
        watch = self._watches.of(change.path)
        if change.kind == "dir_created":
            # Files created before the new directory's watch was placed can be missed
            # (#1278): walk that directory, not the whole root (the cost follows the change).
            if watch is not None and not watch.filter.prunes_dir(change.path):
                self._scans.request(watch.root, change.path)
            return
        if watch is not None:
            watch.settler.forget_under(change.path)
            self._spawn(self._check_gone_under(change.path))
        dest_watch = self._watches.of(change.dest) if change.dest else None
        if (
            dest_watch is not None
            and change.dest is not None
            and not dest_watch.filter.prunes_dir(change.dest)
        ):
            self._scans.request(dest_watch.root, change.dest)

    def _on_move(self, change: Change) -> None:
        # The destination of an atomic save or an rsync copy gets only this event (ref. §1).
        assert change.dest is not None
        watch = self._watches.of(change.path)
        dest_watch = self._watches.of(change.dest)
        if dest_watch is not None and dest_watch.filter.accepts(change.dest):
            if dest_watch is watch:
                dest_watch.settler.on_event("moved", change.path, change.dest)
            else:
                dest_watch.settler.on_event("created", change.dest)
        if watch is not None and watch.filter.accepts(change.path):
            watch.settler.on_event("deleted", change.path)
            # A rename keeps its history: the row is moved when the new name is recorded.
            self._spawn(self.check_gone([change.path]))

    def events_lost(self) -> None:
        """inotify dropped events: every settler re-checks what it holds (a rescan follows)."""
        for watch in self._watches:
            watch.settler.events_lost()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # --- missing files -------------------------------------------------------------------------

    async def check_gone(self, paths: list[Path]) -> None:
        """Mark the files of ``paths`` that are gone as missing."""
        # A Moved or Deleted event is a hint; only a failed lstat makes a file missing.
        gone = [path for path in paths if not _is_regular(path)]
        await self._recorder.missing(gone)

    async def _check_gone_under(self, directory: Path) -> None:
        rows = await self._recorder.call(present_under, self._recorder.index.conn, directory)
        await self.check_gone([path for _file_id, path in rows])

    # --- settle → hash → record ----------------------------------------------------------------

    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """Start the settle tick and the hash workers; their tasks by component name."""
        return {
            "settle": asyncio.create_task(self.settle()),
            **{
                f"hashing[{n}]": asyncio.create_task(self.hash_worker())
                for n in range(self._workers)
            },
        }

    async def settle(self) -> None:
        """Move ready paths from the settlers to the hash queue, as often as settling needs.

        While paused, ready paths stay with their settler (which still follows their events).
        """
        while True:
            self._ticks += 1
            if not self._pause.paused:
                for watch in self._watches:
                    for ready in watch.settler.poll():
                        self._hash_queue.put_nowait((watch, ready))
            quiet = min((watch.config.quiet for watch in self._watches), default=1.0)
            # Often enough for the health check even with a quiet of hours: each tick is the
            # settle stage's sign of life, so there are several per stall_after.
            cap = min(TICK_MAX_S, self._stall_after / 4)
            await asyncio.sleep(max(0.05, min(quiet / 4, cap)))

    async def hash_worker(self) -> None:
        """Hash ready files in batches: one thread hand-off per batch, not per file.

        A hand-off per 4 KiB file costs more than hashing it (the GIL passes between the loop
        and the pool on every call), which capped the first scan at ~1,000 files/s.
        """
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._hash_queue.get()]
            while len(batch) < HASH_BATCH and not self._hash_queue.empty():
                batch.append(self._hash_queue.get_nowait())
            self._hashing += len(batch)
            try:
                outcomes = await loop.run_in_executor(self._pool, self._hash_batch, batch)
                for (watch, _ready), outcome in zip(batch, outcomes, strict=True):
                    await self._handle(watch, outcome)
            except Exception:
                log.exception("hash_failed", first=str(batch[0][1].path), files=len(batch))
            finally:
                self._hashing -= len(batch)

    def _hash_batch(self, batch: list[tuple[WatchRuntime, Ready]]) -> list[HashOutcome]:
        """Hash thread: each ready file of a batch, in order (a vanished root skips its files)."""
        outcomes: list[HashOutcome] = []
        metrics = self._metrics()
        for watch, ready in batch:
            if watch.root_dev is None:
                outcomes.append(Skipped(ready.path, "its watch root is gone"))
                continue
            log.debug("hash_started", path=str(ready.path))
            started = time.monotonic()
            outcome = self.hash(ready.path, root_dev=watch.root_dev, expected=ready.stat)
            if metrics is not None and isinstance(outcome, Hashed):
                metrics.hash_duration.observe(time.monotonic() - started)
            outcomes.append(outcome)
        return outcomes

    def hash(self, path: Path, *, root_dev: int, expected: FileStat | None) -> FileOutcome:
        """Hash one file with every guard of :func:`hash_file` (any thread: the pool, the scan
        thread); each read counts as the hashing stage's sign of life."""
        return hash_file(path, root_dev=root_dev, expected=expected, progress=self._on_hash_read)

    def _on_hash_read(self, _count: int) -> None:
        # Any thread; a lost increment under contention only delays the next sign of life.
        self._hash_reads += 1

    def _count_hashed(self, outcome: Hashed) -> None:
        self._hash_reads += 1  # an empty file reads nothing, but was hashed
        metrics = self._metrics()
        if metrics is not None:
            metrics.hash_bytes.inc(outcome.stat.size)

    async def _handle(self, watch: WatchRuntime, outcome: HashOutcome) -> None:
        if isinstance(outcome, Hashed):
            self._count_hashed(outcome)
            self._recorder.submit(settled(watch, outcome))
        elif isinstance(outcome, Unreadable):
            self._unreadable.add(outcome.path)
            await self._recorder.unreadable(
                watch_id=watch.watch_id,
                path=outcome.path,
                stat=outcome.stat,
                error_class=outcome.error_class,
                message=outcome.message,
            )
        elif isinstance(outcome, Retry):
            log.info("file_changed_while_hashing", path=str(outcome.path), reason=outcome.reason)
            watch.settler.add_candidate(outcome.path)
        elif isinstance(outcome, Skipped):
            log.debug("file_skipped", path=str(outcome.path), reason=outcome.reason)
            await self.check_gone([outcome.path])

    # --- from the scan thread (each call runs on the loop) -----------------------------------

    def add_candidates(self, watch: WatchRuntime, batch: list[Candidate]) -> None:
        """Files the scan found new or changed but not settled yet: the settler takes them."""
        for path, stat, changed_at in batch:
            watch.settler.add_candidate(path, stat=stat, changed_at=changed_at)

    def add_outcomes(self, watch: WatchRuntime, outcomes: list[HashOutcome]) -> None:
        """Files the scan thread had hashed (they had settled already): its tasks' hashed
        files as :class:`SettledFiles`, and the other outcomes one by one."""
        hashed = [outcome for outcome in outcomes if isinstance(outcome, Hashed)]
        files = [outcome for outcome in outcomes if isinstance(outcome, SettledFiles)]
        # What _count_hashed does per file, once for the whole hand-off (a first scan hands
        # over hundreds of files at a time).
        self._hash_reads += len(hashed) + sum(len(many) for many in files)
        metrics = self._metrics()
        if metrics is not None and (hashed or files):
            metrics.hash_bytes.inc(
                sum(outcome.stat.size for outcome in hashed)
                + sum(row[4] for many in files for row in many.rows)
            )
        # SettledFiles go to the writer as they are: no object per file on the loop.
        self._recorder.submit_many(files)
        self._recorder.submit_many(settled_all(watch, hashed))
        if len(hashed) + len(files) < len(outcomes):
            for outcome in outcomes:
                if not isinstance(outcome, Hashed | SettledFiles):
                    self._spawn(self._handle(watch, outcome))

    # --- `stampd stamp` ------------------------------------------------------------------------

    async def stamp_now(
        self, watch: WatchRuntime, path: Path, *, root_dev: int
    ) -> Stamped | Unreadable | Retry | Skipped:
        """Hash ``path`` now and commit it ahead of the queue, without waiting for it to
        settle (the operator says it has); or the outcome that kept it from being recorded."""
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(
            self._pool, partial(self.hash, path, root_dev=root_dev, expected=None)
        )
        if not isinstance(outcome, Hashed):
            return outcome
        self._count_hashed(outcome)
        watch.settler.forget(path)
        recorded = await self._recorder.record_now(settled(watch, outcome))
        return Stamped(outcome, recorded)

    # --- shutdown ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Cancel the missing-file checks still running and wait for the hash pool.

        Hashes already running finish in the pool; their results are dropped, and the next
        start's scan finds those files again. The settle and hash tasks are the caller's to
        cancel first (they are among :meth:`tasks`).
        """
        spawned = list(self._spawned)
        for task in spawned:
            task.cancel()
        await asyncio.gather(*spawned, return_exceptions=True)
        self._pool.shutdown(wait=True, cancel_futures=True)


def settled(watch: WatchRuntime, outcome: Hashed) -> Settled:
    """What the index records of a hashed file of ``watch`` (its version, and its jobs)."""
    return settled_all(watch, [outcome])[0]


def settled_all(watch: WatchRuntime, outcomes: list[Hashed]) -> list[Settled]:
    """:func:`settled` of each of ``outcomes``: the watch's fields are looked up once."""
    watch_id, evidence = watch.watch_id, watch.config.evidence
    return [
        Settled(
            watch_id=watch_id,
            path=outcome.path,
            stat=outcome.stat,
            sha256=outcome.digests.sha256.hex(),
            sha512=outcome.digests.sha512.hex(),
            hashed_at=outcome.hashed_at,
            racy=outcome.racy,
            evidence=evidence,
        )
        for outcome in outcomes
    ]


def _is_regular(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False
