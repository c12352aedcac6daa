"""The daemon's runtime root: one asyncio loop that owns watching, settling, hashing, recording.

Data flow (DESIGN §3): the watchdog thread hands :class:`Change` events to the loop; each
watch's :class:`Settler` decides when a path is ready; ready paths are hashed in a thread pool;
the :class:`Recorder` commits versions and their jobs. A reconciliation scan at start-up (after
readiness, in the background), periodically, after an inotify overflow and after a watch root
comes back finds what inotify did not report.

Start-up order (reference/watching-and-service.md §3.5): state directory → index → watches
→ control socket → ``daemon_ready`` → scan. SIGTERM/SIGINT stop watching, let in-flight hashes
finish, commit what was hashed, and close the index cleanly; whatever was still settling is
found again by the next start's scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from stampd.daemon import __version__
from stampd.daemon.config import Config, WatchConfig
from stampd.daemon.control import ControlServer
from stampd.daemon.filters import WatchFilter
from stampd.daemon.hasher import Hashed, HashOutcome, Retry, Skipped, Unreadable, hash_file
from stampd.daemon.logs import get_logger
from stampd.daemon.pool import ProviderPool
from stampd.daemon.providers.configured import configured_tsas
from stampd.daemon.recorder import Recorder
from stampd.daemon.scan import ScanReport, scan_watch
from stampd.daemon.settle import Ready, Settler
from stampd.daemon.stamping import TsrStamper
from stampd.daemon.watcher import Change, Watcher, count_inotify_watches
from stampd.store.errors import FileAccessError
from stampd.store.filestat import FileStat
from stampd.store.index import Index, Settled, index_path, open_reader, present_under, utc_now

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
    directories: int = 0

    def contains(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents


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
        self._scan_requests: asyncio.Queue[WatchRuntime | None] = asyncio.Queue()
        self._scanning: str | None = None
        self._scans_done = 0
        self._unwatched_dirs = 0
        #: Files recorded as unreadable: a permission change (attrib event) retries them.
        self._unreadable: set[Path] = set()
        self._stamper: TsrStamper | None = None
        self._http: httpx.AsyncClient | None = None
        self._tsa_anchors: Mapping[str, Sequence[x509.Certificate]] = {}

    # --- control -----------------------------------------------------------------------------

    async def _status(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "config": str(self.config.source),
            "watches": [str(watch.root) for watch in self._watches],
            "settling": sum(len(watch.settler) for watch in self._watches),
            "hashing": self._hash_queue.qsize() + self._hashing,
            "scanning": self._scanning,
            "scans_done": self._scans_done,
            "unwatched_dirs": self._unwatched_dirs,
            "tsr": self._stamper.status() if self._stamper else None,
        }

    def request_stop(self, signame: str) -> None:
        """Ask the loop to shut down (called from a signal handler)."""
        if self._stop.is_set():
            return  # `make run` under `timeout`, or systemd, may deliver it twice
        log.info("daemon_stopping", signal=signame)
        self._stopping.set()
        self._stop.set()

    def backlog(self) -> int:
        """Files between discovery and commit (read from the scan thread; ints are atomic)."""
        settling = sum(len(watch.settler) for watch in self._watches)
        return settling + self._hash_queue.qsize() + self._hashing + self._recorder.backlog()

    # --- events ------------------------------------------------------------------------------

    def _watch_of(self, path: Path) -> WatchRuntime | None:
        for watch in self._watches:
            if watch.contains(path):
                return watch
        return None

    def on_change(self, change: Change) -> None:
        """One filesystem event, on the loop thread."""
        if not _storable(change.path) or (change.dest is not None and not _storable(change.dest)):
            log.warning("path_not_utf8", path=repr(change.path), hint="rename it to UTF-8")
            return
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
            # Files created before the new directory's watch was placed can be missed (#1278).
            if watch is not None:
                self._request_scan(watch)
            return
        if watch is not None:
            watch.settler.forget_under(change.path)
            self._spawn(self._check_gone_under(change.path))
        dest_watch = self._watch_of(change.dest) if change.dest else None
        if dest_watch is not None:
            self._request_scan(dest_watch)

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
        """Move ready paths from the settlers to the hash queue, as often as settling needs."""
        interval = max(0.05, min(watch.config.quiet for watch in self._watches) / 4)
        while True:
            for watch in self._watches:
                for ready in watch.settler.poll():
                    self._hash_queue.put_nowait((watch, ready))
            await asyncio.sleep(interval)

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
                outcomes = await loop.run_in_executor(pool, _hash_batch, batch)
                for (watch, _ready), outcome in zip(batch, outcomes, strict=True):
                    await self._handle(watch, outcome)
            except Exception:
                log.exception("hash_failed", first=str(batch[0][1].path), files=len(batch))
            finally:
                self._hashing -= len(batch)

    async def _handle(self, watch: WatchRuntime, outcome: HashOutcome) -> None:
        if isinstance(outcome, Hashed):
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

    def _request_scan(self, watch: WatchRuntime) -> None:
        self._scan_requests.put_nowait(watch)

    async def _scanner(self) -> None:
        """Run requested scans one at a time, in a thread with its own read-only connection."""
        loop = asyncio.get_running_loop()
        conn = open_reader(index_path(self.config.daemon.state_dir))
        try:
            while True:
                watch = await self._scan_requests.get()
                if watch is None:
                    return
                # Coalesce: several requests for the same root (an overflow storm) mean one scan.
                pending = {watch.root: watch}
                while not self._scan_requests.empty():
                    more = self._scan_requests.get_nowait()
                    if more is not None:
                        pending.setdefault(more.root, more)
                for target in pending.values():
                    self._scanning = str(target.root)
                    report = await asyncio.to_thread(self._scan_one, loop, conn, target)
                    self._scanning = None
                    self._scans_done += 1
                    target.directories = report.directories
                    log.info(
                        "scan_finished",
                        root=str(report.root),
                        directories=report.directories,
                        files=report.files,
                        candidates=report.candidates,
                        missing=report.missing,
                        errors=report.errors,
                        seconds=round(report.seconds, 3),
                    )
                self._check_watch_limit()
        finally:
            conn.close()

    def _scan_one(
        self, loop: asyncio.AbstractEventLoop, conn: Any, watch: WatchRuntime
    ) -> ScanReport:
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
            while self.backlog() > MAX_BACKLOG and not self._stopping.is_set():
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
                outcome = hash_file(path, root_dev=watch.root_dev, expected=stat)
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

        def on_missing(paths: list[Path]) -> None:
            # Re-checked just before the write: the file may have come back meanwhile.
            asyncio.run_coroutine_threadsafe(self._check_gone(paths), loop)

        try:
            return scan_watch(
                watch.root,
                conn=conn,
                file_filter=watch.filter,
                on_candidate=on_candidate,
                on_missing=on_missing,
                should_stop=self._stopping.is_set,
            )
        finally:
            hand_over()

    def _add_candidates(
        self, watch: WatchRuntime, batch: list[tuple[Path, FileStat, float]]
    ) -> None:
        for path, stat, changed_at in batch:
            watch.settler.add_candidate(path, stat=stat, changed_at=changed_at)

    def _add_outcomes(self, watch: WatchRuntime, outcomes: list[HashOutcome]) -> None:
        rest = []
        for outcome in outcomes:
            if isinstance(outcome, Hashed):
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

    async def _health(self) -> None:
        """Re-watch roots that came back; rescan on the fallback interval while watches lack."""
        last_fallback = time.monotonic()
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            for root in self._watcher.check_roots():
                watch = next(w for w in self._watches if w.root == root)
                watch.root_dev = root.stat().st_dev
                self._request_scan(watch)
            fallback = self.config.daemon.fallback_rescan
            if self._unwatched_dirs and time.monotonic() - last_fallback > fallback:
                last_fallback = time.monotonic()
                self._rescan_all()

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT."""
        self._loop = asyncio.get_running_loop()
        state_dir = self.config.daemon.state_dir
        prepare_state_dir(state_dir)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)

        pool = self._tsa_pool()
        index = Index.open(index_path(state_dir))
        self._recorder = Recorder(index)
        for configured in self.config.watches:
            self._watches.append(
                WatchRuntime(
                    config=configured,
                    root=configured.path,
                    watch_id=index.ensure_watch(configured.path),
                    filter=WatchFilter.for_watch(configured),
                    settler=Settler(quiet=configured.quiet, max_wait=configured.max_wait),
                )
            )
        self._watcher = Watcher(
            [watch.root for watch in self._watches],
            deliver=self._deliver_threadsafe(self._loop),
            on_overflow=self._on_overflow,
        )
        watched = set(self._watcher.start())
        for watch in self._watches:
            if watch.root in watched:
                watch.root_dev = watch.root.stat().st_dev
            else:
                log.warning(
                    "watch_root_missing",
                    path=str(watch.root),
                    hint="create the directory; it is picked up once it exists",
                )
        control = ControlServer(self.config.daemon.control_socket, {"status": self._status})
        await control.start()
        hashers = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="stampd-hash")
        background = [
            asyncio.create_task(self._recorder.run()),
            asyncio.create_task(self._tick()),
            asyncio.create_task(self._health()),
            asyncio.create_task(self._periodic_rescan()),
            *(asyncio.create_task(self._hash_worker(hashers)) for _ in range(HASH_WORKERS)),
        ]
        if pool is not None:
            self._stamper = TsrStamper(
                recorder=self._recorder,
                pool=pool,
                anchors={name: tuple(roots) for name, roots in self._tsa_anchors.items()},
                state_dir=state_dir,
                digest_alg=self.config.timestamp.digest,
                layouts={watch.watch_id: watch.config.sidecars for watch in self._watches},
                retry=self.config.timestamp.retry,
                retry_max=self.config.timestamp.retry_max,
            )
            self._recorder.on_jobs = self._stamper.wake
            background.append(asyncio.create_task(self._stamper.run()))
        scanner = asyncio.create_task(self._scanner())
        try:
            log.info(
                "daemon_ready",
                version=__version__,
                pid=os.getpid(),
                state_dir=str(state_dir),
                control_socket=str(self.config.daemon.control_socket),
                watches=[str(watch.root) for watch in self._watches],
            )
            for watch in self._watches:
                if watch.root_dev is not None:
                    self._request_scan(watch)
            await self._stop.wait()
        finally:
            await self._shutdown(control, hashers, background, scanner)

    def _tsa_pool(self) -> ProviderPool | None:
        """The TSAs as a failover pool, when a watch asks for ``tsr`` evidence.

        Built before anything starts: a trust file without roots or an unreadable secret is
        a configuration error (exit 2), not a failure of every job later.
        """
        if not any("tsr" in watch.evidence for watch in self.config.watches):
            return None
        timestamp = self.config.timestamp
        if timestamp.mode == "batch":
            log.warning(
                "timestamp_batch_mode_unavailable",
                hint='timestamp.mode = "batch" is not implemented yet; stamping per file',
            )
        self._http = httpx.AsyncClient()
        tsas = configured_tsas(timestamp, self._http)
        self._tsa_anchors = tsas.anchors
        return ProviderPool(
            tsas.providers, selection=timestamp.selection, cooldown=timestamp.cooldown
        )

    async def _shutdown(
        self,
        control: ControlServer,
        pool: ThreadPoolExecutor,
        background: list[asyncio.Task[Any]],
        scanner: asyncio.Task[None],
    ) -> None:
        self._stopping.set()
        self._watcher.stop()
        await control.close()
        self._scan_requests.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(scanner, timeout=30)
        for task in [*background, *self._tasks]:
            task.cancel()
        await asyncio.gather(*background, *self._tasks, return_exceptions=True)
        # Hashes already running finish in the pool; their results are dropped, and the next
        # start's scan finds those files again. What was hashed and queued is committed now.
        pool.shutdown(wait=True, cancel_futures=True)
        await self._recorder.flush()
        self._recorder.close()
        self._recorder.index.close()
        if self._http is not None:
            await self._http.aclose()
        log.info("daemon_stopped")


def _hash_batch(batch: list[tuple[WatchRuntime, Ready]]) -> list[HashOutcome]:
    """Hash thread: each ready file of a batch, in order (a vanished root skips its files)."""
    outcomes: list[HashOutcome] = []
    for watch, ready in batch:
        if watch.root_dev is None:
            outcomes.append(Skipped(ready.path, "its watch root is gone"))
            continue
        log.debug("hash_started", path=str(ready.path))
        outcomes.append(hash_file(ready.path, root_dev=watch.root_dev, expected=ready.stat))
    return outcomes


def _storable(path: Path) -> bool:
    """The index stores paths as UTF-8 text; a name in another encoding cannot be recorded."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_regular(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False


def run_daemon(config: Config) -> None:
    """Blocking entry point for ``stampd run``."""
    asyncio.run(Daemon(config).run())
