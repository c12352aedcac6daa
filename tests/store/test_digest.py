"""store/files/digest.py: one pass gives SHA-256 and SHA-512 equal to hashlib and to openssl."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stampd.store.errors import FileAccessError
from stampd.store.files import digest
from stampd.store.files.digest import (
    CHUNK_SIZE,
    SMALL_INPUT_LIMIT,
    FileDigests,
    digest_bytes,
    digest_fd,
    digest_path,
    digest_stream,
    sha256_fd,
    single_digest_fd,
    single_digest_path,
    single_digest_stream,
)
from tests.conftest import require_tool, unprivileged

MiB = 1 << 20
GiB = 1 << 30

# Around each read-buffer boundary and around the point where SHA-512 moves to the helper.
SIZES = sorted(
    {
        0,
        1,
        4096,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        2 * CHUNK_SIZE + 1,
        SMALL_INPUT_LIMIT - 1,
        SMALL_INPUT_LIMIT,
        SMALL_INPUT_LIMIT + 1,
        3 * CHUNK_SIZE + 12345,
    }
)


def expected(data: bytes) -> FileDigests:
    return FileDigests(len(data), hashlib.sha256(data).digest(), hashlib.sha512(data).digest())


def openssl_hex(path: Path, algo: str) -> str:
    openssl = require_tool("openssl")
    out = subprocess.run(
        [openssl, "dgst", f"-{algo}", "-r", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[0]


def hashlib_file(path: Path, algo: str) -> str:
    """An independent streaming reference: hashlib's own file reader."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, algo).hexdigest()


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def digest_file_fd(path: Path) -> FileDigests:
    fd = os.open(path, os.O_RDONLY)
    try:
        return digest_fd(fd)
    finally:
        os.close(fd)


class ShortReads(io.RawIOBase):
    """A stream whose readinto returns random short counts, as pipes and sockets do."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._rng = rng

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        left = len(self._data) - self._pos
        if not left:
            return 0
        count = min(left, len(buffer), self._rng.randint(1, 3 * len(buffer) // 2))
        buffer[:count] = self._data[self._pos : self._pos + count]
        self._pos += count
        return count


def helper_threads() -> int:
    return sum(thread.name == "stampd-digest" for thread in threading.enumerate())


@pytest.mark.parametrize("size", SIZES)
def test_sizes_match_hashlib_and_openssl(tmp_path: Path, size: int) -> None:
    path = tmp_path / "data"
    data = write_random(path, size, seed=size)
    want = expected(data)

    assert digest_path(path) == want
    assert digest_file_fd(path) == want
    assert digest_bytes(data) == want
    assert digest_stream(io.BytesIO(data)) == want
    with path.open("rb") as file:
        assert digest_stream(file) == want
    with path.open("rb") as file:
        assert sha256_fd(file.fileno()) == want.sha256
    for algorithm, hexdigest in (("sha256", want.sha256_hex), ("sha512", want.sha512_hex)):
        single = single_digest_path(path, algorithm)
        assert (single.size, single.algorithm, single.hexdigest) == (size, algorithm, hexdigest)
        assert single_digest_stream(io.BytesIO(data), algorithm) == single
        with path.open("rb") as file:
            assert single_digest_fd(file.fileno(), algorithm) == single
    assert want.sha256_hex == openssl_hex(path, "sha256")
    assert want.sha512_hex == openssl_hex(path, "sha512")


def test_empty_input_gives_the_well_known_digests(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    result = digest_path(path)
    assert result.size == 0
    assert result.sha256_hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert result.sha512_hex.startswith(
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d3"
    )


def test_result_is_a_frozen_value() -> None:
    result = digest_bytes(b"abc")
    with pytest.raises(AttributeError):
        result.size = 4  # type: ignore[misc]
    assert result.sha256_hex == result.sha256.hex()
    assert len(result.sha512) == 64


@pytest.mark.slow
def test_multi_gib_sparse_file(tmp_path: Path) -> None:
    """Sizes past 2**31 (int32 overflow) and 2 GiB of mostly holes, checked three ways."""
    path = tmp_path / "sparse"
    size = 2 * GiB + 1
    tail = b"end!\n"
    with path.open("wb") as file:
        file.truncate(size)
        file.seek(size - len(tail))
        file.write(tail)
    assert path.stat().st_size == size

    result = digest_path(path)

    assert result.size == size
    assert result.sha256_hex == hashlib_file(path, "sha256") == openssl_hex(path, "sha256")
    assert result.sha512_hex == hashlib_file(path, "sha512") == openssl_hex(path, "sha512")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=64 * 1024) | st.integers(0, 3 * CHUNK_SIZE).map(os.urandom),
    seed=st.integers(0, 2**32),
    limit=st.sampled_from([1, 100, 4096, SMALL_INPUT_LIMIT]),
)
def test_random_short_reads_match_hashlib(data: bytes, seed: int, limit: int) -> None:
    """Random chunk boundaries, and random points where SHA-512 moves to the helper thread."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(digest, "SMALL_INPUT_LIMIT", limit)
        assert digest_stream(ShortReads(data, random.Random(seed))) == expected(data)  # type: ignore[arg-type]
        assert digest_bytes(data) == expected(data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=64 * 1024) | st.integers(0, 3 * CHUNK_SIZE).map(os.urandom),
    seed=st.integers(0, 2**32),
    algorithm=st.sampled_from(["sha256", "sha512"]),
)
def test_single_digest_of_random_short_reads_matches_hashlib(
    data: bytes, seed: int, algorithm: str
) -> None:
    single = single_digest_stream(ShortReads(data, random.Random(seed)), algorithm)  # type: ignore[arg-type]
    assert single.digest == hashlib.new(algorithm, data).digest()
    assert single.size == len(data)


def test_single_digest_runs_in_the_calling_thread_and_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "data"
    data = write_random(path, 3 * CHUNK_SIZE + 5)
    seen: list[int] = []
    code = (
        "import sys, threading\n"
        "from stampd.store.files.digest import single_digest_path\n"
        "single_digest_path(sys.argv[1], 'sha512')\n"
        "print(sum(t.name == 'stampd-digest' for t in threading.enumerate()))\n"
    )
    # A fresh interpreter: this process's helper threads may already run for other tests.
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert run.stdout.strip() == "0", run.stderr
    assert single_digest_path(path, "sha256", progress=seen.append).size == len(data)
    assert sum(seen) == len(data)


def test_single_digest_refuses_other_algorithms_and_guards_like_digest_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").write_bytes(b"x")
    with pytest.raises(ValueError, match="md5"):
        single_digest_path(tmp_path / "data", "md5")
    with pytest.raises(FileAccessError) as caught:
        single_digest_path(tmp_path, "sha256")
    assert caught.value.message == f"{tmp_path}: {os.strerror(errno.EISDIR)}"
    with pytest.raises(FileAccessError) as caught:
        single_digest_path(tmp_path / "missing", "sha256")
    assert caught.value.message == f"{tmp_path / 'missing'}: No such file or directory"
    with pytest.raises(FileAccessError) as caught:
        single_digest_path("/proc/self/mem", "sha256")
    assert isinstance(caught.value.__cause__, OSError)


def test_digest_fd_reads_from_the_current_offset_and_leaves_fd_open(tmp_path: Path) -> None:
    path = tmp_path / "data"
    data = write_random(path, 3 * CHUNK_SIZE + 7)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in (1, CHUNK_SIZE + 3, len(data) - 1, len(data)):
            os.lseek(fd, offset, os.SEEK_SET)
            assert digest_fd(fd) == expected(data[offset:])
            assert os.lseek(fd, 0, os.SEEK_CUR) == len(data)
    finally:
        os.close(fd)


def test_digest_fd_of_a_pipe(tmp_path: Path) -> None:
    """Pipes refuse posix_fadvise and give short reads; both are fine."""
    data = os.urandom(2 * CHUNK_SIZE + 99)
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as file:
            file.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert digest_fd(read_end) == expected(data)
    finally:
        writer.join()
        os.close(read_end)


def test_stream_without_readinto() -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._file = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._file.read(min(size, 1000))

    data = os.urandom(CHUNK_SIZE + 5000)
    assert digest_stream(ReadOnly(data)) == expected(data)  # type: ignore[arg-type]


def test_non_blocking_stream_without_data_is_an_error() -> None:
    class NothingYet(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> None:  # type: ignore[override]
            return None

    with pytest.raises(BlockingIOError):
        digest_stream(NothingYet())  # type: ignore[arg-type]
    with pytest.raises(BlockingIOError):
        single_digest_stream(NothingYet(), "sha256")  # type: ignore[arg-type]


def test_concurrent_callers_get_correct_results(tmp_path: Path) -> None:
    """The daemon hashes in a thread pool: each caller gets its own buffers and helper."""
    files = {}
    for number in range(6):
        path = tmp_path / f"f{number}"
        files[path] = expected(write_random(path, 4 * CHUNK_SIZE + number * 4099, seed=number))
    results: dict[Path, list[FileDigests]] = {path: [] for path in files}
    failures: list[BaseException] = []
    start = threading.Barrier(len(files))

    def work(path: Path) -> None:
        try:
            start.wait()
            for _ in range(3):
                results[path].append(digest_path(path))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(path,)) for path in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not failures
    for path, want in files.items():
        assert results[path] == [want, want, want]


def test_helper_threads_are_reused_not_started_per_file(tmp_path: Path) -> None:
    path = tmp_path / "large"
    data = write_random(path, 2 * CHUNK_SIZE)
    digest_path(path)
    before = helper_threads()
    assert before >= 1
    for _ in range(20):
        assert digest_path(path) == expected(data)
        assert digest_bytes(data) == expected(data)
    assert helper_threads() == before


def test_small_inputs_never_start_a_helper_thread(tmp_path: Path) -> None:
    """A scan of many small files must not pay for threads (checked in a fresh interpreter)."""
    for number in range(50):
        (tmp_path / f"small{number}").write_bytes(os.urandom(number * 997))
    code = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from stampd.store.files.digest import digest_path, digest_bytes\n"
        "for path in sorted(Path(sys.argv[1]).iterdir()):\n"
        "    digest_path(path); digest_bytes(path.read_bytes())\n"
        "print(threading.active_count())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1"


def test_a_failure_mid_file_leaves_the_next_digest_correct(tmp_path: Path) -> None:
    """An exception while the helper still hashes (here from the progress callback)."""
    path = tmp_path / "large"
    data = write_random(path, 5 * CHUNK_SIZE)
    seen: list[int] = []

    def progress(count: int) -> None:
        seen.append(count)
        if len(seen) == 3:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        digest_path(path, progress=progress)
    assert digest_path(path) == expected(data)


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "data"
    data = write_random(path, 3 * CHUNK_SIZE + 5)
    seen: list[int] = []
    assert digest_path(path, progress=seen.append) == expected(data)
    assert sum(seen) == len(data)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    with pytest.raises(FileAccessError) as caught:
        digest_path(path)
    assert str(path) in caught.value.message
    assert "No such file" in caught.value.message
    assert caught.value.error_class == "io"
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError) as caught:
        digest_path(tmp_path)
    assert caught.value.message == f"{tmp_path}: {os.strerror(errno.EISDIR)}"
    assert "is a directory" in caught.value.message.lower()
    assert caught.value.hint


def test_unreadable_file(shared_tmp: Path) -> None:
    path = shared_tmp / "secret"
    path.write_bytes(b"x")
    path.chmod(0)
    with unprivileged(), pytest.raises(FileAccessError) as caught:
        digest_path(path)
    assert str(path) in caught.value.message
    assert "Permission denied" in caught.value.message


def test_read_error_after_open_is_wrapped() -> None:
    """/proc/self/mem opens fine but reading address 0 fails with EIO, even for root."""
    with pytest.raises(FileAccessError) as caught:
        digest_path("/proc/self/mem")
    assert caught.value.message.startswith("/proc/self/mem: ")
    assert isinstance(caught.value.__cause__, OSError)


def test_digest_fd_lets_oserror_through() -> None:
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            digest_fd(fd)
    finally:
        os.close(fd)


def test_symlinks_are_followed_and_loops_reported(tmp_path: Path) -> None:
    target = tmp_path / "target"
    data = write_random(target, 100)
    (tmp_path / "link").symlink_to(target)
    assert digest_path(tmp_path / "link") == expected(data)

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(FileAccessError) as caught:
        digest_path(tmp_path / "loop")
    assert str(tmp_path / "loop") in caught.value.message
