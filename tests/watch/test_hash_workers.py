"""The scan's hash workers: the guarded per-directory read (daemon/watch/dir_hash.py) and the
worker processes (daemon/watch/hash_workers.py), on real files, real pipes and real processes."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stampd.daemon.config.model import WatchConfig
from stampd.daemon.watch import dir_hash, hash_workers
from stampd.daemon.watch.dir_hash import Item, Reply, hash_directory, hash_task
from stampd.daemon.watch.hash_workers import TASK_FILES, HashWorkers, InlineHashing, Job
from stampd.daemon.watch.hasher import HashOutcome
from stampd.daemon.watch.runtime import WatchRuntime
from stampd.daemon.watch.scan_batches import ScanBatches
from stampd.store.files.digest import digest_fd_sized
from stampd.store.files.filestat import FileStat
from stampd.store.index.new_files import SettledFiles


def _key(path: Path) -> tuple[int, int, int, int, int]:
    st = path.lstat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _items(directory: Path, *names: str) -> list[Item]:
    return [(name, _key(directory / name)) for name in names]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_files_are_hashed_with_both_digests_and_their_fstat_key(tmp_path: Path) -> None:
    small = _write(tmp_path / "d" / "small", b"x" * 4096)
    empty = _write(tmp_path / "d" / "empty", b"")
    large = _write(tmp_path / "d" / "large", os.urandom(3 * (1 << 20) + 5))
    items = _items(tmp_path / "d", "small", "empty", "large")
    replies = hash_directory(str(tmp_path / "d"), items, tmp_path.stat().st_dev)
    for (name, _key_seen), reply in zip(items, replies, strict=True):
        data = (tmp_path / "d" / name).read_bytes()
        assert reply[:3] == ("h", hashlib.sha256(data).digest(), hashlib.sha512(data).digest())
    assert small.exists() and empty.exists() and large.exists()


def test_a_directory_swapped_for_a_symlink_after_the_walk_is_never_followed(
    tmp_path: Path,
) -> None:
    # The walk saw watched/d as a directory; then d becomes a symlink to a directory outside
    # with a file of the same name (and the same key, as far as the walk knew).
    inside = tmp_path / "watched" / "d"
    _write(inside / "f", b"inside")
    outside = _write(tmp_path / "outside" / "f", b"secret")
    items = [("f", _key(outside))]
    inside.joinpath("f").unlink()
    inside.rmdir()
    inside.symlink_to(tmp_path / "outside")
    replies = hash_directory(str(inside), items, tmp_path.stat().st_dev)
    assert replies[0][0] == "s"


def test_a_symlink_higher_up_is_caught_by_the_directory_check(tmp_path: Path) -> None:
    real = tmp_path / "real"
    outside = _write(real / "sub" / "f", b"outside")
    (tmp_path / "watched").mkdir()
    (tmp_path / "watched" / "a").symlink_to(real)
    # watched/a/sub is a real directory reached through the symlink watched/a.
    replies = hash_directory(
        str(tmp_path / "watched" / "a" / "sub"), [("f", _key(outside))], tmp_path.stat().st_dev
    )
    assert replies == [("s", "reached through a symbolically linked directory")]


def test_a_file_symlink_swapped_in_is_refused(tmp_path: Path) -> None:
    target = _write(tmp_path / "target", b"t")
    _write(tmp_path / "d" / "f", b"f")
    items = _items(tmp_path / "d", "f")
    (tmp_path / "d" / "f").unlink()
    (tmp_path / "d" / "f").symlink_to(target)
    assert hash_directory(str(tmp_path / "d"), items, tmp_path.stat().st_dev) == [
        ("s", "a symbolic link")
    ]


def test_a_fifo_swapped_in_never_blocks_and_is_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "f", b"f")
    items = _items(tmp_path / "d", "f")
    (tmp_path / "d" / "f").unlink()
    os.mkfifo(tmp_path / "d" / "f")
    done: queue.SimpleQueue[list[Reply]] = queue.SimpleQueue()
    thread = threading.Thread(
        target=lambda: done.put(hash_directory(str(tmp_path / "d"), items, tmp_path.stat().st_dev)),
        daemon=True,
    )
    thread.start()
    assert done.get(timeout=10) == [("s", "not a regular file")]


def test_a_file_changed_since_the_walk_settles_again(tmp_path: Path) -> None:
    path = _write(tmp_path / "d" / "f", b"before")
    items = _items(tmp_path / "d", "f")
    path.write_bytes(b"after, longer")
    assert hash_directory(str(tmp_path / "d"), items, tmp_path.stat().st_dev) == [
        ("c", "changed since the scan saw it")
    ]


def test_a_file_growing_while_it_is_hashed_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "d" / "f", b"x" * 4096)
    items = _items(tmp_path / "d", "f")
    real = dir_hash.digest_fd_sized

    def read_while_a_writer_appends(fd: int, size: int) -> object:
        with path.open("ab") as writer:  # another process appending, between fstat and read
            writer.write(b"more")
        return real(fd, size)

    monkeypatch.setattr(dir_hash, "digest_fd_sized", read_while_a_writer_appends)
    assert hash_directory(str(tmp_path / "d"), items, tmp_path.stat().st_dev) == [
        ("c", "changed while it was read")
    ]


def test_a_file_on_another_filesystem_is_skipped(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no tmpfs at /dev/shm on another filesystem than the test's tmp_path")
    directory = Path(tempfile.mkdtemp(dir=shm))
    try:
        _write(directory / "f", b"elsewhere")
        # The watch root is tmp_path's filesystem; a bind mount put this file under it.
        replies = hash_directory(str(directory), _items(directory, "f"), tmp_path.stat().st_dev)
        assert replies == [("s", "on another filesystem than its watch")]
    finally:
        (directory / "f").unlink()
        directory.rmdir()


def test_gone_files_and_directories_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "f", b"f")
    items = _items(tmp_path / "d", "f")
    (tmp_path / "d" / "f").unlink()
    dev = tmp_path.stat().st_dev
    assert hash_directory(str(tmp_path / "d"), items, dev) == [("s", "gone")]
    (tmp_path / "d").rmdir()
    assert hash_directory(str(tmp_path / "d"), items, dev)[0][0] == "s"


@pytest.fixture
def workers() -> Iterator[HashWorkers]:
    pool = HashWorkers(2)
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


def _tree(root: Path, directories: int, files: int) -> list[tuple[str, list[Item]]]:
    task = []
    for d in range(directories):
        directory = root / f"d{d:03}"
        for f in range(files):
            _write(directory / f"f{f:03}", f"{d}/{f}".encode() * 50)
        task.append((str(directory), _items(directory, *(f"f{f:03}" for f in range(files)))))
    return task


def _run(pool: HashWorkers, jobs: list[Job]) -> dict[int, list[Reply]]:
    results = jobs[0].results
    for job in jobs:
        pool.submit(job)
    done: dict[int, list[Reply]] = {}
    while len(done) < len(jobs):
        job, _started, replies = results.get(timeout=60)
        assert id(job) not in done, "a task's result arrived twice"
        done[id(job)] = replies
    return done


def test_the_workers_give_the_same_replies_as_hashing_here(
    tmp_path: Path, workers: HashWorkers
) -> None:
    dev = tmp_path.stat().st_dev
    tree = _tree(tmp_path, 8, 20)
    results: queue.SimpleQueue[tuple[Job, int, list[Reply]]] = queue.SimpleQueue()
    jobs = [Job(task=(dev, [directory]), results=results) for directory in tree]
    done = _run(workers, jobs)
    for job in jobs:
        assert done[id(job)] == hash_task(job.task)[1]
    assert len(set(workers.pids())) == 2


def test_a_killed_worker_is_replaced_and_its_tasks_are_hashed_again(
    tmp_path: Path, workers: HashWorkers
) -> None:
    dev = tmp_path.stat().st_dev
    tree = _tree(tmp_path, 40, 25)
    results: queue.SimpleQueue[tuple[Job, int, list[Reply]]] = queue.SimpleQueue()
    jobs = [Job(task=(dev, [directory]), results=results) for directory in tree]
    victim = workers.pids()[0]
    for job in jobs:
        workers.submit(job)
    os.kill(victim, signal.SIGKILL)
    done: dict[int, list[Reply]] = {}
    while len(done) < len(jobs):
        job, _started, replies = results.get(timeout=60)
        assert id(job) not in done, "a task's result arrived twice"
        done[id(job)] = replies
    for job in jobs:
        assert [reply[0] for reply in done[id(job)]] == ["h"] * 25
    assert victim not in workers.pids()
    assert workers.restarts == 1


def test_close_ends_every_worker(tmp_path: Path) -> None:
    pool = HashWorkers(2)
    pool.start()
    pids = pool.pids()
    pool.close()
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped already: no such child


def test_a_worker_ignores_sigterm_and_ends_when_its_stdin_closes() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "stampd.daemon.watch.dir_hash"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert worker.stdin is not None and worker.stdout is not None
    # A reply shows its signal handlers are in place (set before the first read).
    dir_hash.write_message(worker.stdin.fileno(), (0, []))
    assert dir_hash.read_message(worker.stdout.fileno())[1] == []
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert worker.poll() is None
    worker.stdin.close()
    assert worker.wait(timeout=10) == 0


def test_a_worker_imports_nothing_of_the_daemon_runtime() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stampd.daemon.watch.dir_hash"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    ours = {name for name in imported if name.startswith("stampd.")}
    assert ours <= {
        "stampd.daemon",
        "stampd.daemon.watch",
        "stampd.store",
        "stampd.store.errors",
        "stampd.store.files",
        "stampd.store.files.digest",
    }, ours
    assert not {"asyncio", "sqlite3", "click", "structlog", "httpx"} & imported


def test_a_sized_read_sees_a_file_that_shrank_or_grew(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", b"abcdef" * 1000)
    with path.open("rb") as handle:
        # fstat said 6,000 bytes; the file is truncated before the read: what was read counts.
        path.write_bytes(b"abc")
        digests = digest_fd_sized(handle.fileno(), 6000)
    assert (digests.size, digests.sha256) == (3, hashlib.sha256(b"abc").digest())
    data = os.urandom((1 << 20) + 1)
    path.write_bytes(data)
    with path.open("rb") as handle:
        digests = digest_fd_sized(handle.fileno(), len(data))
    assert (digests.size, digests.sha512) == (len(data), hashlib.sha512(data).digest())


def test_workers_that_cannot_start_leave_the_hashing_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installation where `python -m stampd.daemon.watch.dir_hash` cannot run.
    monkeypatch.setattr(hash_workers, "_COMMAND", (sys.executable, "-c", "raise SystemExit(3)"))
    pool = HashWorkers(2)
    pool.start()
    try:
        dev = tmp_path.stat().st_dev
        tree = _tree(tmp_path, 12, 5)
        results: queue.SimpleQueue[tuple[Job, int, list[Reply]]] = queue.SimpleQueue()
        jobs = [Job(task=(dev, [directory]), results=results) for directory in tree]
        done = _run(pool, jobs)
        for job in jobs:
            assert [reply[0] for reply in done[id(job)]] == ["h"] * 5
        # Given up after a few failed starts, not a restart (or three) per task.
        assert pool.restarts <= 2 * hash_workers.FAILED_STARTS
        late = Job(task=(dev, [tree[0]]), results=results)
        pool.submit(late)  # hashed at once, in this thread
        assert results.get_nowait()[0] is late
    finally:
        pool.close()


class _CountingInline(InlineHashing):
    """Hashes in the submitting thread, as hash_workers = 1 does, and keeps each task's size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def submit(self, job: Job) -> None:
        self.sizes.append(sum(len(items) for _directory, items in job.task[1]))
        super().submit(job)


def test_a_large_directory_is_cut_into_tasks_and_every_file_comes_out_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "watched"
    for number in range(300):
        _write(root / "big" / f"f{number:03}", f"{number}".encode())
    time.sleep(0.05)  # unchanged for longer than quiet (below): settled
    watch = WatchRuntime.of(
        WatchConfig(
            path=root,
            evidence=(),
            include=("**",),
            exclude=(),
            quiet=0.01,
            sidecars="adjacent",
            max_wait=3600.0,
        ),
        1,
    )
    watch.root_dev = root.stat().st_dev
    hashing = _CountingInline()
    handed: list[HashOutcome] = []
    batches = ScanBatches(
        watch,
        hashing,
        hand_over=lambda _u, outcomes: handed.extend(outcomes),
        stopping=lambda: False,
    )
    found = [
        (name, FileStat.of((root / "big" / name).lstat()))
        for name in sorted(os.listdir(root / "big"))
    ]
    batches.directory(str(root / "big"), found)
    batches.finish()
    assert max(hashing.sizes) <= TASK_FILES and sum(hashing.sizes) == 300
    # Every file comes out once, hashed, as a row of a SettledFiles with the walk's key.
    assert all(isinstance(o, SettledFiles) for o in handed)
    rows = sorted(row for o in handed if isinstance(o, SettledFiles) for row in o.rows)
    assert [row[0] for row in rows] == sorted(str(root / "big" / n) for n, _ in found)
    assert [FileStat(*row[2:7]) for row in rows] == [key for _n, key in found]
