"""System tests: a new or moved-in directory is walked on its own, not the whole watch
(issue 10: the cost follows the change, not the tree), and what was written into it before
its inotify watch was placed is recorded all the same (watchdog #1278).

The walks are told apart by their ``scan_finished`` log events: a subtree walk names its
``subtree`` and counts only its own directories and files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import RunningDaemon, wait_for

#: Files recorded before each test, outside the directories the test creates.
BEFORE = 200


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    watched = tmp_path / "watched"
    old = {}
    for number in range(BEFORE):
        path = watched / f"old-{number // 20:02}" / f"f{number:03}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"old {number}".encode())
        old[path] = f"old {number}".encode()
    running = RunningDaemon(tmp_path, quiet="0.2s").start()
    try:
        running.settle_until(old)
        running.wait_event("scan_finished")
        yield running
    finally:
        if running.proc is not None and running.proc.poll() is None:
            assert running.stop() == 0


def _scans(daemon: RunningDaemon) -> list[dict[str, Any]]:
    return [e for e in list(daemon.events) if e.get("event") == "scan_finished"]


def _subtree_scans(daemon: RunningDaemon, subtree: Path) -> list[dict[str, Any]]:
    return [e for e in _scans(daemon) if e.get("subtree") == str(subtree)]


def _full_scans(daemon: RunningDaemon) -> int:
    return sum(1 for e in _scans(daemon) if e.get("subtree") is None)


def test_a_mkdir_walks_only_the_new_directory(daemon: RunningDaemon) -> None:
    new = daemon.watched / "new"
    new.mkdir()
    (new / "f.txt").write_bytes(b"in a new directory")
    daemon.settle_until({new / "f.txt": b"in a new directory"})
    wait_for(lambda: bool(_subtree_scans(daemon, new)), 15, "the walk of the new directory")
    walks = _subtree_scans(daemon, new)
    # One directory and at most its one file — not the 11 directories and 200 files.
    assert all(walk["directories"] == 1 and walk["files"] <= 1 for walk in walks)
    assert all(walk["missing"] == 0 for walk in walks)
    assert _full_scans(daemon) == 1  # the start-up scan, and no other
    status = daemon.cli("status", "--json")
    assert '"subtree_scans_done": ' in status.stdout
    files = daemon.files()
    assert sum(1 for state in files.values() if state == "present") == BEFORE + 1


def test_files_written_before_the_new_directory_is_watched_are_recorded(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """The #1278 race: `mkdir -p` and a write at once, and a prepared tree moved in (one
    event for the whole tree); every file is recorded by subtree walks alone."""
    subprocess.run(
        "mkdir -p a/b/c && echo x > a/b/c/f && mkdir -p a/b/d && echo y > a/b/d/g",
        shell=True,
        check=True,
        cwd=daemon.watched,
    )
    prepared = tmp_path / "prepared"
    expected = {
        daemon.watched / "a" / "b" / "c" / "f": b"x\n",
        daemon.watched / "a" / "b" / "d" / "g": b"y\n",
    }
    for depth in range(4):
        directory = prepared.joinpath(*[f"level{n}" for n in range(depth)])
        directory.mkdir(parents=True, exist_ok=True)
        for number in range(5):
            (directory / f"file{number}.txt").write_bytes(f"{depth}/{number}".encode())
    moved = daemon.watched / "moved-in"
    prepared.rename(moved)
    for path in moved.rglob("*.txt"):
        expected[path] = path.read_bytes()
    daemon.settle_until(expected)
    wait_for(lambda: bool(_subtree_scans(daemon, moved)), 15, "the walk of the moved tree")
    assert _subtree_scans(daemon, moved)[0]["directories"] == 4
    assert _full_scans(daemon) == 1


def test_a_directory_renamed_inside_the_watch_keeps_its_rows(daemon: RunningDaemon) -> None:
    source = daemon.watched / "old-03"
    names = sorted(path.name for path in source.iterdir())
    before = daemon.versions()
    target = daemon.watched / "renamed"
    source.rename(target)

    def moved() -> bool:
        files = daemon.files()
        return all(files.get(str(target / name)) == "present" for name in names)

    wait_for(moved, 30, "the renamed rows", daemon)
    wait_for(lambda: bool(_subtree_scans(daemon, target)), 15, "the walk of the renamed tree")
    files = daemon.files()
    versions = daemon.versions()
    for name in names:
        # The row moved with its history: the same single version, no new one.
        assert versions[str(target / name)] == before[str(source / name)]
        assert str(source / name) not in files
    assert _full_scans(daemon) == 1
    outside = [path for path, state in files.items() if "/old-" in path and state != "present"]
    assert outside == []


def test_a_rescan_is_still_a_full_scan(daemon: RunningDaemon) -> None:
    assert daemon.cli("rescan").returncode == 0
    wait_for(lambda: _full_scans(daemon) == 2, 30, "the full rescan", daemon)
    last = _scans(daemon)[-1]
    assert last["files"] == BEFORE and last["directories"] == BEFORE // 20 + 1
