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

A restart walks every file of an unchanged tree to find nothing (issue 13: half the speed of
``find -printf``), so listing a directory, ``lstat``ing its entries and comparing them with
its rows is one pure step (daemon/watch/dir_compare.py, which has how each file is kept
cheap), taken in this thread or by the hash worker processes ahead of the walk
(daemon/watch/scan_ahead.py). The walk itself stays here and in order: it acts on each
directory's comparison (counters, log lines, candidates, missing rows, the sidecar check)
and walks on into the subdirectories it names.

A subtree scan walks one directory below the root (a directory just created or moved in:
files written into it before its inotify watch was placed have no event, watchdog #1278)
and compares it with the rows of that subtree only; what lies outside it is left as it is, so
the cost follows the change, not the size of the tree.
"""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.dir_compare import TRANSIENT_AFTER_NS, Compared, DirFilter
from stampd.daemon.watch.scan_ahead import Comparisons, InThread
from stampd.store.files.filestat import FileStat
from stampd.store.index.scan_rows import (
    StampedRow,
    has_sidecar_proofs,
    live_directories_below,
    live_rows,
    stamped_rows,
)

log = get_logger("stampd.daemon.watch.scan")

# TRANSIENT_AFTER_NS and DirFilter are dir_compare's, part of what a caller of scan_watch sees.
__all__ = ["TRANSIENT_AFTER_NS", "DirFilter", "DirectoryCheck", "ScanReport", "scan_watch"]


class DirectoryCheck(Protocol):
    """Something more to check per directory walked (implemented by
    ``stampd.daemon.watch.sidecar_check.SidecarCheck``)."""

    def directory(
        self,
        directory: str,
        names: set[str],
        stamped: Mapping[str, StampedRow],
        present: set[str],
    ) -> None:
        """``names``: every entry of ``directory``; ``stamped``: its present rows that have
        proofs with sidecars, by name; ``present``: the names of the files whose rows stay
        present after this walk."""
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
    comparisons: Comparisons | None = None,
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

    ``comparisons`` is where each directory's listing is compared with its rows
    (daemon/watch/scan_ahead.py): by default in this thread with ``conn``; the daemon's scan
    has the hash workers compare ahead of the walk.
    """
    started = time.monotonic()
    walk = _Walk(
        root,
        conn,
        file_filter,
        on_candidate,
        on_missing,
        sidecars=sidecars,
        comparisons=comparisons or InThread(conn, file_filter),
    )
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
        sidecars: DirectoryCheck | None,
        comparisons: Comparisons,
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
        self.comparisons = comparisons
        # Until the index holds a proof with sidecar bytes, no directory has stamped rows.
        self.sidecar_proofs = False
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
        self.root_text = str(root)

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
        self.comparisons.begin(self.root_text, self.device, self.now_ns)
        problem = self._walk(str(start), should_stop, on_progress, whole=subtree is None)
        if problem is None and not self.stopped:
            self._unvisited_directories(start, should_stop)
        return problem

    def _walk(
        self,
        start: str,
        should_stop: Callable[[], bool],
        on_progress: Callable[[int, int], None] | None,
        *,
        whole: bool,
    ) -> str | None:
        """Walk from ``start`` in sorted pre-order; a problem with the root, if any."""
        comparisons = self.comparisons
        stack = [start]
        while stack:
            if should_stop():
                self.stopped = True
                return None
            comparisons.ahead(stack)
            directory = stack.pop()
            compared = comparisons.take(directory)
            if compared is None:  # stopping while a worker compared it
                self.stopped = True
                return None
            # Reversed onto a stack, sorted children come off in order: a sorted pre-order walk.
            stack.extend(reversed(self._directory(directory, compared)))
            if on_progress is not None:
                on_progress(self.directories, self.files)
            if whole and self.root_failure is not None:
                # An unlistable root (EACCES) is not an empty one: nothing becomes missing.
                return f"cannot list {self.root}: {self.root_failure}"
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

    def _directory(self, directory: str, compared: Compared) -> list[str]:
        """Act on one directory's comparison with its rows (daemon/watch/dir_compare.py);
        return its subdirectories to walk, sorted."""
        if compared.problem is not None:
            self._unlisted(directory, *compared.problem)
            return []
        self.visited.add(directory)
        self.directories += 1
        self.files += compared.files
        self.skipped += compared.skipped
        self.errors += compared.errors
        self.left_alone.update(compared.left_alone)
        for event, path, reason in compared.notes:
            if reason is None:
                log.info(event, path=path)
            else:
                log.warning(event, path=path, reason=reason)
        self._offer(directory, [(name, FileStat(*key)) for name, key in compared.candidates])
        if self.sidecars is not None:
            names, present = set(compared.names), set(compared.here)
            self.sidecars.directory(directory, names, self._stamped(directory), present)
        if compared.missing:
            self._report_missing([Path(directory, name) for name in compared.missing])
        return compared.subdirectories

    def _unlisted(self, directory: str, vanished: bool, reason: str) -> None:
        """``directory`` vanished or could not be listed mid-walk: its rows are left alone.
        A vanished directory's rows follow its DirDeletedEvent or the next scan; an EACCES
        one's files are still there."""
        self.errors += 1
        self.left_alone.add(directory)
        if not self.visited and self.root_failure is None:
            self.root_failure = reason
        if vanished:
            log.info("scan_directory_vanished", path=directory)
        else:
            log.warning("scan_directory_failed", path=directory, reason=reason)

    def _offer(self, directory: str, candidates: list[tuple[str, FileStat]]) -> None:
        """Hand a directory's files that need hashing to ``on_directory_candidates``, or one
        by one to ``on_candidate``."""
        if not candidates:
            return
        self.candidates += len(candidates)
        if self.on_directory_candidates is not None:
            self.on_directory_candidates(directory, candidates)
        else:
            for name, key in candidates:
                self.on_candidate(Path(directory, name), key)

    def _stamped(self, directory: str) -> dict[str, StampedRow]:
        """The rows of ``directory`` the sidecar check looks at; an index without any proof
        with sidecar bytes (inventory watches) is asked once per directory whether it has
        one now, not for each row's proofs."""
        if not self.sidecar_proofs:
            self.sidecar_proofs = has_sidecar_proofs(self.conn)
            if not self.sidecar_proofs:
                return {}
        return stamped_rows(self.conn, directory)

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
            rows = live_rows(self.conn, directory, self.device)
            self._report_missing([directory / name for name in rows])

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
