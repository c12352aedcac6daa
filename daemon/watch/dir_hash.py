"""Hashing a scan's settled files, directory by directory, with every guard of
:mod:`stampd.daemon.watch.hasher`; also the program each hash worker process runs.

The scan sends a *task*: the watch root's device and, per directory, the names it saw with
their ``lstat`` keys. Each directory is opened once (``O_NOFOLLOW | O_DIRECTORY``) and the
kernel's own name for that descriptor (``/proc/self/fd``) must be the directory's path: no
component on the way is a symbolic link. Each file is then opened *relative to that
descriptor* (``dir_fd``, a name without ``/``, ``O_NOFOLLOW``), so neither the file nor any
directory above it can be a symlink swapped in since the walk, and the per-file
``readlink`` of :func:`~stampd.daemon.watch.hasher.hash_file` (34 µs per file in the daemon,
issue 13's scan profile) becomes one per directory. The other guards stay per file: regular
file only, same filesystem as the root, the same ``(dev, ino)`` as the walk saw, ``fstat``
before and after the read equal (else retried), ``O_NONBLOCK`` so a FIFO planted under the
name never blocks, and the data file is only read (DESIGN rule 4).

Replies are compact tuples (:data:`Reply`), built into ``HashOutcome`` values by the daemon
(:mod:`stampd.daemon.watch.hash_workers`): a worker imports only what hashing needs, and
``marshal`` carries tuples of ints, strings and bytes between the processes at little cost.
This module is run as ``python -m stampd.daemon.watch.dir_hash`` by each worker; it must not
import the daemon's runtime (check with ``python -X importtime -m ...``).
"""

from __future__ import annotations

import errno
import marshal
import os
import signal
import stat
import struct
import sys
import time
from typing import Any

from stampd.store.files.digest import digest_fd_sized

#: A file whose mtime is this close to the moment it was hashed is racy (hasher.py has why).
RACY_WINDOW_NS = 1_000_000_000

#: A file as the walk saw it: its name in its directory and its ``lstat`` key
#: ``(dev, ino, size, mtime_ns, ctime_ns)``.
Item = tuple[str, tuple[int, int, int, int, int]]
#: One task: the root's device and, per directory path, the items to hash there; or a
#: compare task of the scan's walk (daemon/watch/dir_compare.py), which starts with
#: :data:`COMPARE`.
Task = tuple[Any, ...]
#: What a compare task starts with.
COMPARE = "compare"
#: One reply per item, in task order: ``("h", sha256, sha512, racy)`` hashed, and its
#: ``fstat`` before and after the read equal to the walk's key (so the key is not sent back);
#: ``("c", reason)`` changed since the walk or while read (settle it again);
#: ``("s", reason)`` skipped; ``("u", key or None, message)`` unreadable.
Reply = tuple[Any, ...]

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_HEADER = struct.Struct("<I")


def _key(result: os.stat_result) -> tuple[int, int, int, int, int]:
    return (
        result.st_dev,
        result.st_ino,
        result.st_size,
        result.st_mtime_ns,
        result.st_ctime_ns,
    )


def hash_task(task: Task) -> tuple[int, list[Reply]]:
    """Hash every item of ``task``; the time the task began (ns) and one reply per item.
    A compare task's replies are its directories' comparisons instead."""
    started = time.time_ns()
    if task[0] == COMPARE:
        # Imported on the first such task: a worker that only hashes never loads sqlite3.
        from stampd.daemon.watch.dir_compare import compare_task  # noqa: PLC0415

        return started, compare_task(task)
    root_dev, directories = task
    replies: list[Reply] = []
    for directory, items in directories:
        replies.extend(hash_directory(directory, items, root_dev))
    return started, replies


def hash_directory(directory: str, items: list[Item], root_dev: int) -> list[Reply]:
    """The replies for ``items``, all in ``directory``, which is opened once."""
    try:
        dir_fd = os.open(directory, _DIR_FLAGS)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            # Gone, or a symlink now stands where the walk saw a directory: never followed.
            return [("s", "its directory is gone or is no longer a directory")] * len(items)
        return [("u", None, f"cannot open its directory: {error.strerror}")] * len(items)
    try:
        # O_NOFOLLOW guards the last component only; the kernel's name for the descriptor
        # tells whether a symlinked directory higher up led somewhere else.
        if os.readlink(f"/proc/self/fd/{dir_fd}") != directory:  # noqa: PTH115 - no Path
            return [("s", "reached through a symbolically linked directory")] * len(items)
        return [_hash_one(dir_fd, name, expected, root_dev) for name, expected in items]
    finally:
        os.close(dir_fd)


def _hash_one(  # noqa: PLR0911 - one return per outcome, as in hasher.py
    dir_fd: int, name: str, expected: tuple[int, int, int, int, int], root_dev: int
) -> Reply:
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return ("s", "gone")
        if error.errno == errno.ELOOP:
            return ("s", "a symbolic link")
        return ("u", _lstat_at(dir_fd, name), f"cannot open: {error.strerror}")
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return ("s", "not a regular file")
        if before.st_dev != root_dev:
            return ("s", "on another filesystem than its watch")
        key = _key(before)
        if key != expected:
            # Replaced or changed since the walk: it has not met the settle rule after all.
            return ("c", "changed since the scan saw it")
        hashed_at_ns = time.time_ns()
        try:
            digests = digest_fd_sized(fd, before.st_size)
        except OSError as error:
            return ("u", key, f"read failed: {error.strerror}")
        after = _key(os.fstat(fd))
        if after != key or digests.size != after[2]:
            return ("c", "changed while it was read")
        return ("h", digests.sha256, digests.sha512, after[3] >= hashed_at_ns - RACY_WINDOW_NS)
    finally:
        os.close(fd)


def _lstat_at(dir_fd: int, name: str) -> tuple[int, int, int, int, int] | None:
    try:
        return _key(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    except OSError:
        return None


# --- the worker process ----------------------------------------------------------------------


def write_message(fd: int, value: Any) -> None:
    """One framed message: a 4-byte little-endian length, then ``marshal`` bytes."""
    data = marshal.dumps(value)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_message(fd: int) -> Any:
    """The next framed message from ``fd``; None at end of file (the other side closed)."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    body = _read_exactly(fd, length)
    if body is None:
        return None
    # Only ever between the daemon and the workers it started, over their own pipes.
    return marshal.loads(body)  # noqa: S302


def _read_exactly(fd: int, count: int) -> bytes | None:
    parts: list[bytes] = []
    while count:
        chunk = os.read(fd, count)
        if not chunk:
            return None
        parts.append(chunk)
        count -= len(chunk)
    return b"".join(parts)


def main() -> None:
    """Serve tasks from stdin until it closes; each reply goes to stdout.

    SIGINT and SIGTERM are ignored: the daemon that started the worker decides when it ends
    (it closes stdin on shutdown), so a Ctrl-C or systemd's SIGTERM to the whole group does
    not kill a worker in the middle of a task while the daemon still waits for it. A daemon
    killed outright closes the pipe too, and the worker ends.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        while (task := read_message(stdin)) is not None:
            write_message(stdout, hash_task(task))
    except BrokenPipeError:
        pass  # the daemon went away while we answered: nobody is left to tell


if __name__ == "__main__":
    main()
