"""Which scans the daemon still owes, coalesced: one full scan per root, or a few subtrees.

Scans run one at a time (one read-only connection, one walking thread), so requests pile up
while a walk runs: an overflow storm asks for every root again and again, and a burst of
``mkdir`` asks for one subtree each (daemon/watch/scan.py). Walking the same thing twice buys
nothing, so a request that another pending one covers is dropped when it is made:

- a full scan of a root covers every subtree of that root;
- a subtree covers the directories below it;
- more than :data:`MAX_SUBTREES` pending subtrees of one root become one full scan (a tree
  unpacked directory by directory would otherwise queue a walk per directory).

A request is never merged into the walk that is running: that walk may have passed the new
directory already, so the directory is walked again afterwards (the #1278 race is exactly a
directory filled after someone looked).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

#: Pending subtrees of one root beyond which one full scan is cheaper to keep track of.
MAX_SUBTREES = 1000


@dataclass(frozen=True)
class ScanRequest:
    """One walk to run: the whole ``root``, or only ``subtree`` (a directory below it).

    ``deep``: also read every sidecar and compare its bytes with the index (``stampd
    rescan`` asks for it; other walks only check that each sidecar is there).
    """

    root: Path
    subtree: Path | None = None
    deep: bool = False


@dataclass
class _Pending:
    full: bool = False
    deep: bool = False
    subtrees: set[Path] = field(default_factory=set)


class ScanQueue:
    """Pending scans per root, in the order roots were first asked for; used on the loop."""

    def __init__(self, *, max_subtrees: int = MAX_SUBTREES) -> None:
        self._max_subtrees = max_subtrees
        self._pending: dict[Path, _Pending] = {}
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return sum(int(p.full) or len(p.subtrees) for p in self._pending.values())

    def request(self, root: Path, subtree: Path | None = None, *, deep: bool = False) -> None:
        """Ask for a scan of ``root``, or of ``subtree`` only; absorbed if one pending covers
        it. A ``subtree`` that is the root itself (or not below it) asks for a full scan.
        ``deep`` is for full scans; a pending full scan absorbing a deep request turns deep."""
        if subtree is not None and (subtree == root or root not in subtree.parents):
            subtree = None
        pending = self._pending.setdefault(root, _Pending())
        self._ready.set()
        if subtree is None:
            pending.deep = pending.deep or deep
        if pending.full:
            return
        if subtree is None or len(pending.subtrees) >= self._max_subtrees:
            pending.full = True
            pending.subtrees.clear()
            return
        # An ancestor already pending covers it: depth lookups, never a pass over the set.
        if subtree in pending.subtrees or any(
            parent in pending.subtrees for parent in subtree.parents
        ):
            return
        pending.subtrees.add(subtree)

    def close(self) -> None:
        """Make :meth:`get` return None from now on (the daemon stops)."""
        self._closed = True
        self._ready.set()

    async def get(self) -> ScanRequest | None:
        """The next scan to run, waiting for one; None once closed."""
        while not self._closed and not self._pending:
            self._ready.clear()
            await self._ready.wait()
        if self._closed:
            return None
        root, pending = next(iter(self._pending.items()))
        del self._pending[root]
        if pending.full:
            return ScanRequest(root, deep=pending.deep)
        first, *rest = _outermost(pending.subtrees)
        if rest:
            # The root goes to the back of the line: another root's full scan is not held up
            # by a long series of subtrees here.
            self._pending[root] = _Pending(subtrees=set(rest))
        return ScanRequest(root, first)


def _outermost(subtrees: set[Path]) -> list[Path]:
    """The subtrees no other one contains, in path order. A directory requested before its
    parent (events of a moved tree can come in any order) is dropped here, at most once per
    walk handed out."""
    kept: list[Path] = []
    for path in sorted(subtrees, key=lambda p: p.parts):
        # Sorted by parts, an ancestor comes right before its descendants.
        if not kept or kept[-1] not in path.parents:
            kept.append(path)
    return kept
