"""One lock per file path for everything that places sidecars next to a file.

The job runners and the sidecar repair both write ``FILE.tsr`` (and the other sidecars); two
of them at once for the same file could archive each other's bytes out of order. Locks are
striped (a fixed number, chosen by the path's hash) so memory does not grow with the tree;
two paths sharing a stripe only wait for each other briefly.
"""

from __future__ import annotations

import asyncio
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
