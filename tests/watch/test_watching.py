"""System tests: `stampd run` on a real tree with real inotify, one test per write pattern.

Each final file must end with exactly one version with the right digest; temp names, partial
contents, symlinks, FIFOs and sockets must get none (reference/watching-and-service.md §1, §3).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stampd.store.files.pathnames import escape
from tests.conftest import require_tool
from tests.daemon_harness import RunningDaemon, sha256, wait_for


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    running = RunningDaemon(tmp_path).start()
    try:
        yield running
    finally:
        if running.proc is not None and running.proc.poll() is None:
            assert running.stop() == 0


def _only(daemon: RunningDaemon, expected: dict[Path, bytes]) -> None:
    """Exactly the expected files have versions, one each, with the right digest."""
    assert daemon.versions() == {str(path): [sha256(data)] for path, data in expected.items()}


def test_write_and_close(daemon: RunningDaemon) -> None:
    target = daemon.watched / "invoice.pdf"
    target.write_bytes(b"%PDF-1.7 invoice")
    daemon.settle_until({target: b"%PDF-1.7 invoice"})
    _only(daemon, {target: b"%PDF-1.7 invoice"})


def test_slow_writer_holding_the_descriptor_open(daemon: RunningDaemon) -> None:
    target = daemon.watched / "slow.log"
    with target.open("wb") as handle:
        for part in (b"first ", b"second ", b"third"):
            handle.write(part)
            handle.flush()
            time.sleep(1.0)  # longer than quiet: only the open descriptor says "not done"
    final = b"first second third"
    daemon.settle_until({target: final})
    _only(daemon, {target: final})


def test_atomic_save_over_an_existing_file(daemon: RunningDaemon) -> None:
    target = daemon.watched / "doc.txt"
    target.write_bytes(b"version 1")
    daemon.settle_until({target: b"version 1"})
    fd, temp = tempfile.mkstemp(dir=daemon.watched, prefix=".doc.txt.", suffix=".tmp")
    os.write(fd, b"version 2")
    os.fsync(fd)
    os.close(fd)
    os.replace(temp, target)
    daemon.settle_until({target: b"version 2"})
    assert daemon.versions() == {str(target): [sha256(b"version 1"), sha256(b"version 2")]}


def test_move_in_from_outside(daemon: RunningDaemon) -> None:
    outside = daemon.tmp / "outside.bin"
    outside.write_bytes(b"moved in")
    time.sleep(0.5)
    target = daemon.watched / "moved.bin"
    outside.rename(target)
    daemon.settle_until({target: b"moved in"})
    _only(daemon, {target: b"moved in"})


def test_cp_r_of_a_tree(daemon: RunningDaemon) -> None:
    source = daemon.tmp / "tree"
    (source / "sub" / "deeper").mkdir(parents=True)
    contents = {
        Path("a.txt"): b"a",
        Path("sub/b.txt"): b"b" * 10000,
        Path("sub/deeper/c.txt"): b"c",
    }
    for relative, data in contents.items():
        (source / relative).write_bytes(data)
    subprocess.run(["cp", "-r", str(source), str(daemon.watched / "copy")], check=True)
    expected = {daemon.watched / "copy" / rel: data for rel, data in contents.items()}
    daemon.settle_until(expected)
    _only(daemon, expected)


def test_hard_link(daemon: RunningDaemon) -> None:
    first = daemon.watched / "original.dat"
    first.write_bytes(b"linked content")
    daemon.settle_until({first: b"linked content"})
    second = daemon.watched / "link.dat"
    os.link(first, second)
    daemon.settle_until({first: b"linked content", second: b"linked content"})
    _only(daemon, {first: b"linked content", second: b"linked content"})


def test_rsync_style_temp_name_then_rename(daemon: RunningDaemon) -> None:
    temp = daemon.watched / ".report.csv.Xa81Qz"
    temp.write_bytes(b"partial")
    with temp.open("ab") as handle:
        handle.write(b" and complete")
    os.rename(temp, daemon.watched / "report.csv")
    expected = {daemon.watched / "report.csv": b"partial and complete"}
    daemon.settle_until(expected)
    _only(daemon, expected)


def test_o_tmpfile_then_linkat(daemon: RunningDaemon) -> None:
    fd = os.open(daemon.watched, os.O_TMPFILE | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"born anonymous")
        target = daemon.watched / "named.bin"
        # A dir fd makes CPython call linkat(..., AT_SYMLINK_FOLLOW) rather than link(); the
        # absolute /proc path makes the kernel ignore that fd.
        dir_fd = os.open(daemon.watched, os.O_DIRECTORY)
        try:
            os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=dir_fd, follow_symlinks=True)
        finally:
            os.close(dir_fd)
    finally:
        os.close(fd)
    daemon.settle_until({target: b"born anonymous"})
    _only(daemon, {target: b"born anonymous"})


def test_symlink_fifo_and_socket_are_ignored(daemon: RunningDaemon) -> None:
    real = daemon.tmp / "outside-target.txt"
    real.write_bytes(b"outside")
    (daemon.watched / "link.txt").symlink_to(real)
    os.mkfifo(daemon.watched / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(daemon.watched / "sock"))
    try:
        marker = daemon.watched / "marker.txt"
        marker.write_bytes(b"marker")  # settles after the others were created
        daemon.settle_until({marker: b"marker"})
        _only(daemon, {marker: b"marker"})
    finally:
        server.close()


def test_file_deleted_while_settling(daemon: RunningDaemon) -> None:
    doomed = daemon.watched / "doomed.txt"
    doomed.write_bytes(b"short-lived")
    doomed.unlink()
    marker = daemon.watched / "marker.txt"
    marker.write_bytes(b"marker")
    daemon.settle_until({marker: b"marker"})
    _only(daemon, {marker: b"marker"})


def test_file_changed_while_hashed(daemon: RunningDaemon) -> None:
    big = daemon.watched / "big.img"
    with big.open("wb") as handle:
        handle.truncate(1536 * 2**20)  # sparse: hashing takes ~2 s, writing it takes nothing
    wait_for(lambda: daemon.count("hash_started") >= 1, 30, "hashing to start", daemon)
    with big.open("ab") as handle:
        handle.write(b"tail written while stampd reads")
    daemon.wait_event("file_changed_while_hashing", timeout=30)
    final_digest = _sha256_of(big)
    wait_for(
        lambda: daemon.versions().get(str(big)) == [final_digest], 60, "the final version", daemon
    )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_unreadable_file_is_recorded_with_the_reason(tmp_path: Path) -> None:
    setpriv = require_tool("setpriv")
    # Root reads any file; without these capabilities it obeys file modes like anyone else.
    daemon = RunningDaemon(
        tmp_path,
        prefix=[setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"],
    )
    if os.geteuid() != 0:
        daemon.prefix = []
    daemon.start()
    try:
        secret = daemon.watched / "secret.bin"
        secret.write_bytes(b"classified")
        secret.chmod(0)
        wait_for(lambda: daemon.files().get(str(secret)) == "unreadable", 30, "unreadable", daemon)
        assert str(secret) not in daemon.versions()
        secret.chmod(0o644)  # a chmod changes ctime: the next scan retries it
        os.utime(secret)
        daemon.settle_until({secret: b"classified"})
    finally:
        daemon.stop()


def test_delete_marks_missing_and_keeps_history(daemon: RunningDaemon) -> None:
    target = daemon.watched / "gone.txt"
    target.write_bytes(b"here")
    daemon.settle_until({target: b"here"})
    target.unlink()
    wait_for(lambda: daemon.files().get(str(target)) == "missing", 30, "missing", daemon)
    assert daemon.versions() == {str(target): [sha256(b"here")]}


def test_rename_moves_the_row_without_a_new_version(daemon: RunningDaemon) -> None:
    old = daemon.watched / "old-name.txt"
    old.write_bytes(b"same content")
    daemon.settle_until({old: b"same content"})
    new = daemon.watched / "new-name.txt"
    old.rename(new)
    wait_for(lambda: str(new) in daemon.files(), 30, "the renamed row", daemon)
    time.sleep(1.0)
    assert daemon.versions() == {str(new): [sha256(b"same content")]}
    assert str(old) not in daemon.files()


def test_deleted_and_recreated_watch_root_is_watched_again(daemon: RunningDaemon) -> None:
    shutil.rmtree(daemon.watched)
    time.sleep(1.5)
    daemon.watched.mkdir()
    daemon.wait_event("watch_root_rewatched", timeout=30)
    target = daemon.watched / "after.txt"
    target.write_bytes(b"after the root came back")
    daemon.settle_until({target: b"after the root came back"})


def test_directory_moved_out_leaves_no_phantom_paths(daemon: RunningDaemon) -> None:
    inside = daemon.watched / "project"
    inside.mkdir()
    (inside / "a.txt").write_bytes(b"a")
    daemon.settle_until({inside / "a.txt": b"a"})
    outside = daemon.tmp / "project-moved-out"
    inside.rename(outside)
    time.sleep(1.0)  # the watch on the moved directory may still report under the old path
    (outside / "written-later.txt").write_bytes(b"outside now")
    marker = daemon.watched / "marker.txt"
    marker.write_bytes(b"marker")
    daemon.settle_until({marker: b"marker"})
    versions = daemon.versions()
    assert str(inside / "written-later.txt") not in versions
    assert daemon.files()[str(inside / "a.txt")] == "missing"


def test_a_name_that_is_not_utf8_is_recorded_and_renamed_like_any_other(
    daemon: RunningDaemon,
) -> None:
    raw = os.path.join(os.fsencode(daemon.watched), b"latin1-\xe9t\xe9.txt")
    bad = Path(os.fsdecode(raw))
    bad.write_bytes(b"a Latin-1 name from an old share")
    good = daemon.watched / "fine.txt"
    good.write_bytes(b"fine")
    # The index and the CLI hold the escaped form (store/files/pathnames.py).
    daemon.settle_until({Path(escape(bad)): b"a Latin-1 name from an old share", good: b"fine"})
    renamed = daemon.watched / "renamed-to-utf8.txt"
    bad.rename(renamed)
    wait_for(lambda: str(renamed) in daemon.versions(), 30, "the renamed row", daemon)
    assert daemon.files()[str(renamed)] == "present"
    assert escape(bad) not in daemon.files()  # the row moved: a rename keeps its history
    assert daemon.count("path_not_utf8") == 0


def test_slow_writer_is_not_taken_by_a_rescan_in_between(tmp_path: Path) -> None:
    # Rescans every second see the file unchanged for longer than `quiet` between writes;
    # only the settler knows (from events) that it is still open for writing.
    daemon = RunningDaemon(tmp_path, daemon_extra='rescan = "1s"\n').start()
    try:
        target = daemon.watched / "slow-during-rescans.log"
        with target.open("wb") as handle:
            for part in (b"one ", b"two ", b"three ", b"four"):
                handle.write(part)
                handle.flush()
                time.sleep(1.2)
        daemon.settle_until({target: b"one two three four"})
        assert daemon.count("scan_finished") >= 3
        _only(daemon, {target: b"one two three four"})
    finally:
        assert daemon.stop() == 0
