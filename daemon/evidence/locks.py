"""One lock per file path for everything that places sidecars next to a file.

The job runners and the sidecar repair both write ``FILE.tsr`` (and the other sidecars); two
of them at once for the same file could archive each other's bytes out of order. Locks are
striped (a fixed number, chosen by the path's hash) so memory does not grow with the tree;
two paths sharing a stripe only wait for each other briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

#: Stripes: enough that unrelated files rarely share one with CONCURRENCY jobs in flight.
STRIPES = 64


class PathLocks:
    """Striped :class:`asyncio.Lock` objects keyed by path (one event loop)."""

    def __init__(self, stripes: int = STRIPES) -> None:
        self._locks = [asyncio.Lock() for _ in range(stripes)]

    def __call__(self, path: Path) -> asyncio.Lock:
        """The lock to hold while placing ``path``'s sidecars."""
        return self._locks[hash(path) % len(self._locks)]

    @contextlib.asynccontextmanager
    async def hold(self, paths: Iterable[Path]) -> AsyncIterator[None]:
        """Hold the locks of all ``paths`` at once (a batch's sidecars, placed together).

        Taken in stripe order: two holders of several locks then never wait for each other
        in a circle, and a holder of one lock (a single round, the repair) just waits.
        """
        stripes = sorted({hash(path) % len(self._locks) for path in paths})
        async with contextlib.AsyncExitStack() as stack:
            for stripe in stripes:
                await stack.enter_async_context(self._locks[stripe])
            yield
