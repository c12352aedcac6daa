"""The reconciliation scan: walk a watch root and compare it with the index.

inotify misses changes: queue overflows, subdirectories without a watch, changes made while
the daemon was down, remote writers on NFS, later mounts (reference/watching-and-service.md
§2, §3.5). So the daemon walks every root at start-up, on a schedule and on demand, and
compares each regular file's scan key ``(dev, ino, size, mtime_ns, ctime_ns)`` with its index
row (§3.4). The walk reads no file and writes nothing: files that are new, changed, racy or
back go to ``on_candidate`` (then settle → hash → record), rows whose file is gone go to
``on_missing``, and the daemon's single index writer does the rest. ``conn`` is a read-only
connection owned by the scanning thread; each query is its own short read, so a long walk
never pins the WAL.

Walk method (§3.4): ``os.scandir`` and ``lstat`` (``DirEntry.stat(follow_symlinks=False)``),
iterative, depth first in sorted name order, on the root's filesystem only (like
``find -xdev``), never following a symlink.

A subtree scan walks one directory below the root (a directory just created or moved in:
files written into it before its inotify watch was placed have no event, watchdog #1278)
and compares it with the rows of that subtree only; what lies outside it is left as it is, so
the cost follows the change, not the size of the tree.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Protocol

from stampd.daemon.service.logs import get_logger
from stampd.store.files.filestat import FileStat
from stampd.store.index.scan_rows import (
    LIVE_STATES,
    ScanRow,
    live_directories_below,
    rows_in_directory,
)

log = get_logger("stampd.daemon.watch.scan")

#: A transient-looking name (rsync's ``.name.XXXXXX``, mkstemp's ``.x.tmp``, ``*.part``) whose
#: inode has not changed for this long is taken for a real file: the patterns are heuristics
#: that also match ordinary names (reference §3.3: "stamp one that is still there after 1 h").
TRANSIENT_AFTER_NS = 3600 * 10**9


class DirFilter(Protocol):
    """Which paths of a watch are stamped (implemented by ``daemon.watch.filters.WatchFilter``)."""

    def accepts(self, path: Path, *, transient_ok: bool = False) -> bool:
        """Whether the regular file ``path`` (absolute) is a candidate; ``transient_ok`` lets
        a transient-looking name through (the scan passes True once it has been left alone
        for :data:`TRANSIENT_AFTER_NS`)."""
        ...

    def prunes_dir(self, path: Path) -> bool:
        """Whether nothing below the directory ``path`` can be accepted (no need to descend)."""
        ...


class DirectoryCheck(Protocol):
    """Something more to check per directory walked (implemented by
    ``stampd.daemon.watch.sidecar_check.SidecarCheck``)."""

    def directory(
        self, directory: str, names: set[str], rows: Mapping[str, ScanRow], present: set[str]
    ) -> None:
        """``names``: every entry of ``directory``; ``rows``: its index rows by name;
        ``present``: the names of the files whose rows stay present after this walk."""
        ...


@dataclass(frozen=True)
class ScanReport:
    """What one walk of one root found."""

    root: Path
    #: Directories listed, the root included.
    directories: int
    #: Regular files the filter accepts.
    files: int
    #: Files handed to ``on_candidate``: new, changed, racy, back after missing, or unreadable
    #: with a changed stat.
    candidates: int
    #: Paths handed to ``on_missing``.
    missing: int
    #: Directories (and bind-mounted files) on another filesystem: not walked, rows untouched.
    skipped: int
    #: Directories that vanished or could not be listed, entries that could not be stat'ed;
    #: rows below are left untouched.
    errors: int
    seconds: float
    #: True when ``should_stop`` ended the walk early; directories that were not visited then
    #: were not reported missing.
    stopped: bool = False
    #: Why the root itself could not be walked or listed (nothing was reported missing).
    problem: str | None = None
    #: The directory a subtree scan walked; None for a scan of the whole root.
    subtree: Path | None = None


def scan_watch(
    root: Path,
    *,
    conn: sqlite3.Connection,
    file_filter: DirFilter,
    on_candidate: Callable[[Path, FileStat], None],
    on_missing: Callable[[list[Path]], None],
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] | None = None,
    subtree: Path | None = None,
    sidecars: DirectoryCheck | None = None,
    on_directory_candidates: Callable[[str, list[tuple[str, FileStat]]], None] | None = None,
) -> ScanReport:
    """Walk ``root`` (or only ``subtree``) and report its differences with the index through
    the callbacks.

    ``on_missing`` is called once per directory with the paths of its present or unreadable
    rows whose file is gone, is no longer a regular file, or is no longer accepted; after the
    walk, once more per indexed directory that the walk never reached (deleted, moved away,
    replaced by a symlink, or pruned). Directories that could not be listed, and directories
    on another filesystem, keep their rows as they are: an EACCES is not a deletion.
    ``should_stop`` is polled before each directory; ``on_progress(directories, files)`` is
    called after each one.

    With ``subtree`` (a directory strictly below ``root``), only that directory and what is
    below it are walked and compared, and only rows at or below it can become missing. It is
    walked only when every directory from the root down to it is a real directory (no
    symlink) on the root's filesystem that the filter does not prune; otherwise the report
    says zero directories and the next full scan has the last word.

    ``sidecars`` is shown each directory walked, with its listing and rows, to check that
    every file's sidecars are where they belong (daemon/watch/sidecar_check.py).

    ``on_directory_candidates(directory, [(name, key), ...])``, if given, replaces
    ``on_candidate``: it is called once per directory walked that has candidates, with
    their names in sorted order and no ``Path`` object built per file (the daemon's scan
    hashes them in batches, daemon/watch/hash_workers.py).
    """
    started = time.monotonic()
    walk = _Walk(root, conn, file_filter, on_candidate, on_missing, sidecars=sidecars)
    walk.on_directory_candidates = on_directory_candidates
    problem = walk.run(should_stop, on_progress, subtree)
    return ScanReport(
        root=root,
        directories=walk.directories,
        files=walk.files,
        candidates=walk.candidates,
        missing=walk.missing,
        skipped=walk.skipped,
        errors=walk.errors,
        seconds=time.monotonic() - started,
        stopped=walk.stopped,
        problem=problem,
        subtree=subtree,
    )


class _Walk:
    """The state of one scan: counters, the directories seen, the subtrees left alone."""

    def __init__(
        self,
        root: Path,
        conn: sqlite3.Connection,
        file_filter: DirFilter,
        on_candidate: Callable[[Path, FileStat], None],
        on_missing: Callable[[list[Path]], None],
        *,
        sidecars: DirectoryCheck | None = None,
    ) -> None:
        self.root = root
        self.conn = conn
        self.filter = file_filter
        self.on_candidate = on_candidate
        self.on_missing = on_missing
        self.sidecars = sidecars
        self.on_directory_candidates: Callable[[str, list[tuple[str, FileStat]]], None] | None = (
            None
        )
        # A filter that can answer from the directory text and the name (WatchFilter) is
        # asked that way: no pathlib per file. Test stand-ins have accepts() only.
        self.accepts_name: Callable[..., bool] | None = getattr(file_filter, "accepts_name", None)
        self.device = 0
        self.now_ns = time.time_ns()
        self.directories = self.files = self.candidates = self.missing = 0
        self.skipped = self.errors = 0
        self.stopped = False
        # Directory paths as str: one entry per directory, never one per file, so memory
        # stays small with a million files (DESIGN §11: RSS < 200 MB).
        self.visited: set[str] = set()
        # Subtrees whose rows must not become missing: unlistable, vanished, other devices.
        self.left_alone: set[str] = set()
        # Why the walk's first directory (the root, in a full scan) could not be listed.
        self.root_failure: str | None = None
        # Length of the path where the walk began: ``_left_alone`` looks no higher.
        self.top = len(str(root))

    def run(
        self,
        should_stop: Callable[[], bool],
        on_progress: Callable[[int, int], None] | None,
        subtree: Path | None,
    ) -> str | None:
        """Walk, then report unvisited directories; return a problem with the root, if any."""
        try:
            # stat, not lstat: a watch root may itself be a symlink (its paths stay as
            # configured; daemon/cli/query.py); nothing below it is followed.
            root_stat = self.root.stat()
        except OSError as error:
            self.errors = 1
            return f"cannot scan {self.root}: {error.strerror or error}"
        if not stat.S_ISDIR(root_stat.st_mode):
            self.errors = 1
            return f"cannot scan {self.root}: not a directory"
        self.device = root_stat.st_dev
        start = self.root if subtree is None else subtree
        if subtree is not None and not self._reachable(subtree):
            return None
        self.top = len(str(start))

        stack = [str(start)]
        while stack:
            if should_stop():
                self.stopped = True
                return None
            # Reversed onto a stack, sorted children come off in order: a sorted pre-order walk.
            stack.extend(reversed(self._directory(stack.pop())))
            if on_progress is not None:
                on_progress(self.directories, self.files)
            if subtree is None and self.root_failure is not None:
                # An unlistable root (EACCES) is not an empty one: nothing becomes missing.
                return f"cannot list {self.root}: {self.root_failure}"
        self._unvisited_directories(start, should_stop)
        return None

    def _reachable(self, subtree: Path) -> bool:
        """Whether a subtree scan may walk ``subtree``: each directory from the root's child
        down to it is ``lstat``ed, so a symlink swapped in on the way is never followed, and
        one on another filesystem or pruned by the filter is not entered (as a full walk
        would not enter it)."""
        try:
            relative = subtree.relative_to(self.root)
        except ValueError:
            return False
        path = self.root
        for part in relative.parts:
            path = path / part
            try:
                st = path.lstat()
            except OSError as error:
                if not isinstance(error, FileNotFoundError | NotADirectoryError):
                    self.errors += 1
                    log.warning("scan_stat_failed", path=str(path), reason=error.strerror)
                return False  # gone already: its rows follow its own event or the next scan
            if (
                not stat.S_ISDIR(st.st_mode)
                or st.st_dev != self.device
                or self.filter.prunes_dir(path)
            ):
                return False
        return bool(relative.parts)

    def _list(self, directory: str) -> list[os.DirEntry[str]] | None:
        """The entries of ``directory`` sorted by name; None (counted, logged) if unlistable."""
        try:
            with os.scandir(directory) as listing:
                return sorted(listing, key=attrgetter("name"))
        except OSError as error:
            # Vanished or unlistable mid-walk: leave its rows alone. A vanished directory's
            # rows follow its DirDeletedEvent or the next scan; an EACCES one's files are
            # still there.
            self.errors += 1
            self.left_alone.add(directory)
            if not self.visited and self.root_failure is None:
                self.root_failure = error.strerror or str(error)
            if isinstance(error, FileNotFoundError | NotADirectoryError):
                log.info("scan_directory_vanished", path=directory)
            else:
                log.warning("scan_directory_failed", path=directory, reason=error.strerror)
            return None

    def _directory(self, directory: str) -> list[str]:
        """Compare one directory with its rows; return its subdirectories to walk, sorted."""
        entries = self._list(directory)
        if entries is None:
            return []
        self.visited.add(directory)
        self.directories += 1
        rows = rows_in_directory(self.conn, Path(directory))
        here: set[str] = set()  # names whose rows stay as they are
        subdirectories: list[str] = []
        candidates: list[tuple[str, FileStat]] = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing: gone
            except OSError as error:
                # EACCES (a directory readable but not searchable) and the like: we cannot
                # tell what it is, so neither its row nor anything below it becomes missing.
                self.errors += 1
                here.add(entry.name)
                self.left_alone.add(entry.path)
                log.warning("scan_stat_failed", path=entry.path, reason=error.strerror)
                continue
            if stat.S_ISDIR(st.st_mode):
                if st.st_dev != self.device:
                    self.skipped += 1
                    self.left_alone.add(entry.path)
                    log.info("scan_other_filesystem", path=entry.path)
                elif not self.filter.prunes_dir(Path(entry.path)):
                    subdirectories.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                if st.st_dev != self.device:  # a file bind-mounted from elsewhere
                    self.skipped += 1
                    here.add(entry.name)
                elif self._file(
                    directory, entry, FileStat.of(st), rows.get(entry.name), candidates
                ):
                    here.add(entry.name)
            # Anything else (symlink, FIFO, socket, device) is never stamped nor followed.
        if candidates and self.on_directory_candidates is not None:
            self.on_directory_candidates(directory, candidates)
        if self.sidecars is not None:
            self.sidecars.directory(directory, {entry.name for entry in entries}, rows, here)
        self._report_missing(
            [
                Path(directory, name)
                for name, row in rows.items()
                if row.state in LIVE_STATES and name not in here
            ]
        )
        return subdirectories

    def _file(
        self,
        directory: str,
        entry: os.DirEntry[str],
        key: FileStat,
        row: ScanRow | None,
        candidates: list[tuple[str, FileStat]],
    ) -> bool:
        """Offer one regular file if it needs hashing (to ``on_candidate``, or into
        ``candidates`` for ``on_directory_candidates``); return whether the filter accepts it."""
        transient_ok = self.now_ns - max(key.mtime_ns, key.ctime_ns) >= TRANSIENT_AFTER_NS
        if self.accepts_name is not None:
            accepted = self.accepts_name(directory, entry.name, transient_ok=transient_ok)
        else:
            accepted = self.filter.accepts(Path(entry.path), transient_ok=transient_ok)
        if not accepted:
            return False
        self.files += 1
        if _needs_hash(row, key):
            self.candidates += 1
            if self.on_directory_candidates is not None:
                candidates.append((entry.name, key))
            else:
                self.on_candidate(Path(entry.path), key)
        return True

    def _unvisited_directories(self, start: Path, should_stop: Callable[[], bool]) -> None:
        """Report the live rows of indexed directories below ``start`` the walk did not reach.

        The index streams its distinct directories under ``start`` (``files_dir_state``);
        only those that are neither visited nor below a subtree left alone are kept. For a
        subtree scan that is the subtree's rows only: nothing outside it is ever reported.
        """
        gone = [
            directory
            for directory in live_directories_below(self.conn, start)
            if str(directory) not in self.visited and not self._left_alone(str(directory))
        ]
        for directory in gone:
            if should_stop():
                self.stopped = True
                return
            rows = rows_in_directory(self.conn, directory)
            self._report_missing(
                [directory / name for name, row in rows.items() if row.state in LIVE_STATES]
            )

    def _left_alone(self, directory: str) -> bool:
        """Whether ``directory`` is at or below a subtree whose rows must stay as they are."""
        path = directory
        while path not in self.left_alone:
            if len(path) <= self.top:  # where the walk began was checked last
                return False
            path = path.rpartition("/")[0] or "/"
        return True

    def _report_missing(self, paths: list[Path]) -> None:
        if paths:
            self.missing += len(paths)
            self.on_missing(paths)


def _needs_hash(row: ScanRow | None, key: FileStat) -> bool:
    """Reference §3.4: a new file, a changed key, or a racy row is hashed; so is a file back
    at a missing row. An unreadable row is retried only once its key changes (a chmod does)."""
    if row is None or row.state == "missing" or row.racy or row.stat is None:
        return True
    return row.stat != key
