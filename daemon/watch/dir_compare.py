"""One directory of the reconciliation scan compared with its index rows: list, ``lstat``,
compare. The scan's walk (daemon/watch/scan.py) asks this of every directory, in its own
thread or, ahead of the walk, in the hash worker processes (daemon/watch/scan_ahead.py).

A restart walks every file of an unchanged tree to find nothing (issue 13: at least half the
speed of ``find -printf``). Per file that is one ``lstat`` (about 2.4 µs here, most of it in
the kernel) and its row from the index (about 2 µs in the sqlite3 module); both hold the GIL
long enough that a second scan thread only convoys (measured: 4.8 µs per file with one
thread, 7.5 with two). Worker processes compare directories in parallel on every core, each
with its own read-only connection, and send the walk only what it acts on: what differs, the
subdirectories to walk on, and the names the sidecar check needs.

So this module must stay importable without the daemon's runtime (no logging, no loop): it
returns the log lines it owes as plain tuples, and everything it returns is ``marshal``-able
(:class:`Compared`). The rules are those of scan.py's docstring: ``O_NOFOLLOW`` below the
root, entries ``lstat``ed relative to the directory's descriptor, a name the filter rejects
``lstat``ed only when ``d_type`` says directory, the root's filesystem only.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from stampd.daemon.watch.filters import WatchFilter
from stampd.store.index.scan_rows import LiveRow, live_rows

#: A transient-looking name (rsync's ``.name.XXXXXX``, mkstemp's ``.x.tmp``, ``*.part``) whose
#: inode has not changed for this long is taken for a real file: the patterns are heuristics
#: that also match ordinary names (reference §3.3: "stamp one that is still there after 1 h").
TRANSIENT_AFTER_NS = 3600 * 10**9

#: How the walk opens a directory to list it: never through a symlink (O_NOFOLLOW), and its
#: entries are then lstat'ed relative to the descriptor (fstatat, as ``os.scandir(fd)``
#: does), which spares the kernel a lookup of the whole path per file.
OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: The same for a watch root, which may itself be a symlink.
OPEN_ROOT = OPEN_DIRECTORY & ~os.O_NOFOLLOW

#: A file's ``lstat`` key ``(dev, ino, size, mtime_ns, ctime_ns)``.
Key = tuple[int, int, int, int, int]


class Compared(NamedTuple):
    """What one directory gave. A worker sends it as a plain tuple (marshal carries no
    NamedTuple); :meth:`AheadInWorkers.put <stampd.daemon.watch.scan_ahead.AheadInWorkers.put>`
    makes it one again."""

    #: None, or ``(vanished, reason)`` when the directory could not be listed (``vanished``:
    #: gone or no longer a directory); every other field is then empty.
    problem: tuple[bool, str] | None
    #: Regular files the filter accepts.
    files: int
    #: ``(name, key)`` of the files to hash (new, changed, racy, back), by name.
    candidates: list[tuple[str, Key]]
    #: Names of live rows whose file is gone, no longer a regular file or no longer accepted.
    missing: list[str]
    #: Paths to walk on, sorted.
    subdirectories: list[str]
    #: Every entry, and the names whose rows stay present (both for the sidecar check).
    names: list[str]
    here: list[str]
    #: Entries on another filesystem.
    skipped: int
    #: Entries that could not be ``lstat``ed.
    errors: int
    #: Paths whose rows must not become missing.
    left_alone: list[str]
    #: ``(event, path, reason)`` log lines the walk writes (``reason`` None: info).
    notes: list[tuple[str, str, str | None]]


#: ``screen_names(directory, names) -> (accepted, transient)`` (``WatchFilter.screen_names``).
NameScreen = Callable[[str, list[str]], tuple[set[str], set[str]]]


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


def screen_of(file_filter: DirFilter) -> NameScreen:
    """How to screen a listing with ``file_filter``: its ``screen_names`` when it has one
    (WatchFilter: the whole listing at once, no pathlib per file), else ``accepts`` per name
    (test stand-ins)."""
    screen: NameScreen | None = getattr(file_filter, "screen_names", None)
    if screen is not None:
        return screen
    accepts = file_filter.accepts

    def each(directory: str, names: list[str]) -> tuple[set[str], set[str]]:
        accepted = {name for name in names if accepts(Path(directory, name))}
        transient = {
            name
            for name in names
            if name not in accepted and accepts(Path(directory, name), transient_ok=True)
        }
        return accepted, transient

    return each


def compare_directory(
    directory: str,
    *,
    flags: int,
    device: int,
    rows_of: Callable[[str], Mapping[str, LiveRow]],
    screen: NameScreen,
    prunes_dir: Callable[[Path], bool],
    now_ns: int,
) -> Compared:
    """List ``directory`` (opened with ``flags``) and compare it with ``rows_of(directory)``."""
    try:
        fd = os.open(directory, flags)
        try:
            with os.scandir(fd) as listing:
                entries = list(listing)
        except BaseException:
            os.close(fd)
            raise
    except OSError as error:
        # Vanished or unlistable mid-walk: the walk leaves its rows alone. A vanished
        # directory's rows follow its DirDeletedEvent or the next scan; an EACCES one's
        # files are still there.
        vanished = error.errno in (errno.ENOENT, errno.ENOTDIR)
        problem = (vanished, error.strerror or str(error))
        return Compared(problem, 0, [], [], [], [], [], 0, 0, [], [])
    try:
        # Each entry's lstat is relative to the descriptor (os.scandir(fd)): closed after.
        return _compare(
            directory,
            entries,
            device=device,
            rows_of=rows_of,
            screen=screen,
            prunes_dir=prunes_dir,
            now_ns=now_ns,
        )
    finally:
        os.close(fd)


def _compare(
    directory: str,
    entries: list[os.DirEntry[str]],
    *,
    device: int,
    rows_of: Callable[[str], Mapping[str, LiveRow]],
    screen: NameScreen,
    prunes_dir: Callable[[Path], bool],
    now_ns: int,
) -> Compared:
    # The rows are read after the listing: a file recorded between the two is compared
    # with its new row.
    rows = rows_of(directory)
    names = [entry.name for entry in entries]
    prefix = directory if directory.endswith("/") else directory + "/"
    accepted, transient = screen(directory, names)
    here: list[str] = []
    candidates: list[tuple[str, Key]] = []
    subdirectories: list[str] = []
    left_alone: list[str] = []
    notes: list[tuple[str, str, str | None]] = []
    files = skipped = errors = 0
    is_regular, is_directory = stat.S_ISREG, stat.S_ISDIR
    for entry in entries:
        name = entry.name
        wanted = name in accepted or name in transient
        try:
            # A name the filter rejects (a sidecar) matters only as a directory to walk,
            # which d_type tells without an lstat.
            if not wanted and not entry.is_dir(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since the listing: gone
        except OSError as error:
            # EACCES (a directory readable but not searchable) and the like: we cannot tell
            # what it is, so neither its row nor anything below it becomes missing.
            errors += 1
            here.append(name)
            left_alone.append(prefix + name)
            notes.append(("scan_stat_failed", prefix + name, error.strerror or str(error)))
            continue
        if wanted and is_regular(st.st_mode):
            if st.st_dev != device:  # a file bind-mounted from elsewhere
                skipped += 1
                here.append(name)
            elif name in accepted or now_ns - max(st.st_mtime_ns, st.st_ctime_ns) >= (
                TRANSIENT_AFTER_NS
            ):
                files += 1
                here.append(name)
                # Reference §3.4: a new, changed or racy file is hashed (as is one back at a
                # missing row: missing rows are not live ones). The tuple is disk_key's,
                # inline: this line runs for every file.
                if rows.get(name) != (name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                    candidates.append(
                        (name, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
                    )
        elif is_directory(st.st_mode):
            path = prefix + name
            if st.st_dev != device:
                skipped += 1
                left_alone.append(path)
                notes.append(("scan_other_filesystem", path, None))
            elif not prunes_dir(Path(path)):
                subdirectories.append(path)
        # Anything else (symlink, FIFO, socket, device) is never stamped nor followed.
    # Sorted here rather than the whole listing: on a restart these are few.
    candidates.sort()
    subdirectories.sort()  # one parent: path order is name order
    kept = set(here)
    missing = sorted(name for name in rows if name not in kept) if not rows.keys() <= kept else []
    return Compared(
        None,
        files,
        candidates,
        missing,
        subdirectories,
        names,
        here,
        skipped,
        errors,
        left_alone,
        notes,
    )


# --- in a hash worker process (daemon/watch/dir_hash.py serves these tasks) -----------------

#: A compare task, served by dir_hash.py: ``(dir_hash.COMPARE, index, root, include,
#: exclude, device, now_ns, directories)``: the index file (opened read-only), the watch root
#: with its patterns (the filter is built again from them, daemon/watch/filters.py), the
#: root's device, the walk's start (ns), and the directories to compare.


class _Cached(threading.local):
    """Per thread (a worker has one; the daemon's feeder thread may run a task too): its
    read-only connections by index path, and its filters by watch."""

    def __init__(self) -> None:
        self.connections: dict[str, sqlite3.Connection] = {}
        self.filters: dict[tuple[str, tuple[str, ...], tuple[str, ...]], WatchFilter] = {}


_cached = _Cached()


def compare_task(task: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """What a worker sends back for a compare task: one :class:`Compared` per directory, as a
    plain tuple."""
    _tag, index, root, include, exclude, device, now_ns, directories = task
    conn = _cached.connections.get(index)
    if conn is None:
        uri = f"{Path(index).as_uri()}?mode=ro"
        conn = _cached.connections[index] = sqlite3.connect(uri, uri=True, timeout=30)
    spec = (root, tuple(include), tuple(exclude))
    file_filter = _cached.filters.get(spec)
    if file_filter is None:
        file_filter = _cached.filters[spec] = WatchFilter(Path(root), include, exclude)

    def rows_of(directory: str) -> Mapping[str, LiveRow]:
        return live_rows(conn, directory, device)

    return [
        tuple(
            compare_directory(
                directory,
                flags=OPEN_ROOT if directory == root else OPEN_DIRECTORY,
                device=device,
                rows_of=rows_of,
                screen=file_filter.screen_names,
                prunes_dir=file_filter.prunes_dir,
                now_ns=now_ns,
            )
        )
        for directory in directories
    ]
