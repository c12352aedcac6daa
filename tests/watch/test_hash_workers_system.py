"""`stampd run` with hash worker processes (daemon.hash_workers): a worker killed in the middle
of a first scan loses no file and records none twice; SIGTERM ends the workers with the
daemon; a restart over an unchanged tree hashes nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.daemon_harness import RunningDaemon, wait_for

HOUR_AGO = time.time() - 3600


def _tree(root: Path, directories: int, files: int) -> set[str]:
    paths = set()
    for d in range(directories):
        directory = root / f"d{d:03}"
        directory.mkdir()
        for f in range(files):
            path = directory / f"f{f:03}.dat"
            path.write_bytes(f"{d}/{f}\n".encode() * 100)
            # Older than the racy window: a restart has nothing to hash again.
            os.utime(path, (HOUR_AGO, HOUR_AGO))
            paths.add(str(path))
    return paths


def _workers(pid: int) -> list[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        children.update(int(word) for word in text.split())
    return sorted(
        child
        for child in children
        if b"stampd.daemon.watch.dir_hash" in Path(f"/proc/{child}/cmdline").read_bytes()
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_worker_killed_during_the_first_scan_loses_no_file_and_records_none_twice(
    tmp_path: Path,
) -> None:
    daemon = RunningDaemon(tmp_path, quiet="0.2s", daemon_extra="hash_workers = 2\n")
    paths = _tree(daemon.watched, 150, 100)
    daemon.start()
    try:
        assert daemon.proc is not None
        workers = _workers(daemon.proc.pid)
        assert len(workers) == 2
        # The scan is under way once the first versions are in: kill a worker then.
        wait_for(lambda: len(daemon.versions()) > 0, 60, "the first versions", daemon)
        os.kill(workers[0], signal.SIGKILL)
        daemon.wait_event("scan_finished", timeout=120)
        wait_for(lambda: set(daemon.versions()) >= paths, 60, "every file recorded", daemon)
        time.sleep(1.0)  # a late duplicate would show now
        versions = daemon.versions()
        assert set(versions) == paths
        assert all(len(shas) == 1 for shas in versions.values())
        assert daemon.count("hash_worker_died") == 1
        replaced = _workers(daemon.proc.pid)
        assert len(replaced) == 2 and workers[0] not in replaced
    finally:
        assert daemon.stop() == 0


def test_sigterm_ends_the_workers_and_a_restart_over_the_unchanged_tree_hashes_nothing(
    tmp_path: Path,
) -> None:
    daemon = RunningDaemon(tmp_path, quiet="0.2s", daemon_extra="hash_workers = 2\n")
    paths = _tree(daemon.watched, 5, 40)
    daemon.start()
    assert daemon.proc is not None
    workers = _workers(daemon.proc.pid)
    daemon.wait_event("scan_finished")
    wait_for(lambda: set(daemon.versions()) == paths, 30, "every file recorded", daemon)
    assert daemon.stop(signal.SIGTERM) == 0
    assert daemon.count("daemon_stopped") == 1
    assert not any(_alive(pid) for pid in workers)

    again = RunningDaemon(tmp_path, quiet="0.2s", daemon_extra="hash_workers = 2\n")
    again.start()
    try:
        again.wait_event("scan_finished")
        [finished] = [e for e in again.events if e.get("event") == "scan_finished"]
        assert (finished["files"], finished["candidates"]) == (len(paths), 0)
        assert all(len(shas) == 1 for shas in again.versions().values())
    finally:
        assert again.stop() == 0
