"""The configured watches while the daemon runs: each one's filter, settler and root state.

:class:`WatchRuntime` is one ``[[watch]]`` with what the running daemon learns about it (its
root's device, why the root records nothing now, its last full scan). :class:`Watches` is the
collection every component shares (the intake, the rescans, the root watch, the control
handlers, health and metrics); a reload adds and removes watches in it.

The scan thread and the metrics scrape thread iterate it while the loop may change it, so it
keeps an immutable tuple that a change replaces: every iteration sees one consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stampd.daemon.config.model import WatchConfig
from stampd.daemon.watch.filters import WatchFilter
from stampd.daemon.watch.roots import RootProblem
from stampd.daemon.watch.settle import Settler
from stampd.store.files.sidecar import Layout


@dataclass
class WatchRuntime:
    """One configured watch while the daemon runs."""

    config: WatchConfig
    root: Path
    watch_id: int
    filter: WatchFilter
    settler: Settler
    #: The root's st_dev while it is watched; None while it is not (nothing below is hashed).
    root_dev: int | None = None
    #: Why the root records nothing now (missing, unreadable…), checked every second.
    root_problem: RootProblem | None = None
    directories: int = 0
    #: Unix time and length of the last full scan that walked the whole tree.
    last_scan_at: float | None = None
    last_scan_seconds: float | None = None

    def contains(self, path: Path) -> bool:
        """Whether ``path`` is the root or below it."""
        return path == self.root or self.root in path.parents

    @classmethod
    def of(cls, configured: WatchConfig, watch_id: int) -> WatchRuntime:
        """A new runtime for ``configured``, whose row in the index is ``watch_id``."""
        return cls(
            config=configured,
            root=configured.path,
            watch_id=watch_id,
            filter=WatchFilter.for_watch(configured),
            settler=Settler(quiet=configured.quiet, max_wait=configured.max_wait),
        )

    def reconfigure(self, configured: WatchConfig) -> None:
        """Take a reloaded configuration of the same root; what is settling stays."""
        self.config = configured
        self.filter = WatchFilter.for_watch(configured)
        self.settler.retune(quiet=configured.quiet, max_wait=configured.max_wait)


class Watches:
    """Every running watch; watches never nest, so a path belongs to at most one."""

    def __init__(self, watches: Iterable[WatchRuntime] = ()) -> None:
        self._all: tuple[WatchRuntime, ...] = tuple(watches)

    def __iter__(self) -> Iterator[WatchRuntime]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def add(self, watch: WatchRuntime) -> None:
        """Start keeping ``watch`` (at start, or added by a reload)."""
        self._all = (*self._all, watch)

    def remove(self, root: Path) -> WatchRuntime:
        """Stop keeping the watch of ``root`` (a reload removed it) and return it."""
        watch = self.at(root)
        if watch is None:
            raise KeyError(root)
        self._all = tuple(w for w in self._all if w is not watch)
        return watch

    def at(self, root: Path) -> WatchRuntime | None:
        """The watch whose root is exactly ``root``."""
        return next((watch for watch in self._all if watch.root == root), None)

    def of(self, path: Path) -> WatchRuntime | None:
        """The watch holding ``path`` (its root or anything below), else None."""
        return next((watch for watch in self._all if watch.contains(path)), None)

    def layout_of(self, path: Path) -> Layout | None:
        """The sidecar layout for a file at ``path`` (None when no watch holds it)."""
        watch = self.of(path)
        return None if watch is None else watch.config.sidecars

    @property
    def roots(self) -> tuple[Path, ...]:
        """Every watch's root, in configuration order."""
        return tuple(watch.root for watch in self._all)

    def settling(self) -> int:
        """Files waiting in every settler."""
        return sum(len(watch.settler) for watch in self._all)

    def watched(self) -> int:
        """Roots watched now (inotify in place)."""
        return sum(1 for watch in self._all if watch.root_dev is not None)
