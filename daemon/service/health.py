"""Is the daemon doing its work? The answer that gates the systemd watchdog pings.

A blind timer would keep pinging while the pipeline is wedged, so systemd would never restart
a daemon that no longer records anything (reference/watching-and-service.md §2 and §4.1).
Each component is judged by what it does, not by whether its thread exists: a component with
work waiting whose progress counter stands still for ``stall_after`` seconds is wedged. Idle
is healthy, and a component that is slow but moving (a 100 GiB file being hashed) is too,
because its counter moves with every chunk.

Not every problem stops the pings: a watch root that is missing or unreadable is reported
as a problem, but a restart would not fix it (daemon/watch/roots.py), so the daemon keeps
pinging and keeps every other watch running.

:class:`HealthMonitor` runs the check every few seconds (:meth:`HealthMonitor.watchdog`),
sends ``STATUS=`` when the one-line summary changes and ``WATCHDOG=1`` while the daemon is not
wedged; the control ``status`` and the metrics read its last verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stampd.daemon.service.logs import get_logger

if TYPE_CHECKING:
    from stampd.daemon.config.model import DaemonSettings
    from stampd.daemon.service.notify import Notifier
    from stampd.daemon.service.pause import PauseState
    from stampd.daemon.watch.intake import Intake
    from stampd.daemon.watch.recorder import Recorder
    from stampd.daemon.watch.rescans import Rescans
    from stampd.daemon.watch.runtime import Watches

# The events were the daemon's before the monitor had a module of its own: one logger name.
log = get_logger("stampd.daemon")

#: How often the health check runs when systemd asks for no watchdog (STATUS, metrics).
CHECK_INTERVAL_S = 5.0


@dataclass(frozen=True)
class Health:
    """The verdict of one check: healthy when there are no problems of either sort."""

    #: The daemon itself is wedged (a component stopped, or stalls with work waiting): a
    #: restart may fix it, so the systemd watchdog pings stop.
    wedged: tuple[str, ...] = ()
    #: Something outside the daemon keeps it from recording (a watch root missing or
    #: unreadable, daemon/watch/roots.py): reported like any problem, but the pings go on, since a
    #: restart cannot fix it and systemd would only restart stampd over and over.
    outside: tuple[str, ...] = ()

    @property
    def problems(self) -> tuple[str, ...]:
        """Every problem, wedged ones first: what status, STATUS= and the log show."""
        return self.wedged + self.outside

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong (``stampd_healthy``, ``healthy`` in status)."""
        return not self.problems

    @property
    def alive(self) -> bool:
        """Whether the watchdog may be pinged: the daemon is not wedged."""
        return not self.wedged


class StallWatch:
    """One component's progress, sampled by each health check."""

    def __init__(
        self, component: str, *, stall_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.component = component
        self.stall_after = stall_after
        self._clock = clock
        self._progress: int | None = None
        self._moved_at = clock()

    def check(self, *, waiting: bool, progress: int) -> str | None:
        """A problem line when work has waited without progress for too long, else None."""
        now = self._clock()
        if not waiting or progress != self._progress:
            self._progress = progress
            self._moved_at = now
            return None
        stalled = now - self._moved_at
        if stalled < self.stall_after:
            return None
        return f"{self.component}: no progress for {stalled:.0f}s with work waiting"


class HealthMonitor:
    """The health check over the running components, the status line, and the watchdog."""

    def __init__(
        self,
        *,
        notifier: Notifier,
        observer_alive: Callable[[], bool],
        components: Mapping[str, asyncio.Task[Any]],
        watches: Watches,
        intake: Intake,
        recorder: Recorder,
        rescans: Rescans,
        pause: PauseState,
        in_flight: Callable[[], int],
        settings: DaemonSettings,
        placing: Callable[[], bool] = lambda: False,
    ) -> None:
        self._notifier = notifier
        self._observer_alive = observer_alive
        #: Whether the inotify watches are still being placed (after READY, at start).
        self._placing = placing
        #: Every long-running task by name; one that ended is a problem.
        self._components = components
        self._watches = watches
        self._intake = intake
        self._recorder = recorder
        self._rescans = rescans
        self._pause = pause
        self._in_flight = in_flight
        self._stalls = {
            name: StallWatch(name, stall_after=settings.stall_after)
            for name in ("settle", "hashing", "index writer")
        }
        #: The last verdict of the watchdog loop (``status``, the metrics).
        self.health = Health()
        self._status_sent = ""

    def retune(self, settings: DaemonSettings) -> None:
        """A reload changed ``[daemon]`` (``stall_after``)."""
        for stall in self._stalls.values():
            stall.stall_after = settings.stall_after

    def check(self) -> Health:
        """Observer, settle, hashing and index writer: alive, and moving when work waits;
        watch roots: usable (a problem, but not one that stops the watchdog pings)."""
        problems = []
        if not self._observer_alive():
            problems.append("observer: the inotify dispatch thread has stopped")
        for name, task in self._components.items():
            if task.done():
                problems.append(f"{name}: stopped")
        intake, recorder = self._intake, self._recorder
        hashing = intake.hashing > 0 and not self._pause.paused
        for problem in (
            self._stalls["settle"].check(waiting=True, progress=intake.ticks),
            self._stalls["hashing"].check(
                waiting=intake.hashing_now > 0 or hashing, progress=intake.hash_reads
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

    def status_line(self) -> str:
        """One line for ``systemctl status`` (STATUS=)."""
        watches, rescans = self._watches, self._rescans
        parts = [f"watching {watches.watched()} of {len(watches)} roots"]
        if self._placing():
            parts.append("placing inotify watches")
        if rescans.scanning:
            parts.append(f"scanning {rescans.scanning} ({rescans.scan_files:,} files)")
        busy = watches.settling()
        hashing = self._intake.hashing
        if busy or hashing:
            parts.append(f"{busy:,} settling, {hashing:,} hashing")
        stamping = self._in_flight()
        if stamping:
            parts.append(f"{stamping} stamping")
        if rescans.unwatched_dirs:
            parts.append(f"{rescans.unwatched_dirs:,} directories without inotify watch")
        if self._pause.paused:
            parts.append(f"PAUSED since {self._pause.since}")
        if not self.health.ok:
            parts.insert(0, "UNHEALTHY: " + "; ".join(self.health.problems))
        return "; ".join(parts)

    async def watchdog(self) -> None:
        """Check health; ping systemd's watchdog only while it passes (never a blind timer)."""
        interval = min(self._notifier.watchdog_interval or CHECK_INTERVAL_S, CHECK_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            health = self.check()
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
            line = self.status_line()
            if line != self._status_sent:
                self._notifier.status(line)
                self._status_sent = line
            if health.alive and self._notifier.watchdog_interval is not None:
                self._notifier.watchdog()
