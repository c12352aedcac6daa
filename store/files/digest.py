"""SHA-256 and SHA-512 of a file, a stream or bytes, in one read pass and constant memory.

Every version stampd records carries both digests (DESIGN §1), so the data is read once and
fed to both hashes. Throughput targets (DESIGN §11): the SHA-256 path at >= 0.9x
``openssl dgst -sha256``, both digests together at >= 0.85x ``openssl dgst -sha512`` alone;
``bench/bench_digest.py`` measures them.

Why a helper thread, although ``store`` otherwise runs no threads of its own: hashing the
same chunk with SHA-256 then SHA-512 in one thread costs the sum of both (measured here:
~0.48 GB/s against 0.67 GB/s for ``openssl dgst -sha512``), which misses the second target.
hashlib releases the GIL for updates of 2 KiB and more, so for large inputs the SHA-512 update
of a chunk runs in a persistent helper thread while the calling thread hashes the same chunk
with SHA-256 and then reads the next chunk into a second buffer (~0.75 GB/s, about 1.1x the
reference). The helper is an implementation detail: every function here is synchronous,
returns only when all work is done, and never leaves a thread busy behind its caller.

Small inputs (the bulk of a tree scan: many files of a few KiB) never touch the helper: below
:data:`SMALL_INPUT_LIMIT` both hashes run in the calling thread with no handoff at all.

Where only one digest is wanted (``stampd digest`` prints SHA-256 by default), the
``single_digest_*`` functions compute just that one, through the same buffer and reads, in the
calling thread: computing SHA-512 too and dropping it halved ``stampd digest``'s throughput.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Final, TypeVar

from stampd.store.errors import FileAccessError

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "CHUNK_SIZE",
    "SINGLE_ALGORITHMS",
    "SMALL_INPUT_LIMIT",
    "FileDigests",
    "Progress",
    "SingleDigest",
    "digest_bytes",
    "digest_fd",
    "digest_fd_sized",
    "digest_path",
    "digest_stream",
    "sha256_fd",
    "single_digest_fd",
    "single_digest_path",
    "single_digest_stream",
]

#: Bytes asked of each read. Measured on a 1 GiB page-cached file (2 cores with SHA-NI, page-
#: aligned buffers): both digests run at ~0.75 GB/s and SHA-256 alone at ~1.40 GB/s for every
#: size from 256 KiB to 8 MiB. 1 MiB sits well inside that plateau while two buffers per
#: concurrent caller stay small; the kernel's readahead (see _advise_sequential) batches the
#: disk I/O whatever the read size.
CHUNK_SIZE: Final = 1 << 20

#: Inputs that end before this many bytes are hashed entirely in the calling thread; from here
#: on the helper thread takes SHA-512. A handoff costs a few microseconds, a 1 MiB SHA-512 ~1.4 ms.
SMALL_INPUT_LIMIT: Final = 1 << 20

_T = TypeVar("_T")

#: Called after each read with the number of bytes just read (for progress bars).
Progress = Callable[[int], object]

# Reads into the buffer it is given and returns the byte count: 0 at end of input, None when
# a non-blocking stream has no data yet.
_ReadInto = Callable[[memoryview], int | None]


@dataclass(frozen=True, slots=True)
class FileDigests:
    """The size and both digests of one content."""

    size: int
    sha256: bytes
    sha512: bytes

    @property
    def sha256_hex(self) -> str:
        """SHA-256 as lowercase hex, as ``sha256sum`` prints it."""
        return self.sha256.hex()

    @property
    def sha512_hex(self) -> str:
        """SHA-512 as lowercase hex, as ``sha512sum`` prints it."""
        return self.sha512.hex()


#: What the one-algorithm functions compute: the two digests stampd records (DESIGN §1).
SINGLE_ALGORITHMS: Final = ("sha256", "sha512")


@dataclass(frozen=True, slots=True)
class SingleDigest:
    """The size and one digest of one content (``stampd digest`` without ``--json``)."""

    size: int
    algorithm: str
    digest: bytes

    @property
    def hexdigest(self) -> str:
        """The digest as lowercase hex, as ``sha256sum`` / ``sha512sum`` print it."""
        return self.digest.hex()


def _aligned_buffer() -> memoryview:
    # Page-aligned, from an anonymous mapping rather than bytearray: glibc serves a 1 MiB
    # bytearray from its own mmap at 16 bytes past a page boundary, and the kernel's copy into
    # that address ran at 2.6 GB/s instead of 13 GB/s here, which cut SHA-256 alone from
    # 1.41 to 0.99 GB/s (any offset that is a multiple of 32 was fast).
    return memoryview(mmap.mmap(-1, CHUNK_SIZE))


class _Helper:
    """A persistent thread that applies ``hash.update(view)`` jobs in order.

    Completions come back on ``done`` in submission order, so the submitter knows which
    buffer is free again by counting.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[_Hash, memoryview] | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="stampd-digest", daemon=True)
        self._thread.start()

    def submit(self, hasher: _Hash, view: memoryview) -> None:
        self._jobs.put((hasher, view))

    def stop(self) -> None:
        """Let the thread finish the jobs already queued, then exit."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            hasher, view = job
            try:
                hasher.update(view)
            except BaseException as error:  # handed to the submitter, which re-raises it
                self.done.put(error)
            else:
                self.done.put(None)


class _Lane:
    """What one digest call works with: read buffers and, for large inputs, a helper thread.

    Lanes are reused through :class:`_LanePool`, so concurrent callers (the
    daemon's hashing pool) each get their own buffers and helper, and a steady stream of calls
    allocates nothing: buffers are made once per lane and the helper is started the first time
    the lane meets a large input.
    """

    def __init__(self) -> None:
        self.buffers = [_aligned_buffer()]
        self._helper: _Helper | None = None
        self._in_flight = 0

    def helper(self) -> _Helper:
        if self._helper is None:
            self._helper = _Helper()
        if len(self.buffers) == 1:  # the second buffer is read into while the helper hashes
            self.buffers.append(_aligned_buffer())
        return self._helper

    def submit(self, hasher: _Hash, view: memoryview) -> None:
        self.helper().submit(hasher, view)
        self._in_flight += 1

    def wait(self, *, keep: int = 0) -> None:
        """Wait until at most ``keep`` submitted updates are unfinished; re-raise their errors."""
        first_error: BaseException | None = None
        while self._in_flight > keep:
            assert self._helper is not None
            error = self._helper.done.get()
            self._in_flight -= 1
            if first_error is None:
                first_error = error
        if first_error is not None:
            raise first_error

    def digest(self, read: _ReadInto, progress: Progress | None) -> FileDigests:
        sha256, sha512 = hashlib.sha256(), hashlib.sha512()
        size = 0
        turn = 0
        while True:
            buffer = self.buffers[turn]
            count = read(buffer)
            if not count:
                if count is None:
                    raise BlockingIOError(errno.EAGAIN, "non-blocking stream without data")
                break
            view = buffer if count == len(buffer) else buffer[:count]
            size += count
            if self._in_flight or size >= SMALL_INPUT_LIMIT:
                self.submit(sha512, view)
                sha256.update(view)
                # Two buffers alternate: before the next read reuses the other one, the helper
                # must be done with the update submitted from it one round earlier.
                turn ^= 1
                self.wait(keep=1)
            else:
                sha512.update(view)
                sha256.update(view)
            if progress is not None:
                progress(count)
        self.wait()
        return FileDigests(size, sha256.digest(), sha512.digest())

    def settle(self) -> bool:
        """After a failed call: wait for the helper; False if this lane cannot be reused."""
        try:
            self.wait()
        except BaseException:
            # Interrupted (or the helper failed): the helper may still be hashing from our
            # buffers, so this lane is retired rather than handed to another caller.
            if self._helper is not None:
                self._helper.stop()
            return False
        return True


class _LanePool:
    """Idle lanes, reused by later calls; it grows to the peak number of concurrent callers."""

    def __init__(self) -> None:
        self._idle: list[_Lane] = []
        self._lock = threading.Lock()

    def borrow(self) -> _Lane:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Lane()

    def give_back(self, lane: _Lane) -> None:
        with self._lock:
            self._idle.append(lane)

    def forget(self) -> None:
        """In a forked child: only the forking thread exists, not the helpers of idle lanes,
        and another parent thread may have held the lock at the moment of the fork."""
        self._lock = threading.Lock()
        self._idle = []


_lanes = _LanePool()
os.register_at_fork(after_in_child=_lanes.forget)


def _run_lane(read: _ReadInto, progress: Progress | None) -> FileDigests:
    lane = _lanes.borrow()
    try:
        result = lane.digest(read, progress)
    except BaseException:
        if lane.settle():
            _lanes.give_back(lane)
        raise
    _lanes.give_back(lane)
    return result


def _fd_reader(fd: int) -> _ReadInto:
    def read(buffer: memoryview) -> int:
        # os.readv fills a caller-owned buffer (os.readinto only exists from Python 3.14).
        return os.readv(fd, (buffer,))

    return read


def _advise_sequential(fd: int) -> None:
    # Doubles the kernel's readahead window for this file, as GNU sha256sum does; pipes and
    # some file systems refuse, which changes nothing about the result. A plain try costs
    # 0.4 us here against 1.1 us for contextlib.suppress, on a path taken for every file.
    try:  # noqa: SIM105
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except OSError:
        pass


def digest_fd(fd: int, *, progress: Progress | None = None) -> FileDigests:
    """Both digests of what ``fd`` yields from its current offset to end of file.

    The descriptor is left open (at end of file). ``OSError`` from reading propagates
    unchanged; ``progress``, if given, is called with the byte count of every read.
    """
    _advise_sequential(fd)
    return _run_lane(_fd_reader(fd), progress)


def digest_fd_sized(fd: int, size: int, *, progress: Progress | None = None) -> FileDigests:
    """Both digests of a regular file's ``fd`` (at offset 0) whose ``fstat`` said ``size``.

    For the daemon's guarded reads, which ``fstat`` the file before and after reading and
    retry it when the two differ: a small file is read with one ``read`` of exactly ``size``
    bytes, with no second read to see end of file and no readahead advice (a 4 KiB file gains
    nothing from ``posix_fadvise``, 6.8 us per file in the daemon: the scan profile of
    issue 13). Growth after the first ``fstat`` changes the second one, so the caller's
    comparison catches what this read does not look for. A short read (the file shrank)
    reads on to end of file; the size returned is what was read, which the caller compares.
    Large files (and an empty stat size, which some special files report) take the path of
    :func:`digest_fd`.
    """
    if size <= 0 or size >= SMALL_INPUT_LIMIT:
        return digest_fd(fd, progress=progress)
    data = os.read(fd, size)
    if len(data) < size and data:
        rest = [data]
        while chunk := os.read(fd, size):
            rest.append(chunk)
        data = b"".join(rest)
    if progress is not None:
        progress(len(data))
    return FileDigests(len(data), hashlib.sha256(data).digest(), hashlib.sha512(data).digest())


def _run_single(read: _ReadInto, algorithm: str, progress: Progress | None) -> SingleDigest:
    """One digest through the same aligned buffer and reads as :func:`digest_fd`.

    Entirely in the calling thread: one hash keeps pace with a page-cached read on its own,
    so a handoff to the helper would only add latency.
    """
    if algorithm not in SINGLE_ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    hasher = hashlib.new(algorithm)
    size = 0
    lane = _lanes.borrow()
    buffer = lane.buffers[0]
    try:
        while True:
            count = read(buffer)
            if not count:
                if count is None:
                    raise BlockingIOError(errno.EAGAIN, "non-blocking stream without data")
                break
            # A memoryview slice, never bytes(): hashlib reads the buffer in place.
            hasher.update(buffer if count == len(buffer) else buffer[:count])
            size += count
            if progress is not None:
                progress(count)
    finally:
        _lanes.give_back(lane)
    return SingleDigest(size, algorithm, hasher.digest())


def single_digest_fd(fd: int, algorithm: str, *, progress: Progress | None = None) -> SingleDigest:
    """One digest (``"sha256"`` or ``"sha512"``) of what ``fd`` yields from its offset on.

    For callers that print or compare one digest only: half the work of :func:`digest_fd`
    for SHA-256, which is what ``stampd digest`` prints by default.
    """
    _advise_sequential(fd)
    return _run_single(_fd_reader(fd), algorithm, progress)


def sha256_fd(fd: int, *, progress: Progress | None = None) -> bytes:
    """SHA-256 alone of what ``fd`` yields from its current offset, through the same reader."""
    return single_digest_fd(fd, "sha256", progress=progress).digest


def _stream_reader(stream: BinaryIO) -> _ReadInto:
    # ``readinto`` when the stream has it (no copy); otherwise ``read`` and a copy.
    readinto: _ReadInto | None = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto

    def read_and_copy(buffer: memoryview) -> int:
        data = stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    return read_and_copy


def digest_stream(stream: BinaryIO, *, progress: Progress | None = None) -> FileDigests:
    """Both digests of what a binary stream yields until its end (for stdin and the like).

    Uses ``readinto`` when the stream has it (no copy); otherwise ``read``. The stream is
    not closed.
    """
    return _run_lane(_stream_reader(stream), progress)


def single_digest_stream(
    stream: BinaryIO, algorithm: str, *, progress: Progress | None = None
) -> SingleDigest:
    """One digest of what a binary stream yields until its end; the stream is not closed."""
    return _run_single(_stream_reader(stream), algorithm, progress)


def digest_bytes(data: bytes) -> FileDigests:
    """Both digests of ``data``, already in memory (large data still gets SHA-512 in the helper)."""
    if len(data) < SMALL_INPUT_LIMIT:
        return FileDigests(
            size=len(data),
            sha256=hashlib.sha256(data).digest(),
            sha512=hashlib.sha512(data).digest(),
        )
    view = memoryview(data)
    sha256, sha512 = hashlib.sha256(), hashlib.sha512()
    lane = _lanes.borrow()
    try:
        lane.submit(sha512, view)
        sha256.update(view)
        lane.wait()
    except BaseException:
        if lane.settle():
            _lanes.give_back(lane)
        raise
    _lanes.give_back(lane)
    return FileDigests(size=len(data), sha256=sha256.digest(), sha512=sha512.digest())


_HINTS: Final = {
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EACCES: "check the permissions of the file and its directories",
    errno.EPERM: "check the permissions of the file and its directories",
    errno.EISDIR: "name a file, not a directory",
    errno.ELOOP: "the path has a symbolic link loop",
}


def _access_error(path: str | os.PathLike[str], error: OSError) -> FileAccessError:
    reason = error.strerror or str(error)
    return FileAccessError(f"{os.fspath(path)}: {reason}", hint=_HINTS.get(error.errno or 0))


def _on_path(path: str | os.PathLike[str], work: Callable[[int], _T]) -> _T:
    """Open ``path`` for reading, refuse a directory, run ``work(fd)``; errors name the path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise _access_error(path, error) from error
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise FileAccessError(
                f"{os.fspath(path)}: {os.strerror(errno.EISDIR)}", hint=_HINTS[errno.EISDIR]
            )
        return work(fd)
    except OSError as error:
        raise _access_error(path, error) from error
    finally:
        os.close(fd)


def digest_path(path: str | os.PathLike[str], *, progress: Progress | None = None) -> FileDigests:
    """Both digests of the file at ``path``, following symbolic links (for the CLI).

    The daemon opens data files itself (``O_NOFOLLOW``) and calls :func:`digest_fd`.
    Raises :class:`FileAccessError` naming the path when it cannot be opened or read,
    including when it is a directory.
    """
    return _on_path(path, lambda fd: digest_fd(fd, progress=progress))


def single_digest_path(
    path: str | os.PathLike[str], algorithm: str, *, progress: Progress | None = None
) -> SingleDigest:
    """One digest of the file at ``path``; opened and reported as by :func:`digest_path`."""
    return _on_path(path, lambda fd: single_digest_fd(fd, algorithm, progress=progress))
