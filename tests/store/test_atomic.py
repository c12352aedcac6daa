"""store/files/atomic.py: symlink-proof, all-or-nothing writes (DESIGN rule 4, reference §5.3)."""

from __future__ import annotations

import errno
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stampd.store.errors import FileAccessError, SidecarExistsError, UnsafePathError
from stampd.store.files import atomic
from stampd.store.files.atomic import directory, open_directory, read_file, read_path, write_atomic
from stampd.store.files.sidecar import is_ours

TOKEN = "0123456789abcdef"


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def dir_fd(tmp_path: Path) -> Iterator[int]:
    with directory(tmp_path) as fd:
        yield fd


def entries(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


# --- writing -----------------------------------------------------------------------------


def test_write_creates_file_with_exact_bytes_and_no_leftovers(tmp_path: Path, dir_fd: int) -> None:
    write_atomic(dir_fd, "f.tsr", b"proof")
    assert (tmp_path / "f.tsr").read_bytes() == b"proof"
    assert entries(tmp_path) == {"f.tsr"}


@pytest.mark.usefixtures("strict_umask")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o444])
def test_mode_is_exactly_the_requested_one_whatever_the_umask(
    tmp_path: Path, dir_fd: int, mode: int
) -> None:
    write_atomic(dir_fd, "f.tsr", b"proof", mode=mode)
    assert stat.S_IMODE((tmp_path / "f.tsr").stat().st_mode) == mode


def test_short_writes_are_completed(
    tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, buf: real_write(fd, bytes(buf[:3])))
    data = bytes(range(256)) * 4
    write_atomic(dir_fd, "f.tsr", data)
    monkeypatch.undo()
    assert (tmp_path / "f.tsr").read_bytes() == data


def test_replace_swaps_content_atomically(tmp_path: Path, dir_fd: int) -> None:
    target = tmp_path / "f.ots"
    write_atomic(dir_fd, "f.ots", b"old proof")
    old_ino = target.stat().st_ino
    with target.open("rb") as reader:
        write_atomic(dir_fd, "f.ots", b"new, longer proof", replace=True)
        # A reader that had the old file open still sees the old bytes: the new content
        # arrived as a new inode by rename, never by writing into the existing file.
        assert reader.read() == b"old proof"
    assert target.read_bytes() == b"new, longer proof"
    assert target.stat().st_ino != old_ino
    assert entries(tmp_path) == {"f.ots"}


def test_no_replace_refuses_existing_file_and_keeps_its_bytes(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "f.tsr").write_bytes(b"first")
    with pytest.raises(SidecarExistsError, match="already exists"):
        write_atomic(dir_fd, "f.tsr", b"second", replace=False)
    assert (tmp_path / "f.tsr").read_bytes() == b"first"
    assert entries(tmp_path) == {"f.tsr"}


def test_no_replace_creates_a_missing_file(tmp_path: Path, dir_fd: int) -> None:
    write_atomic(dir_fd, "f.tsr", b"first", replace=False)
    assert (tmp_path / "f.tsr").read_bytes() == b"first"
    assert (tmp_path / "f.tsr").stat().st_nlink == 1  # the temp link is gone
    assert entries(tmp_path) == {"f.tsr"}


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_no_replace_without_hard_links_falls_back_to_check_and_rename(
    tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_links)
    write_atomic(dir_fd, "a.tsr", b"new", replace=False)
    assert (tmp_path / "a.tsr").read_bytes() == b"new"
    with pytest.raises(SidecarExistsError):
        write_atomic(dir_fd, "a.tsr", b"other", replace=False)
    assert (tmp_path / "a.tsr").read_bytes() == b"new"
    assert entries(tmp_path) == {"a.tsr"}


@pytest.mark.parametrize("replace", [True, False])
def test_refuses_symlink_at_target_and_leaves_it_alone(
    tmp_path: Path, dir_fd: int, replace: bool
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "f.tsr").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        write_atomic(dir_fd, "f.tsr", b"proof", replace=replace)
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "f.tsr").is_symlink()
    assert os.readlink(tmp_path / "f.tsr") == str(victim)
    assert entries(tmp_path) == {"victim", "f.tsr"}


def test_refuses_dangling_symlink_at_target(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "f.tsr").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafePathError):
        write_atomic(dir_fd, "f.tsr", b"proof")
    assert not (tmp_path / "nowhere").exists()
    assert entries(tmp_path) == {"f.tsr"}


def test_refuses_directory_at_target(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "f.tsr").mkdir()
    with pytest.raises(UnsafePathError, match="not a regular file"):
        write_atomic(dir_fd, "f.tsr", b"proof")
    assert (tmp_path / "f.tsr").is_dir()
    assert entries(tmp_path) == {"f.tsr"}


@pytest.mark.parametrize("dangling", [False, True])
def test_refuses_symlink_planted_at_temp_name(
    tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch, dangling: bool
) -> None:
    monkeypatch.setattr(atomic, "_temp_token", lambda: TOKEN)
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"precious")
    planted = tmp_path / f".f.tsr.stampd-{TOKEN}.tmp"
    planted.symlink_to(victim)
    with pytest.raises(UnsafePathError, match="planted"):
        write_atomic(dir_fd, "f.tsr", b"proof")
    if dangling:
        assert not victim.exists()  # O_EXCL|O_NOFOLLOW: the link was not followed to create it
    else:
        assert victim.read_bytes() == b"precious"
    assert planted.is_symlink()
    assert not (tmp_path / "f.tsr").exists()


def test_refuses_file_planted_at_temp_name(
    tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "_temp_token", lambda: TOKEN)
    planted = tmp_path / f".f.tsr.stampd-{TOKEN}.tmp"
    planted.write_bytes(b"someone else's")
    with pytest.raises(UnsafePathError):
        write_atomic(dir_fd, "f.tsr", b"proof")
    assert planted.read_bytes() == b"someone else's"
    assert not (tmp_path / "f.tsr").exists()


def failing(exc: BaseException) -> Callable[..., None]:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise exc

    return fail


@pytest.mark.parametrize(
    ("function", "exc", "expected"),
    [
        ("fsync", OSError(errno.EIO, "Input/output error"), FileAccessError),
        ("fsync", KeyboardInterrupt(), KeyboardInterrupt),
        ("fchmod", OSError(errno.EPERM, "Operation not permitted"), FileAccessError),
        ("rename", OSError(errno.EIO, "Input/output error"), FileAccessError),
        ("rename", KeyboardInterrupt(), KeyboardInterrupt),
        ("write", OSError(errno.ENOSPC, "No space left on device"), FileAccessError),
    ],
)
def test_failure_before_publishing_leaves_no_temp_and_old_content(
    tmp_path: Path,
    dir_fd: int,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    exc: BaseException,
    expected: type[BaseException],
) -> None:
    write_atomic(dir_fd, "f.tsr", b"previous proof")
    monkeypatch.setattr(os, function, failing(exc))
    with pytest.raises(expected):
        write_atomic(dir_fd, "f.tsr", b"new proof", replace=True)
    monkeypatch.undo()
    assert (tmp_path / "f.tsr").read_bytes() == b"previous proof"
    assert entries(tmp_path) == {"f.tsr"}


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_failed_link_leaves_no_temp_and_no_target(
    tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    monkeypatch.setattr(os, "link", failing(exc))
    with pytest.raises((FileAccessError, KeyboardInterrupt)):
        write_atomic(dir_fd, "f.tsr", b"proof", replace=False)
    monkeypatch.undo()
    assert entries(tmp_path) == set()


@pytest.mark.parametrize(
    ("code", "hint_part"),
    [
        (errno.ENOSPC, "the filesystem is full; free space and stampd will retry"),
        (errno.EACCES, "write access"),
        (errno.EROFS, "read-only"),
    ],
)
def test_cannot_create_temp_gives_clear_error(
    tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch, code: int, hint_part: str
) -> None:
    # We run as root, which ignores permissions, so the refusal is injected at open().
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(FileAccessError) as info:
        write_atomic(dir_fd, "f.tsr", b"proof")
    monkeypatch.undo()
    err = info.value
    assert err.message == f"cannot write {tmp_path / 'f.tsr'}: {os.strerror(code)}"
    assert err.hint is not None
    assert hint_part in err.hint
    assert err.to_dict()["error_class"] == "io"
    assert entries(tmp_path) == set()


def test_long_name_gets_a_temp_name_within_name_max(tmp_path: Path, dir_fd: int) -> None:
    name = "é" * 125 + ".tsr"  # 254 bytes in UTF-8: valid, but name + temp suffix is not
    tmp = atomic._temp_name(name)
    assert len(os.fsencode(tmp)) <= 255
    assert is_ours(tmp)
    write_atomic(dir_fd, name, b"proof")
    assert (tmp_path / name).read_bytes() == b"proof"
    assert entries(tmp_path) == {name}


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\0b"])
def test_rejects_names_that_are_not_plain(dir_fd: int, name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        write_atomic(dir_fd, name, b"proof")


# --- directories -------------------------------------------------------------------------


def test_open_directory_returns_fd_of_that_directory(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    fd = open_directory(tmp_path / "a" / "b")
    try:
        assert os.fstat(fd).st_ino == (tmp_path / "a" / "b").stat().st_ino
    finally:
        os.close(fd)


@pytest.mark.parametrize("create", [False, True])
def test_open_directory_refuses_symlinked_component(tmp_path: Path, create: bool) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError, match=f"{tmp_path / 'link'} is a symlink"):
        open_directory(tmp_path / "link" / "sub", create=create)
    with pytest.raises(UnsafePathError, match="symlink"):
        open_directory(tmp_path / "link", create=create)
    assert entries(tmp_path / "real") == {"sub"}


def test_open_directory_refuses_file_component(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UnsafePathError, match="not a directory"):
        open_directory(tmp_path / "file" / "sub", create=True)


def test_open_directory_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match="does not exist"):
        open_directory(tmp_path / "missing" / "deeper")
    assert not (tmp_path / "missing").exists()


@pytest.mark.usefixtures("strict_umask")
def test_open_directory_creates_missing_components_with_mode(tmp_path: Path) -> None:
    with directory(tmp_path / "x" / "y" / "z", create=True) as fd:
        write_atomic(fd, "f", b"data")
    assert (tmp_path / "x" / "y" / "z" / "f").read_bytes() == b"data"
    for path in (tmp_path / "x", tmp_path / "x" / "y", tmp_path / "x" / "y" / "z"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_open_directory_tolerates_a_concurrent_mkdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkdir = os.mkdir

    def racing_mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        real_mkdir(path, mode, **kwargs)  # another process wins the race ...
        raise FileExistsError(errno.EEXIST, "File exists", path)  # ... and we see EEXIST

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    with directory(tmp_path / "new", create=True) as fd:
        assert os.fstat(fd).st_ino == (tmp_path / "new").stat().st_ino


@pytest.mark.parametrize("path", [Path("relative/dir"), Path("/tmp/../etc")])
def test_open_directory_rejects_non_canonical_paths(path: Path) -> None:
    with pytest.raises(ValueError, match="must"):
        open_directory(path)


# --- reading -----------------------------------------------------------------------------


def test_read_file_reads_regular_file(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert read_file(dir_fd, "f", max_bytes=10) == b"x" * 10


def test_read_file_refuses_too_large(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(FileAccessError, match="10-byte limit"):
        read_file(dir_fd, "f", max_bytes=10)


def test_read_file_refuses_symlink(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "f").symlink_to(tmp_path / "target")
    with pytest.raises(UnsafePathError, match="symlink"):
        read_file(dir_fd, "f", max_bytes=100)


@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_read_file_refuses_non_regular(tmp_path: Path, dir_fd: int, kind: str) -> None:
    if kind == "dir":
        (tmp_path / "f").mkdir()
    else:
        os.mkfifo(tmp_path / "f")  # O_NONBLOCK: must fail fast, not wait for a writer

    def blocked(signum: int, frame: object) -> None:
        raise TimeoutError("read_file blocked opening a FIFO")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(5)
    try:
        with pytest.raises(UnsafePathError, match="not a regular file"):
            read_file(dir_fd, "f", max_bytes=100)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_read_file_missing_is_an_access_error(dir_fd: int) -> None:
    with pytest.raises(FileAccessError, match="does not exist"):
        read_file(dir_fd, "missing", max_bytes=100)


def test_read_path_returns_none_when_absent(tmp_path: Path) -> None:
    assert read_path(tmp_path / "missing", max_bytes=100) is None
    assert read_path(tmp_path / "no" / "dir" / "f", max_bytes=100) is None
    (tmp_path / "f").write_bytes(b"here")
    assert read_path(tmp_path / "f", max_bytes=100) == b"here"


def test_read_path_refuses_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"here")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError):
        read_path(tmp_path / "link" / "f", max_bytes=100)
