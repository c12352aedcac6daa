"""``stampd pause`` and ``stampd resume``: the one paused state every stage reads.

Pausing holds work, not watching: events still reach the settlers, but nothing moves to the
hash queue, no scan starts and the job runners start no new round (DESIGN §8, ``pause``).
The intake, the rescans and the control handlers share this one object instead of each
asking the daemon; it is an :class:`asyncio.Event` so that a waiting scan wakes on resume.
"""

from __future__ import annotations

import asyncio


class PauseState:
    """Paused or running, and since when (the ``status`` reply shows it)."""

    def __init__(self) -> None:
        # Set while running: waiters block while it is clear.
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._since: str | None = None

    @property
    def paused(self) -> bool:
        """Whether work is held (read from any thread: a bool read is atomic)."""
        return not self._resumed.is_set()

    @property
    def since(self) -> str | None:
        """When the current pause began (ISO 8601 UTC), None while running."""
        return self._since

    def pause(self, now: str) -> bool:
        """Hold work from ``now`` on; False when it was paused already (``since`` stays)."""
        if self.paused:
            return False
        self._since = now
        self._resumed.clear()
        return True

    def resume(self) -> bool:
        """Let work go on; False when it was not paused."""
        if not self.paused:
            return False
        self._since = None
        self._resumed.set()
        return True

    async def wait_resumed(self) -> None:
        """Return at once while running, else when :meth:`resume` (or :meth:`release`) runs."""
        await self._resumed.wait()

    def release(self) -> None:
        """At shutdown: let every waiter go on, so a paused scan sees the stop, not a resume."""
        self._resumed.set()
