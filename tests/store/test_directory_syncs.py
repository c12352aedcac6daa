"""DirectorySyncs: many renames into one directory made durable by one fsync of it
(store/files/atomic.py; DESIGN rule 1 holds once ``sync()`` has returned).

fsync is observed, not replaced: a wrapper counts the calls on directories and passes each
one to the real os.fsync.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from stampd.store.errors import FileAccessError
from stampd.store.files.atomic import DirectorySyncs, directory, write_atomic


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def count_directory_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every fsync of a directory from now on, as (st_dev, st_ino), in order."""
    seen: list[tuple[int, int]] = []
    real: Callable[[int], None] = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            seen.append((st.st_dev, st.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def test_many_renames_into_one_directory_share_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = count_directory_fsyncs(monkeypatch)
    syncs = DirectorySyncs()
    with directory(tmp_path) as dir_fd:
        for number in range(10):
            write_atomic(dir_fd, f"f{number}.ots", b"proof %d" % number, syncs=syncs)
    assert seen == []  # nothing counts as durable yet: the caller has not synced
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f{n}.ots" for n in range(10))
    syncs.sync()
    assert seen == [identity(tmp_path)]
    syncs.sync()  # nothing added since: nothing synced again
    assert seen == [identity(tmp_path)]


def test_without_syncs_each_write_syncs_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = count_directory_fsyncs(monkeypatch)
    with directory(tmp_path) as dir_fd:
        for number in range(3):
            write_atomic(dir_fd, f"f{number}.ots", b"proof")
    assert seen == [identity(tmp_path)] * 3


def test_the_directory_held_is_the_one_written_even_if_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "first"
    first.mkdir()
    syncs = DirectorySyncs()
    with directory(first) as dir_fd:
        write_atomic(dir_fd, "a.ots", b"proof", syncs=syncs)
    before = identity(first)
    first.rename(tmp_path / "moved")
    (tmp_path / "first").mkdir()  # another directory now has the old name
    seen = count_directory_fsyncs(monkeypatch)
    syncs.sync()
    assert seen == [before]


def test_at_most_limit_directories_are_held_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = [tmp_path / f"d{number}" for number in range(5)]
    for folder in folders:
        folder.mkdir()
    seen = count_directory_fsyncs(monkeypatch)
    baseline = open_fds()
    syncs = DirectorySyncs(limit=2)
    for folder in folders:
        with directory(folder) as dir_fd:
            write_atomic(dir_fd, "a.ots", b"proof", syncs=syncs)
    assert open_fds() == baseline + 2
    # Beyond the limit a directory is synced at once, so every one is synced exactly once.
    assert seen == [identity(folder) for folder in folders[2:]]
    syncs.sync()
    assert open_fds() == baseline
    assert sorted(seen) == sorted(identity(folder) for folder in folders)


def test_close_forgets_without_syncing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = count_directory_fsyncs(monkeypatch)
    baseline = open_fds()
    syncs = DirectorySyncs()
    with directory(tmp_path) as dir_fd:
        write_atomic(dir_fd, "a.ots", b"proof", syncs=syncs)
    syncs.close()
    assert open_fds() == baseline and seen == []


def test_a_failed_directory_fsync_is_an_access_error_and_closes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = open_fds()
    syncs = DirectorySyncs()
    with directory(tmp_path) as dir_fd:
        write_atomic(dir_fd, "a.ots", b"proof", syncs=syncs)

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(FileAccessError, match="cannot sync the directory") as raised:
        syncs.sync()
    assert "journalctl -k" in (raised.value.hint or "")
    assert open_fds() == baseline
