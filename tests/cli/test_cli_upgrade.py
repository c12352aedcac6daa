"""`stampd upgrade` against a running daemon, and the pending anchors `stampd status` shows.

The index is prepared before the daemon starts with the rows an `.ots` proof waiting for its
block leaves (tests/store/test_upgrade_jobs.py `pending_anchor`: a pending proof and its
`upgrade` job due hours later), under a directory that is not a watch, so the daemon's scans
leave them alone. The daemon is a real `stampd run` over its control socket.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stampd.daemon.cli.exit_codes import ExitCode
from stampd.store.index.database import Index, index_path
from stampd.store.index.times import format_time, parse_time
from tests.daemon_harness import STAMPD, RunningDaemon
from tests.store.test_upgrade_jobs import pending_anchor


def _prepare(state: Path, root: Path, names: list[str], *, upgrade_in: timedelta) -> list[int]:
    state.mkdir(mode=0o750, exist_ok=True)
    with Index.open(index_path(state)) as index:
        watch = index.ensure_watch(root)
        return [pending_anchor(index, watch, root / name, upgrade_in=upgrade_in) for name in names]


def _due_times(state: Path) -> dict[int, datetime]:
    conn = sqlite3.connect(f"{index_path(state).as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, next_try_at FROM jobs WHERE action = 'upgrade' AND state = 'pending'"
        ).fetchall()
    finally:
        conn.close()
    times = {int(job): parse_time(str(at)) for job, at in rows}
    return {job: at for job, at in times.items() if at is not None}


def test_upgrade_makes_every_pending_upgrade_due_now(tmp_path: Path) -> None:
    root = tmp_path / "earlier"
    jobs = _prepare(tmp_path / "state", root, ["a.txt", "b.txt"], upgrade_in=timedelta(hours=6))
    daemon = RunningDaemon(tmp_path).start()
    try:
        before = datetime.now(UTC)
        result = daemon.cli("upgrade")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "2 pending upgrade jobs made due now\n"
        # This configuration runs no kind with upgrades: the operator is told why nothing moves.
        assert "no evidence kind with upgrades runs" in result.stderr
        due = _due_times(tmp_path / "state")
        assert set(due) == set(jobs)
        assert all(
            at <= datetime.now(UTC) and at >= before - timedelta(seconds=1) for at in due.values()
        )

        again = daemon.cli("upgrade", "--json")
        assert again.returncode == 0, again.stderr
        reply = json.loads(again.stdout)
        assert (reply["made_due"], reply["already_due"], reply["paths"]) == (0, 2, None)
        assert (reply["running"], reply["paused"]) == ([], False)
    finally:
        assert daemon.stop() == 0


def test_upgrade_of_paths_touches_only_their_jobs(tmp_path: Path) -> None:
    root = tmp_path / "earlier"
    first, second = _prepare(
        tmp_path / "state", root, ["keep/a.txt", "other/b.txt"], upgrade_in=timedelta(hours=6)
    )
    daemon = RunningDaemon(tmp_path).start()
    try:
        result = daemon.cli("upgrade", "--json", str(root / "keep"))
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        assert (reply["made_due"], reply["paths"]) == (1, [str(root / "keep")])
        due = _due_times(tmp_path / "state")
        assert due[first] <= datetime.now(UTC) < due[second]

        none = daemon.cli("upgrade", str(root / "absent.txt"))
        assert none.returncode == 0, none.stderr
        assert none.stdout == f"no pending upgrades of {root / 'absent.txt'}: nothing to do\n"
    finally:
        assert daemon.stop() == 0


def test_upgrade_without_a_daemon_says_so_and_exits_3(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path)  # configured, never started
    result = subprocess.run(
        [STAMPD, "--config", str(daemon.config), "upgrade", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == ExitCode.DAEMON_UNREACHABLE
    document = json.loads(result.stdout)
    assert document["error"]["error_class"] == "daemon_unreachable"


def test_status_shows_pending_anchors_and_the_age_of_the_oldest(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _prepare(state, tmp_path / "earlier", ["a.txt", "b.txt"], upgrade_in=timedelta(hours=6))
    made = datetime.now(UTC) - timedelta(hours=5, minutes=30)
    with Index.open(index_path(state)) as index, index.write() as conn:
        conn.execute("UPDATE proofs SET created_at = ? WHERE id = 1", (format_time(made),))
    daemon = RunningDaemon(tmp_path)  # not running: status reads the index all the same
    result = subprocess.run(
        [STAMPD, "--config", str(daemon.config), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == ExitCode.DAEMON_UNREACHABLE
    assert (
        f"anchors:  2 ots pending, the oldest waiting 5h 30m (since {format_time(made)})"
        in result.stdout
    )
    as_json = subprocess.run(
        [STAMPD, "--config", str(daemon.config), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ots = json.loads(as_json.stdout)["summary"]["pending_anchors"]["ots"]
    assert (ots["count"], ots["oldest_at"]) == (2, format_time(made))
    assert 5.5 * 3600 <= ots["oldest_age_s"] < 5.5 * 3600 + 120
