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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


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
