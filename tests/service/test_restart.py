"""System test: kill -9 in the middle of a 5,000-file drop, change the tree while stampd is
down, restart, and every file is recorded exactly once with its current digest."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.daemon_harness import RunningDaemon, sha256, wait_for

FILES = 5000


def test_kill_9_during_a_drop_then_changes_while_down(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path, quiet="0.2s").start()
    drop = daemon.watched / "drop"
    drop.mkdir()
    contents = {}
    for number in range(FILES):
        path = drop / f"{number // 500:02}" / f"file-{number:05}.txt"
        path.parent.mkdir(exist_ok=True)
        data = f"record {number}\n".encode() * 3
        path.write_bytes(data)
        contents[path] = data
    wait_for(lambda: sum(map(len, daemon.versions().values())) >= 500, 60, "a first batch", daemon)
    daemon.kill()
    recorded_before = daemon.versions()
    assert 0 < len(recorded_before) < FILES, "the kill must land in the middle of the drop"

    # While stampd is down: add, change and delete files.
    paths = sorted(contents)
    for path in paths[:20]:  # changed
        contents[path] = b"changed while down " + path.name.encode()
        path.write_bytes(contents[path])
    for path in paths[20:40]:  # deleted
        path.unlink()
        del contents[path]
    for number in range(50):  # added
        path = drop / "added" / f"new-{number}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"added {number}".encode())
        contents[path] = f"added {number}".encode()

    restarted = RunningDaemon(tmp_path, quiet="0.2s").start()
    try:
        restarted.settle_until(contents, timeout=120)
        versions = restarted.versions()
        files = restarted.files()
        for path, data in contents.items():
            history = versions[str(path)]
            assert history[-1] == sha256(data), path
            assert len(history) == len(set(history)), f"{path} recorded twice: {history}"
            assert files[str(path)] == "present"
        for path in paths[20:40]:
            assert str(path) not in versions or files[str(path)] == "missing"
        # Unchanged files recorded before the kill were not hashed into a second version.
        for path in paths[40:]:
            assert len(versions[str(path)]) == 1, path
        assert not list(tmp_path.rglob("*.stampd-*.tmp"))
    finally:
        assert restarted.stop() == 0
    assert os.path.exists(tmp_path / "state" / "index.sqlite")


def test_sigterm_mid_work_stops_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path, quiet="0.2s").start()
    contents = {}
    for number in range(2000):
        path = daemon.watched / f"d{number // 200}" / f"f{number}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"content {number}".encode())
        contents[path] = f"content {number}".encode()
    wait_for(lambda: sum(map(len, daemon.versions().values())) >= 200, 60, "some versions", daemon)
    assert daemon.stop() == 0  # SIGTERM while settling, hashing and recording
    assert daemon.count("daemon_stopped") == 1
    db = tmp_path / "state" / "index.sqlite"
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL is checkpointed on stop"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()

    restarted = RunningDaemon(tmp_path, quiet="0.2s").start()
    try:
        restarted.settle_until(contents, timeout=120)
        assert all(len(history) == 1 for history in restarted.versions().values())
    finally:
        assert restarted.stop() == 0
