"""`stampd run` with `evidence = ["ots"]` against two fake calendars and a fake bitcoind.

500 files dropped at once become merkle batches (at most one `/digest` request per calendar
per batch window, not one per file), each gets a pending `FILE.ots` that the real `ots`
client accepts; once the calendars "mine", `stampd upgrade` completes every proof in place
(the pending ones stay in the archive) and both `ots verify` and `stampd verify` say the
block. A `kill -9` while stamping loses no proof and leaves no half file.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stampd.daemon.evidence.ots import WINDOW_S
from tests.daemon_harness import RunningDaemon, wait_for
from tests.evidence.test_fake_calendar import run_ots
from tests.fake_bitcoind import FakeBitcoind
from tests.fake_calendar import FakeCalendar


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as node:
        yield node


@pytest.fixture
def calendars(bitcoind: FakeBitcoind) -> Iterator[tuple[FakeCalendar, FakeCalendar]]:
    with FakeCalendar(bitcoind) as first, FakeCalendar(bitcoind) as second:
        yield first, second


def _daemon(
    tmp_path: Path,
    calendars: tuple[FakeCalendar, ...],
    bitcoind: FakeBitcoind,
    *,
    min_replies: int = 2,
    retry: str = "30s",
) -> RunningDaemon:
    secret = tmp_path / "bitcoin.secret"
    secret.write_text("p\n")
    secret.chmod(0o600)
    urls = ", ".join(f'"{calendar.url}"' for calendar in calendars)
    anchor = (
        f'[anchor]\ncalendars = [{urls}]\nmin_replies = {min_replies}\ntimeout = "2s"\n'
        f'retry = "{retry}"\nretry_max = "{retry}"\n'
        'upgrade_after = "1h"\nupgrade_max = "24h"\nallow = []\n'
        f'[anchor.bitcoin]\nurl = "{bitcoind.url}"\nusername = "u"\nsecret_file = "{secret}"\n'
    )
    return RunningDaemon(tmp_path, evidence='["ots"]', extra=anchor)


def _drop(watched: Path, count: int) -> list[Path]:
    paths = []
    for n in range(count):
        path = watched / f"record-{n:03}.txt"
        path.write_text(f"record {n}\n")
        paths.append(path)
    return paths


def _proofs(daemon: RunningDaemon) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{daemon.state / 'index.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT status, COUNT(*) FROM proofs WHERE kind = 'ots' GROUP BY status"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}  # not created yet
    finally:
        conn.close()
    return dict(rows)


def _leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_500_files_are_batched_pending_then_upgraded_and_verified(
    tmp_path: Path, calendars: tuple[FakeCalendar, FakeCalendar], bitcoind: FakeBitcoind
) -> None:
    daemon = _daemon(tmp_path, calendars, bitcoind).start()
    try:
        started = time.monotonic()
        paths = _drop(daemon.watched, 500)
        wait_for(lambda: _proofs(daemon) == {"pending": 500}, 120, "500 pending proofs", daemon)
        # At most one calendar request per batch window (daemon/evidence/ots.py WINDOW_S),
        # never one per file: the windows that can have passed bound the requests.
        windows = math.ceil((time.monotonic() - started) / WINDOW_S) + 1
        submitted = [calendar.requests["digest"] for calendar in calendars]
        assert submitted[0] == submitted[1] and 1 <= submitted[0] <= windows, (submitted, windows)
        assert submitted[0] <= 500 * 0.05
        for path in paths[:3]:
            rc, out = run_ots(daemon.watched, "--no-cache", "info", f"{path.name}.ots")
            assert rc == 0, out
            assert all(calendar.url in out for calendar in calendars)
        pending_sidecar = (daemon.watched / f"{paths[0].name}.ots").read_bytes()

        for calendar in calendars:
            calendar.mine()
        asked = daemon.cli("upgrade", "--json")
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["made_due"] == 500
        wait_for(lambda: _proofs(daemon) == {"complete": 500}, 180, "500 upgraded proofs", daemon)
        verified = daemon.cli("verify", "--json", str(paths[0]))
    finally:
        assert daemon.stop() == 0
    upgraded = (daemon.watched / f"{paths[0].name}.ots").read_bytes()
    assert upgraded != pending_sidecar
    # Upgrading only adds: the pending proof it replaced is kept in the archive (rule 6).
    archived = {p.read_bytes() for p in (daemon.state / "archive").rglob("*.ots")}
    assert {pending_sidecar, upgraded} <= archived
    whitelist = [arg for calendar in calendars for arg in ("-l", calendar.url)]
    rc, out = run_ots(
        daemon.watched,
        "--no-cache",
        "--no-default-whitelist",
        *whitelist,
        "--bitcoin-node",
        bitcoind.url_with(),
        "verify",
        f"{paths[0].name}.ots",
    )
    assert rc == 0 and "Success! Bitcoin block" in out, out
    assert verified.returncode == 0, verified.stdout + verified.stderr
    [evidence] = json.loads(verified.stdout)["files"][0]["evidence"]
    assert evidence["kind"] == "ots" and evidence["status"] == "valid"
    assert evidence["authority"].startswith("Bitcoin block")
    assert _leftovers(daemon.watched, daemon.state) == []


def test_kill_9_while_stamping_loses_no_proof_and_leaves_no_half_file(
    tmp_path: Path, calendars: tuple[FakeCalendar, FakeCalendar], bitcoind: FakeBitcoind
) -> None:
    for calendar in calendars:
        calendar.mode = "slow"  # each answer takes a while (within the timeout): the kill
        calendar.slow_seconds = 1.5  # lands while the batch's round is under way
    daemon = _daemon(tmp_path, calendars, bitcoind).start()
    paths = _drop(daemon.watched, 40)
    wait_for(lambda: sum(c.requests["digest"] for c in calendars) >= 1, 30, "a submit", daemon)
    daemon.stop(signal.SIGKILL)
    for calendar in calendars:
        calendar.mode = "ok"
    daemon = _daemon(tmp_path, calendars, bitcoind).start()
    try:
        wait_for(lambda: _proofs(daemon) == {"pending": 40}, 90, "40 pending proofs", daemon)
        wait_for(
            lambda: _leftovers(daemon.watched, daemon.state) == [], 30, "no temp files", daemon
        )
    finally:
        assert daemon.stop() == 0
    for path in paths:
        sidecar = daemon.watched / f"{path.name}.ots"
        assert sidecar.is_file(), sidecar
    rc, out = run_ots(daemon.watched, "--no-cache", "info", f"{paths[-1].name}.ots")
    assert rc == 0, out
