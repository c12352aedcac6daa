"""The daemon's lifecycle: it builds the components, starts them in order, and stops them.

Data flow (DESIGN §3): the watchdog thread hands events to the loop; the intake
(daemon/watch/intake.py) settles, hashes and hands versions to the recorder, the index's one
writer; the evidence runners (daemon/evidence/runners.py) obtain their proofs. The rescans
(daemon/watch/rescans.py) walk the trees at start-up (after readiness, in the background),
periodically, after an inotify overflow and when a root comes back (daemon/watch/root_watch.py),
and find what inotify did not report. The control handlers (daemon/service/handlers.py),
health and watchdog (daemon/service/health.py), metrics (daemon/service/metrics_endpoint.py)
and reloading (daemon/service/reloading.py) read and steer these components; none of them
holds the daemon.

Start-up order (reference/watching-and-service.md §3.5): state directory → index → observer
and watches → control socket → ``daemon_ready`` (and ``READY=1`` to systemd) → scan. Placing
the watches walks every tree, so READY waits for them at most ``READY_WAIT_S``: it must not
wait for the trees' size. Each root's scan starts once its watches are placed, so nothing
is missed.
SIGTERM/SIGINT stop watching, let in-flight hashes finish, commit what was hashed, and close
the index cleanly; whatever was still settling is found again by the next start's scan.
SIGHUP (or ``stampd reload``) reads the configuration again. The systemd watchdog is pinged
only while the health check passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from stampd.daemon import __version__
from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.repair import SidecarRepairer
from stampd.daemon.evidence.runners import EvidenceRunners, RunnerSetup
from stampd.daemon.service.control import ControlServer
from stampd.daemon.service.handlers import ControlHandlers
from stampd.daemon.service.health import Health, HealthMonitor
from stampd.daemon.service.logs import get_logger
from stampd.daemon.service.metrics_endpoint import MetricsEndpoint, live_state
from stampd.daemon.service.notify import Notifier
from stampd.daemon.service.pause import PauseState
from stampd.daemon.service.reloading import Reloader
from stampd.daemon.service.replies import ReloadReply
from stampd.daemon.watch.hash_workers import Hashing, HashWorkers, InlineHashing
from stampd.daemon.watch.intake import Intake
from stampd.daemon.watch.recorder import Recorder
from stampd.daemon.watch.rescans import Rescans
from stampd.daemon.watch.root_watch import RootWatch
from stampd.daemon.watch.runtime import Watches, WatchRuntime
from stampd.daemon.watch.scan_queue import ScanQueue
from stampd.daemon.watch.watcher import Watcher
from stampd.store.errors import FileAccessError
from stampd.store.files.leftovers import sweep_archive
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.times import utc_now

log = get_logger("stampd.daemon")

#: The state directory holds the index and every proof ever obtained: owner and group only.
STATE_DIR_MODE = 0o750
#: Threads hashing settled files; hashlib releases the GIL, and the machine has few cores.
HASH_WORKERS = max(2, min(4, os.cpu_count() or 2))
#: How long READY waits for the inotify watches. Placed before READY, they see every write
#: after it, so the close-aware settle rule holds for it (reference §3.1); a tree of a few
#: thousand directories takes longer (watchdog walks it whole: about 2 s for 10,000), and
#: READY must not wait for the tree's size (issue 13). Then its start-up scan, which begins
#: once the watches are placed, finds what changed before that.
READY_WAIT_S = 0.1


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


class Daemon:
    """What ``stampd run`` runs: builds the components, starts them in order, stops them.

    The components talk through what they are given (the recorder, the watches, the pause
    state, callables); none holds the daemon. They are built in :meth:`run`, where the loop
    and the index exist.
    """

    def __init__(self, config: Config) -> None:
        #: The configuration to start with; the reloader holds the one in force later.
        self._config = config
        self._started_at = utc_now()
        self._stop = asyncio.Event()
        #: Seen by the scan thread: a stop ends the walk in progress.
        self._stopping = threading.Event()
        #: SIGHUP reloads in progress.
        self._tasks: set[asyncio.Task[None]] = set()
        #: Every long-running task by name: the health check watches them.
        self._components: dict[str, asyncio.Task[Any]] = {}
        self._notifier = Notifier.from_environ()
        self._pause = PauseState()
        self._watches = Watches()

    def check_health(self) -> Health:
        """What the watchdog's next check would say now."""
        return self._monitor.check()

    def request_stop(self, signame: str) -> None:
        """Ask the loop to shut down (called from a signal handler)."""
        if self._stop.is_set():
            return  # `make run` under `timeout`, or systemd, may deliver it twice
        log.info("daemon_stopping", signal=signame)
        self._notifier.stopping(f"stopping on {signame}")
        self._stopping.set()
        self._stop.set()

    # --- start-up ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        config = self._config
        state_dir = config.daemon.state_dir
        prepare_state_dir(state_dir)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        # Until the handler is in place, SIGHUP's default action would kill the daemon.
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

        index = Index.open(index_path(state_dir))
        try:
            runners = self._build(loop, index)
        except ConfigError:
            self._recorder.close()
            index.close()
            raise
        for configured in config.watches:
            self._watches.add(WatchRuntime.of(configured, index.ensure_watch(configured.path)))
        for watch in self._watches:
            self._root_watch.note_device(watch)  # what is reported while placing is hashed
        # Dispatch starts now; the watches are placed in a thread, READY waits READY_WAIT_S.
        self._watcher.start_observer()
        placement = asyncio.ensure_future(asyncio.to_thread(self._watcher.place))
        control = ControlServer(config.daemon.control_socket, self._handlers.handlers())
        watchdog: asyncio.Task[None] | None = None
        try:
            await control.start()
            self._components.update(
                {
                    "index writer": asyncio.create_task(self._recorder.run()),
                    "sidecar repair": asyncio.create_task(self._repairer.run()),
                    "periodic rescan": asyncio.create_task(self._rescans.periodic()),
                    **self._intake.tasks(),
                }
            )
            self._reloader.apply_runners(runners)
            self._components["scanner"] = asyncio.create_task(self._rescans.scanner())
            watchdog = asyncio.create_task(self._monitor.watchdog())
            # Once, before any scan (none starts before the watches are placed); closed by
            # _shutdown. Late: each worker is an interpreter starting up (about 70 ms of CPU),
            # which would compete with the daemon's own start on a small machine.
            self._hashing.start()
            await asyncio.wait({placement}, timeout=READY_WAIT_S)
            log.info(
                "daemon_ready",
                version=__version__,
                pid=os.getpid(),
                state_dir=str(state_dir),
                control_socket=str(config.daemon.control_socket),
                metrics=self._metrics.url(),
                watches=[str(root) for root in self._watches.roots],
                systemd_watchdog_s=self._notifier.watchdog_interval,
            )
            # READY before the scan: a first scan of a large tree would outlast
            # TimeoutStartSec= (ref. §3.5). On a large tree, READY before the watches are
            # placed, too (READY_WAIT_S). Nothing is missed: each root's start-up scan begins
            # only once its watches are in place, so a change after READY is reported by
            # inotify or found by that scan.
            self._notifier.ready(self._monitor.status_line())
            self._spawn(self._place_watches(placement, tuple(self._watches)))
            self._spawn(self._sweep_archive(state_dir, before=self._rescans.started_at))
            await self._stop.wait()
        finally:
            await self._shutdown(control, watchdog)

    def _build(self, loop: asyncio.AbstractEventLoop, index: Index) -> RunnerSetup:
        """Wire the components around ``index``; returns the configuration's evidence runners,
        not started yet. ConfigError (a trust file, a secret, the metrics address) refuses
        the start."""
        config, watches, pause = self._config, self._watches, self._pause
        state_dir, settings = config.daemon.state_dir, config.daemon
        recorder = self._recorder = Recorder(index)
        metrics = self._metrics = MetricsEndpoint(index=index_path(state_dir))
        locks = PathLocks()  # held by everything that places sidecars, per path
        runners = self._runners = EvidenceRunners(
            recorder=recorder,
            state_dir=state_dir,
            locks=locks,
            on_attempts=metrics.on_attempts,
            held=True,  # released by _place_watches, once the start-up scans are queued
        )
        setup = runners.prepare(config)
        repairer = self._repairer = SidecarRepairer(
            recorder=recorder,
            reader=partial(open_reader, index_path(state_dir)),
            state_dir=state_dir,
            layout_of=watches.layout_of,
            verifier=lambda: runners,
            locks=locks,
        )
        recorder.on_commit = repairer.after_commit
        scans = ScanQueue()
        # The scan's hash workers (daemon/watch/hash_workers.py), started by run().
        self._hashing: Hashing = (
            HashWorkers(settings.hash_workers) if settings.hash_workers > 1 else InlineHashing()
        )
        intake = self._intake = Intake(
            watches=watches,
            recorder=recorder,
            pause=pause,
            scans=scans,
            metrics=metrics.counters,
            settings=settings,
            workers=HASH_WORKERS,
        )
        rescans = self._rescans = Rescans(
            watches=watches,
            intake=intake,
            queue=scans,
            pause=pause,
            repairs=repairer,
            settings=settings,
            loop=loop,
            stopping=self._stopping,
            metrics=metrics.counters,
            hashing=self._hashing,
        )
        watcher = self._watcher = Watcher(
            [watch.path for watch in config.watches],
            deliver=intake.deliver_threadsafe(loop),
            on_overflow=rescans.on_overflow,
        )
        root_watch = self._root_watch = RootWatch(
            watches=watches, watcher=watcher, rescans=rescans, settings=settings
        )
        monitor = self._monitor = HealthMonitor(
            notifier=self._notifier,
            observer_alive=watcher.observer_alive,
            placing=watcher.placing,
            components=self._components,
            watches=watches,
            intake=intake,
            recorder=recorder,
            rescans=rescans,
            pause=pause,
            in_flight=runners.in_flight,
            settings=settings,
        )
        reloader = self._reloader = Reloader(
            config=config,
            notifier=self._notifier,
            status_line=monitor.status_line,
            recorder=recorder,
            watches=watches,
            root_watch=root_watch,
            rescans=rescans,
            runners=runners,
            components=self._components,
            metrics=metrics,
            followers=(intake.retune, monitor.retune, rescans.retune, root_watch.retune),
        )
        self._handlers = ControlHandlers(
            config_source=config.source,
            started_at=self._started_at,
            reloader=reloader,
            watches=watches,
            intake=intake,
            recorder=recorder,
            rescans=rescans,
            repairer=repairer,
            runners=runners,
            pause=pause,
            health=monitor,
            metrics_url=metrics.url,
        )
        live = partial(
            live_state,
            watches=watches,
            intake=intake,
            recorder=recorder,
            rescans=rescans,
            pause=pause,
            runners=runners,
            health=monitor,
        )
        metrics.start(config, live=live)
        return setup

    # --- reload --------------------------------------------------------------------------------

    def _on_sighup(self) -> None:
        async def reload_quietly() -> None:
            with contextlib.suppress(ConfigError):  # refused: logged, and the old one runs on
                await self.reload("SIGHUP")

        self._spawn(reload_quietly())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _place_watches(
        self, placement: asyncio.Future[list[Path]], watches: tuple[WatchRuntime, ...]
    ) -> None:
        """Once the inotify watches of the configured roots are placed (``placement``, in a
        thread: watchdog walks every tree), start each root's scan (or say why it is not
        watched), and from then on check the roots every second (daemon/watch/root_watch.py)."""
        try:
            await self._start_scans(placement, watches)
        finally:
            # Only now, and whatever happened: the runners' first rounds would have delayed
            # the placement, hence the scans; a placement that failed must not hold the jobs.
            self._runners.release()

    async def _start_scans(
        self, placement: asyncio.Future[list[Path]], watches: tuple[WatchRuntime, ...]
    ) -> None:
        try:
            placed = set(await placement)
        except Exception:  # the roots then say "no inotify watch", and check_roots retries
            log.exception("watch_placement_failed")
            placed = set()
        if self._stopping.is_set():
            return
        for watch in watches:
            if self._watches.at(watch.root) is watch:  # a reload meanwhile may have removed it
                self._root_watch.start_watching(watch, watch.root in placed)
        self._components["root watch"] = asyncio.create_task(self._root_watch.run())

    async def _sweep_archive(self, state_dir: Path, *, before: float) -> None:
        """Temp files a killed daemon left in the archive, which no scan walks (in the
        watched trees the scan removes them: store/files/leftovers.py)."""
        removed = await asyncio.to_thread(sweep_archive, state_dir, before=before)
        if removed:
            log.info("stale_temp_files_removed", where=str(state_dir / "archive"), count=removed)

    async def reload(self, trigger: str) -> ReloadReply:
        """Read the configuration file again and apply it, or refuse it and keep the old one
        (daemon/service/reloading.py); raises :class:`ConfigError` when it is refused."""
        return await self._reloader.reload(trigger)

    # --- shutdown ------------------------------------------------------------------------------

    async def _shutdown(self, control: ControlServer, watchdog: asyncio.Task[None] | None) -> None:
        self._stopping.set()
        self._pause.release()  # a paused scan must see the stop, not wait for a resume
        self._watcher.stop()
        await control.close()
        if watchdog is not None:
            watchdog.cancel()
        scanner = self._components.pop("scanner", None)
        self._rescans.stop()
        if scanner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(30):
                    await scanner
        # The scan is over: its workers close their stdin and exit.
        await asyncio.to_thread(self._hashing.close)
        tasks: list[asyncio.Task[Any]] = [*self._components.values(), *self._tasks]
        if watchdog is not None:
            tasks.append(watchdog)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # What was hashed and queued is committed now; what was still settling or being
        # hashed is found again by the next start's scan.
        await self._intake.stop()
        await self._recorder.flush()
        self._recorder.close()
        self._recorder.index.close()
        await self._runners.close()
        self._metrics.close()
        self._notifier.close()
        log.info("daemon_stopped")


def run_daemon(config: Config) -> None:
    """Blocking entry point for ``stampd run``."""
    asyncio.run(Daemon(config).run())
