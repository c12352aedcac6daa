"""A killed run's temp files are gone after the next start; a live write's and the user's stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.daemon_harness import RunningDaemon, wait_for

TOKEN = "0123456789abcdef"


def _plant(path: Path, *, age: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a sidecar")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_the_next_start_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path)
    watched, state = daemon.watched, daemon.state
    (watched / "a.txt").write_bytes(b"a")
    left = [
        _plant(watched / f".a.txt.tsr.stampd-{TOKEN}.tmp", age=600),
        _plant(watched / "sub" / f".b.txt.tsr.stampd-{TOKEN}.tmp", age=600),
        _plant(state / "archive" / "ab" / f".{'ab' * 32}.tsr.stampd-{TOKEN}.tmp", age=600),
    ]
    users = _plant(watched / ".a.txt.stampd-draft.tmp", age=600)  # not a name stampd writes
    daemon.start()
    try:
        daemon.wait_event("scan_finished")
        wait_for(lambda: not any(p.exists() for p in left), 10, "leftovers removed", daemon)
        # Written while this daemon runs: could be a write in flight, so it stays.
        live = _plant(watched / f".c.txt.tsr.stampd-{TOKEN}.tmp", age=0)
        daemon.cli("rescan")
        assert live.exists()
    finally:
        assert daemon.stop() == 0
    assert users.read_bytes() == b"half a sidecar"
    removed = [e for e in daemon.events if e.get("event") == "scan_finished"]
    assert sum(e.get("temp_files_removed", 0) for e in removed) == 2
    assert daemon.count("stale_temp_files_removed") == 1
