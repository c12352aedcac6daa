"""Where the scan's walk gets each directory's comparison from: its own thread, or the hash
worker processes, a little ahead of the walk.

The walk (daemon/watch/scan.py) stays the one place that decides: in sorted pre-order it
takes each directory's :class:`~stampd.daemon.watch.dir_compare.Compared`, reports what
differs, and pushes the subdirectories onto its stack. What it takes can be computed
anywhere, since listing a directory and reading its rows changes nothing:

- :class:`InThread` compares when the walk asks, with the walk's own connection (tests,
  ``daemon.hash_workers = 1``);
- :class:`AheadInWorkers` sends the next directories on the walk's stack to the hash workers
  (daemon/watch/hash_workers.py) before the walk gets to them, a few per task, and hands
  each result over when the walk takes it. Every core then lists, ``lstat``s and compares
  while the walk only acts on the results (issue 13, the restart at half the speed of
  ``find -printf``; the figures are in the commit that brought this).

A comparison made ahead is a little older when the walk acts on it; that is no weaker than
the walk's own, which is never a snapshot of the tree either: the watches are placed before
the scan starts, so a change made after the comparison is reported by inotify.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from stampd.daemon.watch.dir_compare import (
    OPEN_DIRECTORY,
    OPEN_ROOT,
    Compared,
    DirFilter,
    compare_directory,
    screen_of,
)
from stampd.daemon.watch.dir_hash import COMPARE
from stampd.daemon.watch.hash_workers import Hashing, Job
from stampd.store.index.scan_rows import LiveRow, live_rows

#: Directories on the walk's stack that are sent ahead: enough to keep every worker busy
#: while the walk acts on one, few enough that what waits for the walk stays small.
WINDOW = 64
#: Directories per task: a pipe round trip (~100 µs) is then small beside the work of a
#: directory of a few files (~5 µs per file).
PER_TASK = 8
#: Seconds between looks at ``stopping`` while the walk waits for a result.
POLL_S = 0.1


class Comparisons(Protocol):
    """What the walk takes each directory's comparison from."""

    def begin(self, root: str, device: int, now_ns: int) -> None:
        """The walk's root (its text as the walk writes paths), device and start time."""
        ...

    def ahead(self, stack: Sequence[str]) -> None:
        """The walk's stack, whose last entry it takes next: a chance to start early."""
        ...

    def take(self, directory: str) -> Compared | None:
        """``directory``'s comparison; None when the scan is stopping meanwhile."""
        ...


class InThread:
    """Compares each directory when the walk takes it, in the walk's thread."""

    def __init__(self, conn: sqlite3.Connection, file_filter: DirFilter) -> None:
        self._conn = conn
        self._filter = file_filter
        self._screen = screen_of(file_filter)
        self._root = ""
        self._device = 0
        self._now_ns = 0

    def begin(self, root: str, device: int, now_ns: int) -> None:
        """See :meth:`Comparisons.begin`."""
        self._root, self._device, self._now_ns = root, device, now_ns

    def ahead(self, stack: Sequence[str]) -> None:
        """Nothing is done ahead here."""

    def take(self, directory: str) -> Compared:
        """Compare ``directory`` now."""
        return compare_directory(
            directory,
            flags=OPEN_ROOT if directory == self._root else OPEN_DIRECTORY,
            device=self._device,
            rows_of=self._rows_of,
            screen=self._screen,
            prunes_dir=self._filter.prunes_dir,
            now_ns=self._now_ns,
        )

    def _rows_of(self, directory: str) -> Mapping[str, LiveRow]:
        return live_rows(self._conn, directory, self._device)


class AheadInWorkers:
    """Sends directories to the hash workers ahead of the walk (module docstring).

    ``include``/``exclude`` are the watch's patterns: each worker builds the same filter
    from them (daemon/watch/filters.py) and opens ``index`` read-only.
    """

    def __init__(
        self,
        hashing: Hashing,
        *,
        index: Path,
        include: Sequence[str],
        exclude: Sequence[str],
        stopping: Callable[[], bool],
    ) -> None:
        self._hashing = hashing
        self._index = str(index)
        self._include = list(include)
        self._exclude = list(exclude)
        self._stopping = stopping
        self._root = ""
        self._device = 0
        self._now_ns = 0
        self._sent: set[str] = set()
        self._results: dict[str, Compared] = {}
        self._arrived = threading.Condition()

    def begin(self, root: str, device: int, now_ns: int) -> None:
        """See :meth:`Comparisons.begin`."""
        self._root, self._device, self._now_ns = root, device, now_ns

    @property
    def held(self) -> int:
        """Directories sent and not taken yet (in a worker, or their results waiting)."""
        return len(self._sent)

    def ahead(self, stack: Sequence[str]) -> None:
        """Send the unsent directories among the top :data:`WINDOW` of ``stack``, in tasks of
        :data:`PER_TASK`; a short tail waits for more unless the walk needs it next."""
        sent = self._sent
        new = [directory for directory in reversed(stack[-WINDOW:]) if directory not in sent]
        if not new or (len(new) < PER_TASK and stack[-1] in sent):
            return
        sent.update(new)
        for start in range(0, len(new), PER_TASK):
            self._send(new[start : start + PER_TASK])

    def take(self, directory: str) -> Compared | None:
        """Wait for ``directory``'s comparison (sent now if it was not yet)."""
        if directory not in self._sent:
            self._sent.add(directory)
            self._send([directory])
        with self._arrived:
            while directory not in self._results:
                if self._stopping():
                    return None
                self._arrived.wait(POLL_S)
            self._sent.discard(directory)
            return self._results.pop(directory)

    def put(self, item: tuple[Job, int, list[tuple[Any, ...]]], /) -> None:
        """A task's results (hash_workers.Results), from the feeder thread that read them:
        one plain tuple per directory, a :class:`Compared` again here."""
        job, _started, results = item
        directories: list[str] = job.tag  # type: ignore[assignment]
        compared = [Compared._make(result) for result in results]
        with self._arrived:
            self._results.update(zip(directories, compared, strict=True))
            self._arrived.notify_all()

    def _send(self, directories: list[str]) -> None:
        task = (
            COMPARE,
            self._index,
            self._root,
            self._include,
            self._exclude,
            self._device,
            self._now_ns,
            directories,
        )
        self._hashing.submit(Job(task=task, results=self, tag=directories))
