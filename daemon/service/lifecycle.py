"""The daemon's runtime root: one asyncio loop that owns watching, settling, hashing, recording.

Data flow (DESIGN §3): the watchdog thread hands :class:`Change` events to the loop; each
watch's :class:`Settler` decides when a path is ready; ready paths are hashed in a thread pool;
the :class:`Recorder` commits versions and their jobs. A reconciliation scan at start-up (after
readiness, in the background), periodically, after an inotify overflow and after a watch root
comes back finds what inotify did not report.

Start-up order (reference/watching-and-service.md §3.5): state directory → index → watches
→ control socket → ``daemon_ready`` (and ``READY=1`` to systemd) → scan. SIGTERM/SIGINT stop
watching, let in-flight hashes finish, commit what was hashed, and close the index cleanly;
whatever was still settling is found again by the next start's scan. SIGHUP (or ``stampd
reload``) reads the configuration again (:mod:`stampd.daemon.service.reload`). The systemd watchdog
is pinged only while the health check passes (:mod:`stampd.daemon.service.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from stampd.daemon import __version__
from stampd.daemon.config.check import check_config
from stampd.daemon.config.model import Config, WatchConfig
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.repair import RepairCounts, SidecarRepairer
from stampd.daemon.evidence.runners import EvidenceRunners, RunnerSetup
from stampd.daemon.service.control import ControlRequestError, ControlServer, Handler
from stampd.daemon.service.health import Health, StallWatch
from stampd.daemon.service.logs import get_logger
from stampd.daemon.service.metrics import Metrics
from stampd.daemon.service.metrics_families import LiveState, RootState
from stampd.daemon.service.metrics_http import MetricsServer
from stampd.daemon.service.notify import Notifier
from stampd.daemon.service.reload import diff_configs
from stampd.daemon.watch.filters import WatchFilter
from stampd.daemon.watch.hasher import Hashed, HashOutcome, Retry, Skipped, Unreadable, hash_file
from stampd.daemon.watch.recorder import Recorder
from stampd.daemon.watch.roots import RootProblem, check_root
from stampd.daemon.watch.scan import ScanReport, scan_watch
from stampd.daemon.watch.scan_queue import ScanQueue
from stampd.daemon.watch.scan_tracker import FullScanTracker
from stampd.daemon.watch.settle import Ready, Settler
from stampd.daemon.watch.sidecar_check import SidecarCheck
from stampd.daemon.watch.watcher import Change, Watcher, count_inotify_watches
from stampd.store.errors import FileAccessError, StampdError
from stampd.store.files.filestat import FileStat
from stampd.store.files.pathnames import EscapeError, escape, unescape
from stampd.store.files.sidecar import Layout, data_name_of, is_ours
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import Attempt
from stampd.store.index.scan_rows import present_under
from stampd.store.index.times import format_time, utc_now
from stampd.store.index.versions import Settled

log = get_logger("stampd.daemon")

#: The state directory holds the index and every proof ever obtained: owner and group only.
STATE_DIR_MODE = 0o750
#: Threads hashing settled files; hashlib releases the GIL, and the machine has few cores.
HASH_WORKERS = max(2, min(4, os.cpu_count() or 2))
#: Most files one hash thread takes per hand-off from the loop.
HASH_BATCH = 64
#: Scan candidates handed to the loop at a time.
SCAN_BATCH = 256
#: The scan pauses while this many files wait to settle, hash or be committed (bounded memory).
MAX_BACKLOG = 20_000
#: How often watch roots and the watch count are checked.
HEALTH_INTERVAL_S = 1.0
#: How often the health check runs when systemd asks for no watchdog (STATUS, metrics).
CHECK_INTERVAL_S = 5.0
#: Longest pause between two settle ticks (a tick is cheap: a heap peek per watch).
TICK_MAX_S = 1.0
#: Most paths one ``stamp`` request may name (each is hashed before the reply).
MAX_STAMP_PATHS = 1000


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state directory if needed (systemd's StateDirectory= usually has)."""
    try:
        state_dir.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as error:
        raise FileAccessError(
            f"daemon.state_dir: cannot create {state_dir}: {error.strerror}",
            hint="create it and make it writable by the user stampd runs as",
        ) from error
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise FileAccessError(
            f"daemon.state_dir: {state_dir} is not writable by this user",
            hint="fix its owner or mode, or point daemon.state_dir elsewhere",
        )


@dataclass
class WatchRuntime:
    """One configured watch while the daemon runs."""

    config: WatchConfig
    root: Path
    watch_id: int
    filter: WatchFilter
    settler: Settler
    root_dev: int | None = None
    #: Why the root records nothing now (missing, unreadable…), checked every second.
    root_problem: RootProblem | None = None
    directories: int = 0
    #: Unix time and length of the last full scan that walked the whole tree.
    last_scan_at: float | None = None
    last_scan_seconds: float | None = None

    def contains(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    @classmethod
    def of(cls, configured: WatchConfig, watch_id: int) -> WatchRuntime:
        return cls(
            config=configured,
            root=configured.path,
            watch_id=watch_id,
            filter=WatchFilter.for_watch(configured),
            settler=Settler(quiet=configured.quiet, max_wait=configured.max_wait),
        )


class Daemon:
    """What ``stampd run`` runs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_at = utc_now()
        self._stop = asyncio.Event()
        self._stopping = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watches: list[WatchRuntime] = []
        self._hash_queue: asyncio.Queue[tuple[WatchRuntime, Ready]] = asyncio.Queue()
        self._hashing = 0
        self._scan_requests = ScanQueue()
        self._full_scans = FullScanTracker()
        self._scanning: str | None = None
        self._scans_done = 0
        self._subtree_scans_done = 0
        self._unwatched_dirs = 0
        #: Files recorded as unreadable: a permission change (attrib event) retries them.
        self._unreadable: set[Path] = set()
        #: Held by everything that places sidecars (job runners, repair), per path.
        self._path_locks = PathLocks()
        self._notifier = Notifier.from_environ()
        self._metrics: Metrics | None = None
        self._metrics_server: MetricsServer | None = None
        self._hashers = ThreadPoolExecutor(
            max_workers=HASH_WORKERS, thread_name_prefix="stampd-hash"
        )
        self._reload_lock = asyncio.Lock()
        self.reloads = 0
        #: Set while running; cleared by ``stampd pause`` (watching goes on, work waits).
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._paused_since: str | None = None
        self._scan_files = 0
        self._overflows = 0
        self._inotify_watches: int | None = None
        # Signs of life for the health check: settle ticks, hash reads and files hashed.
        self._ticks = 0
        self._hash_reads = 0
        self._components: dict[str, asyncio.Task[Any]] = {}
        stall = config.daemon.stall_after
        self._stalls = {
            name: StallWatch(name, stall_after=stall)
            for name in ("settle", "hashing", "index writer")
        }
        self.health = Health()
        self._status_sent = ""

    # --- control -----------------------------------------------------------------------------

    def _handlers(self) -> dict[str, Handler]:
        return {
            "status": self._status,
            "stamp": self._stamp_request,
            "rescan": self._rescan_request,
            "reload": self._reload_request,
            "pause": self._pause_request,
            "resume": self._resume_request,
        }

    async def _status(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        def iso(seconds: float | None) -> str | None:
            # Every time in --json output is ISO 8601 UTC, in the index's format (the
            # metrics keep Unix seconds, the Prometheus convention).
            return None if seconds is None else format_time(datetime.fromtimestamp(seconds, UTC))

        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "config": str(self.config.source),
            "reloads": self.reloads,
            "healthy": self.health.ok,
            "problems": list(self.health.problems),
            "paused_since": self._paused_since,
            "watches": [str(watch.root) for watch in self._watches],
            "settling": sum(len(watch.settler) for watch in self._watches),
            "hashing": self._hash_queue.qsize() + self._hashing,
            "recording": self._recorder.backlog(),
            "scanning": self._scanning,
            "scan_files": self._scan_files if self._scanning else None,
            "scans_done": self._scans_done,
            "subtree_scans_done": self._subtree_scans_done,
            "scans_pending": len(self._scan_requests),
            "watchdog_pinged": self.health.alive,
            "scans": [
                {
                    "root": str(watch.root),
                    "watched": watch.root_dev is not None,
                    "ok": watch.root_dev is not None and watch.root_problem is None,
                    "problem": watch.root_problem.reason if watch.root_problem else None,
                    "hint": watch.root_problem.hint if watch.root_problem else None,
                    "directories": watch.directories,
                    "last_full_scan_at": iso(watch.last_scan_at),
                    "last_full_scan_seconds": watch.last_scan_seconds,
                }
                for watch in self._watches
            ],
            "inotify_watches": self._inotify_watches,
            "unwatched_dirs": self._unwatched_dirs,
            "inotify_overflows": self._overflows,
            "metrics": self._status_metrics_url(),
            **self._runners.status(),
        }

    def _status_metrics_url(self) -> str | None:
        server = self._metrics_server
        return None if server is None else f"http://{_host(server.host)}:{server.port}/metrics"

    async def _stamp_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise ControlRequestError('"stamp" needs "paths": a list of absolute paths')
        if len(paths) > MAX_STAMP_PATHS:
            raise ControlRequestError(f'"stamp" takes at most {MAX_STAMP_PATHS} paths at once')
        return {"results": [await self._stamp_one(path) for path in paths]}

    async def _stamp_one(self, text: str) -> dict[str, Any]:
        """Record one file now, without waiting for it to settle (the operator says it has)."""
        target = self._stamp_target(text)
        if isinstance(target, _Refusal):
            return target.reply(text)
        path, watch, root_dev = target
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(
            self._hashers, partial(hash_file, path, root_dev=root_dev, progress=self._on_hash_read)
        )
        shown = escape(path)
        if isinstance(outcome, Hashed):
            self._count_hashed(outcome)
            watch.settler.forget(path)
            recorded = await self._recorder.record_now(self._settled(watch, outcome))
            return {
                "path": shown,
                "recorded": True,
                "outcome": recorded.outcome,
                "version_id": recorded.version_id,
                "size": outcome.stat.size,
                "sha256": outcome.digests.sha256_hex,
                "queued": list(watch.config.evidence) if recorded.job_ids else [],
            }
        if isinstance(outcome, Unreadable):
            refusal = _Refusal(outcome.error_class, f"{shown}: {outcome.message}")
        elif isinstance(outcome, Retry):
            refusal = _Refusal(
                "changing", f"{shown} changed while it was read", "stamp it once the writer is done"
            )
        elif outcome.reason == "gone":
            refusal = _Refusal("not_found", f"{shown}: no such file")
        else:
            refusal = _Refusal("skipped", f"{shown}: {outcome.reason}")
        return refusal.reply(text)

    def _stamp_target(self, text: str) -> tuple[Path, WatchRuntime, int] | _Refusal:
        """The file ``stamp`` names and its watch, or why it cannot be stamped.

        Paths arrive in the escaped form of store/files/pathnames.py, as every path on the socket.
        """
        path = _requested_path(text)
        if isinstance(path, _Refusal):
            return path
        watch = self._watch_of(path)
        if watch is None or path == watch.root:
            return _Refusal(
                "not_watched",
                f"{escape(path)} is not under a watch",
                "stampd records only files under a [[watch]] path of its configuration",
            )
        refusal = _refusal_in(watch, path)
        if refusal is not None:
            return refusal
        assert watch.root_dev is not None  # _refusal_in checked it
        return path, watch, watch.root_dev

    async def _rescan_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        text = request.get("path")
        if text is None:
            targets = list(self._watches)
        elif isinstance(text, str) and text.startswith("/"):
            path = _requested_path(text)
            if isinstance(path, _Refusal):
                raise ControlRequestError(f'"path": {path.message}')
            targets = [watch for watch in self._watches if watch.contains(path)]
            if not targets:
                raise ControlRequestError(f"{escape(path)} is not under a watch")
        else:
            raise ControlRequestError('"path" must be an absolute path')
        missing = [str(watch.root) for watch in targets if watch.root_dev is None]
        scanned = [watch for watch in targets if watch.root_dev is not None]
        tickets = {watch.root: self._full_scans.ticket(watch.root) for watch in scanned}
        before = dataclasses.replace(self._repairer.counts)
        for watch in scanned:
            # Asked for by an operator: a deep look, every sidecar's bytes compared.
            self._request_scan(watch, deep=True)
        requested = [str(watch.root) for watch in scanned]
        log.info("rescan_requested", roots=requested)
        reply: dict[str, Any] = {
            "scans_requested": requested,
            "roots_missing": missing,
            "paused": self.paused,
            "waited": False,
        }
        if request.get("wait") is not True or self.paused:
            return reply  # paused: the scans run after `stampd resume`
        return {**reply, **await self._rescan_outcome(tickets, before)}

    async def _rescan_outcome(
        self, tickets: Mapping[Path, int], before: RepairCounts
    ) -> dict[str, Any]:
        """Wait for the requested walks, then for the repairs they asked for; what both did."""
        scans = []
        for root, ticket in tickets.items():
            report = await self._full_scans.wait(root, ticket)
            if report is not None:
                scans.append(_scan_summary(report))
        await self._repairer.drained()
        after = self._repairer.counts
        return {
            "waited": True,
            "scans": scans,
            "sidecars": {
                "repaired": after.repaired - before.repaired,
                "written": after.written - before.written,
                "adopted": after.adopted - before.adopted,
                "retired": after.retired - before.retired,
                "problems": after.problems - before.problems,
            },
        }

    async def _reload_request(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        return await self.reload("control")

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    async def _pause_request(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        if not self.paused:
            self._paused_since = utc_now()
            self._resumed.clear()
            self._runners.pause()
            log.info("daemon_paused", hint="`stampd resume` continues; watching goes on")
        return {"paused": True, "since": self._paused_since}

    async def _resume_request(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        was = self._paused_since
        if self.paused:
            self._paused_since = None
            self._resumed.set()
            self._runners.resume()
            log.info("daemon_resumed", paused_since=was)
        return {"paused": False, "was_paused_since": was}

    def request_stop(self, signame: str) -> None:
        """Ask the loop to shut down (called from a signal handler)."""
        if self._stop.is_set():
            return  # `make run` under `timeout`, or systemd, may deliver it twice
        log.info("daemon_stopping", signal=signame)
        self._notifier.stopping(f"stopping on {signame}")
        self._stopping.set()
        self._stop.set()

    # --- reload --------------------------------------------------------------------------------

    def _on_sighup(self) -> None:
        async def reload_quietly() -> None:
            with contextlib.suppress(ConfigError):  # refused: logged, and the old one runs on
                await self.reload("SIGHUP")

        self._spawn(reload_quietly())

    async def reload(self, trigger: str) -> dict[str, Any]:
        """Read the configuration file again and apply it, or refuse it and keep the old one.

        Raises :class:`ConfigError` (the reason) when the new configuration is refused.
        """
        async with self._reload_lock:
            self._notifier.reloading()
            try:
                return await self._reload(trigger)
            finally:
                self._notifier.ready(self._status_line())

    async def _reload(self, trigger: str) -> dict[str, Any]:
        source = self.config.source
        try:
            # The same full check as `stampd config check` and the start (every TSA's trust
            # and secret files), so a reload refuses exactly what a restart would.
            new = (await asyncio.to_thread(check_config, source)).config
            diff = diff_configs(self.config, new)
            if diff.restart_only:
                raise ConfigError(
                    f"{source}: {'; '.join(diff.restart_only)}",
                    hint="these take effect only at a restart (systemctl restart stampd);"
                    " put the old values back to reload the rest",
                )
            runners = self._runners.prepare(new)
            metrics_server = self._rebind_metrics(new) if "metrics" in diff.daemon_changed else None
        except ConfigError as error:
            log.error("reload_refused", trigger=trigger, reason=str(error), config=str(source))
            raise
        changes = diff.describe()
        for path in diff.removed:
            watch = next(w for w in self._watches if w.root == path)
            self._watcher.remove_root(path)
            self._watches.remove(watch)
            await self._full_scans.forget(path)
        for configured in diff.added:
            watch_id = await self._recorder.call(self._recorder.index.ensure_watch, configured.path)
            assert isinstance(watch_id, int)
            watch = WatchRuntime.of(configured, watch_id)
            self._watches.append(watch)
            self._start_watching(watch, self._watcher.add_root(watch.root))
        for configured, keys in diff.changed:
            watch = next(w for w in self._watches if w.root == configured.path)
            watch.config = configured
            watch.filter = WatchFilter.for_watch(configured)
            watch.settler.retune(quiet=configured.quiet, max_wait=configured.max_wait)
            if {"include", "exclude"} & set(keys) and watch.root_dev is not None:
                self._request_scan(watch)  # files newly included are found by a walk
        self.config = new
        self._apply_runners(runners)
        if "metrics" in diff.daemon_changed:
            self._replace_metrics_server(metrics_server)
        for stall in self._stalls.values():
            stall.stall_after = new.daemon.stall_after
        if "log_level" in diff.daemon_changed:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        self.reloads += 1
        log.info("config_reloaded", trigger=trigger, config=str(source), changes=changes)
        return {"config": str(source), "changes": changes}

    def backlog(self) -> int:
        """Files between discovery and commit (read from the scan thread; ints are atomic)."""
        settling = sum(len(watch.settler) for watch in self._watches)
        return settling + self._hash_queue.qsize() + self._hashing + self._recorder.backlog()

    # --- events ------------------------------------------------------------------------------

    def _layout_of(self, path: Path) -> Layout | None:
        """The sidecar layout for a file at ``path`` (None when no watch holds it)."""
        watch = self._watch_of(path)
        return None if watch is None else watch.config.sidecars

    def _watch_of(self, path: Path) -> WatchRuntime | None:
        for watch in self._watches:
            if watch.contains(path):
                return watch
        return None

    def on_change(self, change: Change) -> None:
        """One filesystem event, on the loop thread."""
        if self._metrics is not None:
            self._metrics.events.labels(type=change.kind).inc()
        if change.kind in ("dir_created", "dir_deleted", "dir_moved"):
            self._on_directory_change(change)
        elif change.kind == "moved":
            self._on_move(change)
        else:
            watch = self._watch_of(change.path)
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
                self._spawn(self._check_gone([change.path]))

    def _on_directory_change(self, change: Change) -> None:
        watch = self._watch_of(change.path)
        if change.kind == "dir_created":
            # Files created before the new directory's watch was placed can be missed
            # (#1278): walk that directory, not the whole root (the cost follows the change).
            if watch is not None and not watch.filter.prunes_dir(change.path):
                self._request_scan(watch, change.path)
            return
        if watch is not None:
            watch.settler.forget_under(change.path)
            self._spawn(self._check_gone_under(change.path))
        dest_watch = self._watch_of(change.dest) if change.dest else None
        if (
            dest_watch is not None
            and change.dest is not None
            and not dest_watch.filter.prunes_dir(change.dest)
        ):
            self._request_scan(dest_watch, change.dest)

    def _on_move(self, change: Change) -> None:
        # The destination of an atomic save or an rsync copy gets only this event (ref. §1).
        assert change.dest is not None
        watch = self._watch_of(change.path)
        dest_watch = self._watch_of(change.dest)
        if dest_watch is not None and dest_watch.filter.accepts(change.dest):
            if dest_watch is watch:
                dest_watch.settler.on_event("moved", change.path, change.dest)
            else:
                dest_watch.settler.on_event("created", change.dest)
        if watch is not None and watch.filter.accepts(change.path):
            watch.settler.on_event("deleted", change.path)
            # A rename keeps its history: the row is moved when the new name is recorded.
            self._spawn(self._check_gone([change.path]))

    def _deliver_threadsafe(self, loop: asyncio.AbstractEventLoop) -> Callable[[Change], None]:
        def deliver(change: Change) -> None:
            loop.call_soon_threadsafe(self.on_change, change)

        return deliver

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- missing files -------------------------------------------------------------------------

    async def _check_gone(self, paths: list[Path]) -> None:
        # A Moved or Deleted event is a hint; only a failed lstat makes a file missing.
        gone = [path for path in paths if not _is_regular(path)]
        await self._recorder.missing(gone)

    async def _check_gone_under(self, directory: Path) -> None:
        index = self._recorder.index
        rows = await self._recorder.call(present_under, index.conn, directory)
        assert isinstance(rows, list)
        await self._check_gone([path for _file_id, path in rows])

    # --- settle → hash → record ----------------------------------------------------------------

    async def _tick(self) -> None:
        """Move ready paths from the settlers to the hash queue, as often as settling needs.

        While paused, ready paths stay with their settler (which still follows their events).
        """
        while True:
            self._ticks += 1
            if not self.paused:
                for watch in list(self._watches):
                    for ready in watch.settler.poll():
                        self._hash_queue.put_nowait((watch, ready))
            quiet = min((watch.config.quiet for watch in self._watches), default=1.0)
            # Often enough for the health check even with a quiet of hours: each tick is the
            # settle stage's sign of life, so there are several per stall_after.
            cap = min(TICK_MAX_S, self.config.daemon.stall_after / 4)
            await asyncio.sleep(max(0.05, min(quiet / 4, cap)))

    async def _hash_worker(self, pool: ThreadPoolExecutor) -> None:
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
                outcomes = await loop.run_in_executor(pool, self._hash_batch, batch)
                for (watch, _ready), outcome in zip(batch, outcomes, strict=True):
                    await self._handle(watch, outcome)
            except Exception:
                log.exception("hash_failed", first=str(batch[0][1].path), files=len(batch))
            finally:
                self._hashing -= len(batch)

    def _hash_batch(self, batch: list[tuple[WatchRuntime, Ready]]) -> list[HashOutcome]:
        """Hash thread: each ready file of a batch, in order (a vanished root skips its files)."""
        outcomes: list[HashOutcome] = []
        for watch, ready in batch:
            if watch.root_dev is None:
                outcomes.append(Skipped(ready.path, "its watch root is gone"))
                continue
            log.debug("hash_started", path=str(ready.path))
            started = time.monotonic()
            outcome = hash_file(
                ready.path,
                root_dev=watch.root_dev,
                expected=ready.stat,
                progress=self._on_hash_read,
            )
            if self._metrics is not None and isinstance(outcome, Hashed):
                self._metrics.hash_duration.observe(time.monotonic() - started)
            outcomes.append(outcome)
        return outcomes

    def _on_hash_read(self, _count: int) -> None:
        # Any thread; a lost increment under contention only delays the next sign of life.
        self._hash_reads += 1

    def _count_hashed(self, outcome: Hashed) -> None:
        self._hash_reads += 1  # an empty file reads nothing, but was hashed
        if self._metrics is not None:
            self._metrics.hash_bytes.inc(outcome.stat.size)

    async def _handle(self, watch: WatchRuntime, outcome: HashOutcome) -> None:
        if isinstance(outcome, Hashed):
            self._count_hashed(outcome)
            self._recorder.submit(self._settled(watch, outcome))
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
            await self._check_gone([outcome.path])

    @staticmethod
    def _settled(watch: WatchRuntime, outcome: Hashed) -> Settled:
        return Settled(
            watch_id=watch.watch_id,
            path=outcome.path,
            stat=outcome.stat,
            sha256=outcome.digests.sha256_hex,
            sha512=outcome.digests.sha512_hex,
            hashed_at=outcome.hashed_at,
            racy=outcome.racy,
            evidence=watch.config.evidence,
        )

    # --- scans ---------------------------------------------------------------------------------

    def _request_scan(
        self, watch: WatchRuntime, subtree: Path | None = None, *, deep: bool = False
    ) -> None:
        """Ask for a full scan of ``watch``, or a walk of ``subtree`` only (coalesced:
        daemon/watch/scan_queue.py); ``deep`` also compares every sidecar's bytes."""
        self._scan_requests.request(watch.root, subtree, deep=deep)

    async def _scanner(self) -> None:
        """Run requested scans one at a time, in a thread with its own read-only connection."""
        loop = asyncio.get_running_loop()
        conn = open_reader(index_path(self.config.daemon.state_dir))
        try:
            while (request := await self._scan_requests.get()) is not None:
                await self._resumed.wait()
                target = next((w for w in self._watches if w.root == request.root), None)
                if target is None:
                    continue  # a reload removed it meanwhile
                subtree = request.subtree
                self._scanning = str(subtree or target.root)
                self._scan_files = 0
                if subtree is None:
                    self._full_scans.started(target.root)
                report, sidecars = await asyncio.to_thread(
                    self._scan_one, loop, conn, target, subtree, request.deep
                )
                self._scanning = None
                if subtree is None:
                    self._full_scan_finished(target, report)
                    await self._full_scans.finished(target.root, report)
                else:
                    # A subtree walk says nothing about the whole tree: the last full scan's
                    # time, length and directory count stay as they were.
                    self._subtree_scans_done += 1
                    if self._metrics is not None:
                        self._metrics.subtree_scans.labels(root=str(target.root)).inc()
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
            if self._metrics is not None:
                self._metrics.scans.labels(root=str(watch.root)).inc()
        self._check_watch_limit()

    def _scan_one(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: Any,
        watch: WatchRuntime,
        subtree: Path | None = None,
        deep: bool = False,
    ) -> tuple[ScanReport, SidecarCheck]:
        """The scan thread: walk, hash what has settled already, hand the rest to the loop.

        A file unchanged for longer than ``quiet`` (by its own mtime and ctime) whose fstat at
        open still equals what the walk saw has met the settle rule (two equal stats a quiet
        period apart), so the scan thread hashes it at once rather than sending it through
        the settler and the hash pool: each hand-off between threads costs more than hashing
        a small file, and a first scan is mostly such files. Other candidates settle as
        usual. Everything crosses to the loop in batches.
        """
        now_wall, now_mono = time.time(), time.monotonic()
        unsettled: list[tuple[Path, FileStat, float]] = []
        outcomes: list[HashOutcome] = []

        def hand_over() -> None:
            if unsettled:
                loop.call_soon_threadsafe(self._add_candidates, watch, unsettled.copy())
                unsettled.clear()
            if outcomes:
                loop.call_soon_threadsafe(self._add_outcomes, watch, outcomes.copy())
                outcomes.clear()
            while (self.backlog() > MAX_BACKLOG or self.paused) and not self._stopping.is_set():
                time.sleep(0.05)

        def on_candidate(path: Path, stat: FileStat) -> None:
            # Settled for as long as neither content nor metadata changed (settle.py).
            age = max(0.0, now_wall - max(stat.mtime_ns, stat.ctime_ns) / 1e9)
            outcome: HashOutcome | None = None
            # A pending path is the settler's: events may say it is still open for writing.
            if (
                age > watch.config.quiet
                and watch.root_dev is not None
                and path not in watch.settler
            ):
                outcome = hash_file(
                    path, root_dev=watch.root_dev, expected=stat, progress=self._on_hash_read
                )
                if isinstance(outcome, Retry) or (
                    isinstance(outcome, Hashed) and outcome.stat != stat
                ):
                    outcome = None  # changed since the walk saw it: settle it after all
            if outcome is None:
                unsettled.append((path, stat, now_mono - age))
            else:
                outcomes.append(outcome)
            if len(unsettled) + len(outcomes) >= SCAN_BATCH:
                hand_over()

        def on_progress(_directories: int, files: int) -> None:
            self._scan_files = files

        def on_missing(paths: list[Path]) -> None:
            # Re-checked just before the write: the file may have come back meanwhile.
            asyncio.run_coroutine_threadsafe(self._check_gone(paths), loop)

        # Sidecars missing or wrong, and leftovers of renames, go to the repair worker.
        repairer = self._repairer
        sidecars = SidecarCheck(
            layout=watch.config.sidecars,
            state_dir=self.config.daemon.state_dir,
            deep=deep,
            on_file=lambda file_id: loop.call_soon_threadsafe(repairer.check_file, file_id),
            on_leftover=lambda path: loop.call_soon_threadsafe(repairer.check_leftover, path),
        )
        try:
            report = scan_watch(
                watch.root,
                conn=conn,
                file_filter=watch.filter,
                on_candidate=on_candidate,
                on_missing=on_missing,
                should_stop=self._stopping.is_set,
                on_progress=on_progress,
                subtree=subtree,
                sidecars=sidecars,
            )
        finally:
            hand_over()
        return report, sidecars

    def _add_candidates(
        self, watch: WatchRuntime, batch: list[tuple[Path, FileStat, float]]
    ) -> None:
        for path, stat, changed_at in batch:
            watch.settler.add_candidate(path, stat=stat, changed_at=changed_at)

    def _add_outcomes(self, watch: WatchRuntime, outcomes: list[HashOutcome]) -> None:
        rest = []
        for outcome in outcomes:
            if isinstance(outcome, Hashed):
                self._count_hashed(outcome)
                self._recorder.submit(self._settled(watch, outcome))
            else:
                rest.append(outcome)
        for outcome in rest:
            self._spawn(self._handle(watch, outcome))

    async def _periodic_rescan(self) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.rescan)
            for watch in self._watches:
                self._request_scan(watch)

    def _on_overflow(self) -> None:
        # Called on the observer thread; one inotify instance serves every root (#1099).
        log.warning("inotify_overflow", action="rescanning every watch")
        self._overflows += 1
        if self._metrics is not None:
            self._metrics.inotify_overflows.inc()
        self._loop.call_soon_threadsafe(self._events_lost)

    def _rescan_all(self) -> None:
        for watch in self._watches:
            self._request_scan(watch)

    def _events_lost(self) -> None:
        for watch in self._watches:
            watch.settler.events_lost()
        self._rescan_all()

    def _check_watch_limit(self) -> None:
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
                f" ({self.config.daemon.fallback_rescan:.0f} s)",
            )
        self._unwatched_dirs = shortfall

    async def _watch_roots(self) -> None:
        """Re-watch roots that came back; rescan on the fallback interval while watches lack."""
        last_fallback = time.monotonic()
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            rewatched = set(self._watcher.check_roots())
            for watch in list(self._watches):
                if watch.root in rewatched:
                    self._start_watching(watch, True)
                    continue
                if not self._watcher.is_watched(watch.root):
                    watch.root_dev = None  # vanished while running: hash nothing below it
                self._check_root(watch)
            fallback = self.config.daemon.fallback_rescan
            if self._unwatched_dirs and time.monotonic() - last_fallback > fallback:
                last_fallback = time.monotonic()
                self._rescan_all()

    # --- health and systemd --------------------------------------------------------------------

    def _check_root(self, watch: WatchRuntime) -> None:
        """Note (and log, once) a watch root going bad or coming good again."""
        problem = check_root(watch.root, watched=watch.root_dev is not None)
        if problem == watch.root_problem:
            return
        was = watch.root_problem
        watch.root_problem = problem
        if problem is not None:
            log.warning(
                f"watch_root_{problem.kind}",
                path=str(watch.root),
                reason=problem.reason,
                hint=problem.hint,
            )
        elif was is not None:
            log.info("watch_root_ok", path=str(watch.root), was=was.reason)
            # Readable again (a chmod on the root changes no file's key): walk it, so that
            # files that could not be read meanwhile are hashed now.
            if watch.root_dev is not None:
                self._request_scan(watch)

    def check_health(self) -> Health:
        """Observer, settle, hashing and index writer: alive, and moving when work waits;
        watch roots: usable (a problem, but not one that stops the watchdog pings)."""
        problems = []
        if not self._watcher.observer_alive():
            problems.append("observer: the inotify dispatch thread has stopped")
        for name, task in self._components.items():
            if task.done():
                problems.append(f"{name}: stopped")
        hashing = self._hash_queue.qsize() + self._hashing > 0 and not self.paused
        recorder = self._recorder
        for problem in (
            self._stalls["settle"].check(waiting=True, progress=self._ticks),
            self._stalls["hashing"].check(
                waiting=self._hashing > 0 or hashing, progress=self._hash_reads
            ),
            self._stalls["index writer"].check(
                waiting=recorder.backlog() > 0 or recorder.calls_running > 0,
                progress=recorder.calls_done,
            ),
        ):
            if problem is not None:
                problems.append(problem)
        outside = tuple(
            watch.root_problem.describe(watch.root)
            for watch in self._watches
            if watch.root_problem is not None
        )
        return Health(tuple(problems), outside)

    def _status_line(self) -> str:
        """One line for ``systemctl status`` (STATUS=)."""
        watched = sum(1 for watch in self._watches if watch.root_dev is not None)
        parts = [f"watching {watched} of {len(self._watches)} roots"]
        if self._scanning:
            parts.append(f"scanning {self._scanning} ({self._scan_files:,} files)")
        busy = sum(len(watch.settler) for watch in self._watches)
        hashing = self._hash_queue.qsize() + self._hashing
        if busy or hashing:
            parts.append(f"{busy:,} settling, {hashing:,} hashing")
        stamping = self._runners.in_flight()
        if stamping:
            parts.append(f"{stamping} stamping")
        if self._unwatched_dirs:
            parts.append(f"{self._unwatched_dirs:,} directories without inotify watch")
        if self.paused:
            parts.append(f"PAUSED since {self._paused_since}")
        if not self.health.ok:
            parts.insert(0, "UNHEALTHY: " + "; ".join(self.health.problems))
        return "; ".join(parts)

    async def _watchdog(self) -> None:
        """Check health; ping systemd's watchdog only while it passes (never a blind timer)."""
        interval = min(self._notifier.watchdog_interval or CHECK_INTERVAL_S, CHECK_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            health = self.check_health()
            if health.problems != self.health.problems:
                if health.ok:
                    log.info("health_restored")
                else:
                    log.error(
                        "health_failed",
                        problems=list(health.problems),
                        consequence=(
                            "watchdog pings go on: a restart would not fix this"
                            if health.alive
                            else "watchdog pings stop; systemd restarts stampd after WatchdogSec"
                        ),
                    )
            self.health = health
            line = self._status_line()
            if line != self._status_sent:
                self._notifier.status(line)
                self._status_sent = line
            if health.alive and self._notifier.watchdog_interval is not None:
                self._notifier.watchdog()

    # --- metrics -------------------------------------------------------------------------------

    def _live_state(self) -> LiveState:
        """What the metrics need from the running daemon (called on the scrape thread)."""
        return LiveState(
            roots=tuple(
                RootState(
                    root=str(watch.root),
                    watched=watch.root_dev is not None,
                    problem=watch.root_problem.kind if watch.root_problem else None,
                    directories=watch.directories,
                    scanning=self._scanning == str(watch.root),
                    last_scan_finished_at=watch.last_scan_at,
                    last_scan_seconds=watch.last_scan_seconds,
                )
                for watch in list(self._watches)
            ),
            inotify_watches=self._inotify_watches,
            unwatched_dirs=self._unwatched_dirs,
            settle_queue=sum(len(watch.settler) for watch in list(self._watches)),
            hash_queue=self._hash_queue.qsize() + self._hashing,
            record_queue=self._recorder.backlog(),
            paused=self.paused,
            providers=self._runners.providers_up(),
            healthy=self.health.ok,
        )

    def _bind_metrics(self, config: Config) -> MetricsServer | None:
        """Serve ``/metrics`` where ``daemon.metrics`` says; an unusable address is a config
        error (exit 2 at start, a refused reload later)."""
        if config.daemon.metrics is None:
            return None
        if self._metrics is None:
            self._metrics = Metrics(
                version=__version__,
                index_path=index_path(config.daemon.state_dir),
                live=self._live_state,
            )
        host, port = config.daemon.metrics
        try:
            return self._metrics.serve(host, port)
        except StampdError as error:
            raise ConfigError(error.message, hint=error.hint) from None

    def _rebind_metrics(self, config: Config) -> MetricsServer | None:
        if self._metrics_server is not None and config.daemon.metrics is not None:
            # Rebinding the same port fails while the old server holds it: close it first,
            # and bring it back on the old address if the new one is unusable.
            self._metrics_server.close()
            self._metrics_server = None
            try:
                return self._bind_metrics(config)
            except ConfigError:
                self._metrics_server = self._bind_metrics(self.config)
                raise
        return self._bind_metrics(config)

    def _replace_metrics_server(self, server: MetricsServer | None) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
        self._metrics_server = server

    def _on_attempts(self, kind: str, attempts: Sequence[Attempt]) -> None:
        if self._metrics is None:
            return
        for attempt in attempts:
            self._metrics.stamp_requests.labels(
                provider=attempt.provider, kind=kind, result=attempt.error_class or "ok"
            ).inc()
            self._metrics.stamp_duration.labels(provider=attempt.provider, kind=kind).observe(
                attempt.latency_ms / 1000
            )

    # --- lifecycle -----------------------------------------------------------------------------

    def _start_watching(self, watch: WatchRuntime, watched: bool) -> None:
        """A root is watched (at start, on a reload, or back again): scan all of it; or it
        is not, and says why (daemon/watch/roots.py)."""
        if watched:
            try:
                watch.root_dev = watch.root.stat().st_dev
            except OSError:
                watch.root_dev = None  # gone again at once: the next check_roots sees it
            else:
                self._request_scan(watch)
        self._check_root(watch)

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT."""
        self._loop = asyncio.get_running_loop()
        state_dir = self.config.daemon.state_dir
        prepare_state_dir(state_dir)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        # Until the handler is in place, SIGHUP's default action would kill the daemon.
        self._loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

        index = Index.open(index_path(state_dir))
        self._recorder = Recorder(index)
        self._runners = EvidenceRunners(
            recorder=self._recorder,
            state_dir=state_dir,
            locks=self._path_locks,
            on_attempts=self._on_attempts,
        )
        try:
            runners = self._runners.prepare(self.config)
        except ConfigError:
            self._recorder.close()
            index.close()
            raise
        self._repairer = SidecarRepairer(
            recorder=self._recorder,
            reader=partial(open_reader, index_path(state_dir)),
            state_dir=state_dir,
            layout_of=self._layout_of,
            verifier=lambda: self._runners,
            locks=self._path_locks,
        )
        self._recorder.on_commit = self._repairer.after_commit
        try:
            self._metrics_server = self._bind_metrics(self.config)
        except ConfigError:
            self._recorder.close()
            index.close()
            raise
        for configured in self.config.watches:
            self._watches.append(WatchRuntime.of(configured, index.ensure_watch(configured.path)))
        self._watcher = Watcher(
            [watch.root for watch in self._watches],
            deliver=self._deliver_threadsafe(self._loop),
            on_overflow=self._on_overflow,
        )
        watched = set(self._watcher.start())
        control = ControlServer(self.config.daemon.control_socket, self._handlers())
        watchdog: asyncio.Task[None] | None = None
        try:
            await control.start()
            self._components = {
                "index writer": asyncio.create_task(self._recorder.run()),
                "sidecar repair": asyncio.create_task(self._repairer.run()),
                "settle": asyncio.create_task(self._tick()),
                "root watch": asyncio.create_task(self._watch_roots()),
                "periodic rescan": asyncio.create_task(self._periodic_rescan()),
                **{
                    f"hashing[{n}]": asyncio.create_task(self._hash_worker(self._hashers))
                    for n in range(HASH_WORKERS)
                },
            }
            self._apply_runners(runners)
            scanner = asyncio.create_task(self._scanner())
            self._components["scanner"] = scanner
            watchdog = asyncio.create_task(self._watchdog())
            log.info(
                "daemon_ready",
                version=__version__,
                pid=os.getpid(),
                state_dir=str(state_dir),
                control_socket=str(self.config.daemon.control_socket),
                metrics=self._status_metrics_url(),
                watches=[str(watch.root) for watch in self._watches],
                systemd_watchdog_s=self._notifier.watchdog_interval,
            )
            # READY before the scan: a first scan of a large tree would outlast
            # TimeoutStartSec=, and watching has begun, so nothing is missed (ref. §3.5).
            for watch in self._watches:
                self._start_watching(watch, watch.root in watched)
            self._notifier.ready(self._status_line())
            await self._stop.wait()
        finally:
            await self._shutdown(control, watchdog)

    def _apply_runners(self, setup: RunnerSetup) -> None:
        """Start, reconfigure or stop the evidence runners to match a configuration."""
        # Whatever runner exists when jobs are committed is woken, never one replaced since.
        self._recorder.on_jobs = self._runners.wake
        layouts = {watch.watch_id: watch.config.sidecars for watch in self._watches}
        self._runners.apply(setup, layouts)
        self._components.pop("stamping", None)
        self._components.update(self._runners.tasks())

    async def _shutdown(self, control: ControlServer, watchdog: asyncio.Task[None] | None) -> None:
        self._stopping.set()
        self._resumed.set()  # a paused scan must see the stop, not wait for a resume
        self._watcher.stop()
        await control.close()
        if watchdog is not None:
            watchdog.cancel()
        scanner = self._components.pop("scanner", None)
        self._scan_requests.close()
        if scanner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(30):
                    await scanner
        tasks = [*self._components.values(), *self._tasks]
        if watchdog is not None:
            tasks.append(watchdog)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Hashes already running finish in the pool; their results are dropped, and the next
        # start's scan finds those files again. What was hashed and queued is committed now.
        self._hashers.shutdown(wait=True, cancel_futures=True)
        await self._recorder.flush()
        self._recorder.close()
        self._recorder.index.close()
        await self._runners.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        self._notifier.close()
        log.info("daemon_stopped")


@dataclass(frozen=True)
class _Refusal:
    """Why ``stamp`` did not record one of its paths (the others go on)."""

    error_class: str
    message: str
    hint: str | None = None

    def reply(self, path: str) -> dict[str, Any]:
        error = {"error_class": self.error_class, "message": self.message}
        if self.hint:
            error["hint"] = self.hint
        return {"path": path, "recorded": False, "error": error}


def _scan_summary(report: ScanReport) -> dict[str, Any]:
    """What ``stampd rescan`` shows of one walk."""
    return {
        "root": escape(report.root),
        "directories": report.directories,
        "files": report.files,
        "candidates": report.candidates,
        "missing": report.missing,
        "errors": report.errors,
        "seconds": round(report.seconds, 3),
        "problem": report.problem,
    }


def _requested_path(text: str) -> Path | _Refusal:
    """The path a control request names (in the escaped form of store/files/pathnames.py)."""
    try:
        name = unescape(text)
    except EscapeError as error:
        return _Refusal("bad_request", f"{text}: {error}")
    if not name.startswith("/") or "\0" in name:
        return _Refusal("bad_request", f"{text} is not an absolute path")
    return Path(os.path.normpath(name))


def _refusal_in(watch: WatchRuntime, path: Path) -> _Refusal | None:
    """Why ``stamp`` will not record ``path`` of ``watch``, or None."""
    shown = escape(path)
    if is_ours(path.name):
        data_name = data_name_of(path.name, backups=True)
        if data_name is None:
            return _Refusal("ours", f"{shown} is a temporary file stampd writes, not one to stamp")
        data = path.with_name(data_name)
        return _Refusal(
            "sidecar",
            f"{shown} is a sidecar: the proof stampd keeps for {escape(data)}, not a file to stamp",
            f"stamp {escape(data)} itself; its proofs are written next to it",
        )
    # transient_ok: a name like `x.part` is a temporary file's only to a watcher; named by
    # the operator, it is the file they mean.
    if not watch.filter.accepts(path, transient_ok=True):
        return _Refusal(
            "excluded",
            f"{shown} is left out by the include/exclude patterns of the watch"
            f" {escape(watch.root)}",
        )
    if watch.root_dev is None:
        return _Refusal("root_missing", f"the watch root {escape(watch.root)} does not exist")
    return None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_regular(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False


def run_daemon(config: Config) -> None:
    """Blocking entry point for ``stampd run``."""
    asyncio.run(Daemon(config).run())
