"""Is the daemon doing its work? The answer that gates the systemd watchdog pings.

A blind timer would keep pinging while the pipeline is wedged, so systemd would never restart
a daemon that no longer records anything (reference/watching-and-service.md §2 and §4.1).
Each component is judged by what it does, not by whether its thread exists: a component with
work waiting whose progress counter stands still for ``stall_after`` seconds is wedged. Idle
is healthy, and a component that is slow but moving (a 100 GiB file being hashed) is too,
because its counter moves with every chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Health:
    """The verdict of one check: healthy when there are no problems."""

    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


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
