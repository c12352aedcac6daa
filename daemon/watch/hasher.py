"""Hashing one settled file, safely (reference/watching-and-service.md §3.3).

The path is only a hint: it is opened without following a final symlink, must lead to a
regular file that is still where it was (same ``(dev, ino)`` as when it settled), on the watch
root's filesystem, and not reached through a symlinked directory. ``fstat`` before and after
the read must agree, or the file changed while it was read and is retried later. The data file
is only ever read (DESIGN rule 4).

:func:`rehash` is the one way to read a recorded file again, with the same guards: for a
digest the index does not keep (the job runner's SHA-384, ``stampd verify``'s).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stampd.store.errors import ErrorClass, FileAccessError
from stampd.store.files.digest import CHUNK_SIZE, FileDigests, Progress, digest_fd_sized
from stampd.store.files.filestat import FileStat
from stampd.store.index.new_files import SettledFiles
from stampd.store.index.times import format_time

#: A file whose mtime is this close to the moment it was hashed may still change within the
#: same timestamp tick without changing its stat key ("racy git"); such rows are re-hashed by
#: the next scan. Coarse kernel timestamps are one jiffy (≤ 10 ms); a second is ample.
RACY_WINDOW_NS = 1_000_000_000


@dataclass(frozen=True)
class Hashed:
    """Both digests of a file that did not change while it was read."""

    path: Path
    stat: FileStat
    digests: FileDigests
    hashed_at: str
    racy: bool


@dataclass(frozen=True)
class Unreadable:
    """The file exists but cannot be read; recorded with the reason, retried when it changes."""

    path: Path
    stat: FileStat | None
    error_class: ErrorClass
    message: str


@dataclass(frozen=True)
class Retry:
    """The file changed while settling or being read: settle it again."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Skipped:
    """Nothing to record here: gone, not a regular file, a symlink, or outside the watch."""

    path: Path
    reason: str


#: What hashing one file gave.
FileOutcome = Hashed | Unreadable | Retry | Skipped
#: What hashing gave: one file's outcome, or (from a scan's hash task) many hashed files at
#: once as the rows the index writer takes (:class:`~stampd.store.index.new_files.SettledFiles`).
HashOutcome = FileOutcome | SettledFiles

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _lstat_key(path: Path) -> FileStat | None:
    try:
        return FileStat.of(path.lstat())
    except OSError:
        return None


def hash_file(
    path: Path,
    *,
    root_dev: int,
    expected: FileStat | None = None,
    progress: Progress | None = None,
) -> FileOutcome:
    """Hash ``path`` if it is still the regular file that settled (``expected``, if given).

    ``progress`` is called with the byte count of every read (the health check's sign of
    life for a long hash)."""
    try:
        # O_NONBLOCK: a FIFO planted under the name must not block the worker forever.
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return Skipped(path, "gone")
        if error.errno == errno.ELOOP:
            return Skipped(path, "a symbolic link")
        return Unreadable(path, _lstat_key(path), ErrorClass.IO, f"cannot open: {error.strerror}")
    try:
        return _hash_open_file(fd, path, root_dev=root_dev, expected=expected, progress=progress)
    finally:
        os.close(fd)


def _hash_open_file(  # noqa: PLR0911 - one return per outcome
    fd: int, path: Path, *, root_dev: int, expected: FileStat | None, progress: Progress | None
) -> FileOutcome:
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        return Skipped(path, "not a regular file")
    if before.st_dev != root_dev:
        return Skipped(path, "on another filesystem than its watch")
    key = FileStat.of(before)
    if expected is not None and (key.dev, key.ino) != (expected.dev, expected.ino):
        return Retry(path, "replaced by another file since it settled")
    # O_NOFOLLOW guards only the last component; the kernel's own name for what we opened
    # tells whether a symlinked directory on the way led somewhere else.
    if os.readlink(f"/proc/self/fd/{fd}") != str(path):  # noqa: PTH115 - no Path objects here
        return Skipped(path, "reached through a symbolically linked directory")
    hashed_at_ns = time.time_ns()
    try:
        # fstat said the size: a small file is one read, without readahead advice or a read
        # to see end of file (the fstat after catches growth; store/files/digest.py).
        digests = digest_fd_sized(fd, before.st_size, progress=progress)
    except OSError as error:
        return Unreadable(path, key, ErrorClass.IO, f"read failed: {error.strerror}")
    after = FileStat.of(os.fstat(fd))
    if after != key or digests.size != after.size:
        return Retry(path, "changed while it was read")
    return Hashed(
        path=path,
        stat=after,
        digests=digests,
        hashed_at=format_time(datetime.fromtimestamp(hashed_at_ns / 1e9, UTC)),
        racy=after.mtime_ns >= hashed_at_ns - RACY_WINDOW_NS,
    )


def rehash(
    path: Path, algorithms: Sequence[str], *, follow_symlinks: bool = False
) -> dict[str, bytes]:
    """The digests of ``path`` under each of ``algorithms``, in one read.

    The guards of :func:`hash_file`: opened without blocking (a FIFO planted under the name
    never hangs the reader), it must be a regular file, and ``fstat`` before and after the
    read must agree, so the digests are of one content. A final symbolic link is refused
    (DESIGN rule 4) unless ``follow_symlinks`` (the CLI, for a path a user names). Raises
    :class:`~stampd.store.errors.FileAccessError` naming the path; ValueError for an
    algorithm hashlib does not know.
    """
    hashers = {name: hashlib.new(name) for name in algorithms}
    flags = _OPEN_FLAGS & ~os.O_NOFOLLOW if follow_symlinks else _OPEN_FLAGS
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise FileAccessError(f"{path}: cannot open: {error.strerror}") from error
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise FileAccessError(f"{path}: not a regular file")
        size = 0
        while chunk := os.read(fd, CHUNK_SIZE):
            size += len(chunk)
            for hasher in hashers.values():
                hasher.update(chunk)
        after = os.fstat(fd)
    except OSError as error:
        raise FileAccessError(f"{path}: read failed: {error.strerror}") from error
    finally:
        os.close(fd)
    if FileStat.of(after) != FileStat.of(before) or size != after.st_size:
        raise FileAccessError(f"{path}: changed while it was read")
    return {name: hasher.digest() for name, hasher in hashers.items()}
