"""More `stampd run` system tests for `.ots` (issue 12 "Show"), on the fakes and helpers of
tests/evidence/test_ots_system.py.

- a `kill -9` while upgrading loses no pending proof and leaves no half file;
- one of two calendars dead: with `min_replies = 1` files still get `.ots`, with 2 they back
  off (visible in `stampd status --json`) and catch up once it is back;
- hostile `/digest` replies are refused and classified, no `.ots` comes from them; a pending
  URI outside the allow-list is never asked;
- a proof written by the real `ots stamp` next to a file is adopted (no new `/digest`) and
  upgraded.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import RunningDaemon, wait_for
from tests.evidence.test_fake_calendar import run_ots
from tests.evidence.test_ots_system import _daemon, _drop, _leftovers, _proofs
from tests.fake_bitcoind import FakeBitcoind
from tests.fake_calendar import FakeCalendar


@pytest.fixture
def node() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as bitcoind:
        yield bitcoind


@pytest.fixture
def cals(node: FakeBitcoind) -> Iterator[tuple[FakeCalendar, FakeCalendar]]:
    with FakeCalendar(node) as first, FakeCalendar(node) as second:
        yield first, second


def _rows(daemon: RunningDaemon, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the index ([] while it has no such table yet)."""
    db = daemon.state / "index.sqlite"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _attempts(daemon: RunningDaemon, action: str = "obtain") -> list[tuple[str, str | None, str]]:
    """(provider, error_class, message) of every attempt of the `ots` jobs doing `action`."""
    return [
        (str(p), c, str(m))
        for p, c, m in _rows(
            daemon,
            "SELECT a.provider, a.error_class, a.message FROM attempts a"
            " JOIN jobs j ON j.id = a.job_id WHERE j.kind = 'ots' AND j.action = ?",
            action,
        )
    ]


def _jobs(daemon: RunningDaemon, action: str) -> list[tuple[str, int, str | None, str | None]]:
    """(state, tries, last_error_class, last_error) of every `ots` job doing `action`."""
    return [
        (str(s), int(t), c, m)
        for s, t, c, m in _rows(
            daemon,
            "SELECT state, tries, last_error_class, last_error FROM jobs"
            " WHERE kind = 'ots' AND action = ?",
            action,
        )
    ]


def _sidecars(watched: Path) -> list[Path]:
    return sorted(watched.glob("*.ots"))


def _upgrade(daemon: RunningDaemon) -> dict[str, Any]:
    asked = daemon.cli("upgrade", "--json")
    assert asked.returncode == 0, asked.stderr
    reply: dict[str, Any] = json.loads(asked.stdout)
    return reply


def _ots_stamp(folder: Path, name: str, text: str, *urls: str) -> Path:
    """`name` with `text` in `folder`, stamped by the real client at `urls` (all required)."""
    (folder / name).write_text(text)
    calendars = [arg for url in urls for arg in ("-c", url)]
    rc, out = run_ots(folder, "--no-cache", "stamp", *calendars, "-m", str(len(urls)), name)
    assert rc == 0, out
    return folder / f"{name}.ots"


def test_kill_9_while_upgrading_loses_no_pending_proof(
    tmp_path: Path, cals: tuple[FakeCalendar, FakeCalendar], node: FakeBitcoind
) -> None:
    count = 30
    daemon = _daemon(tmp_path, cals, node).start()
    try:
        paths = _drop(daemon.watched, count)
        wait_for(lambda: _proofs(daemon) == {"pending": count}, 60, "pending proofs", daemon)
    except BaseException:
        daemon.stop()
        raise
    for calendar in cals:
        calendar.mine()
        # Each upgrade answer takes a while, so the kill lands with most of the round to go.
        calendar.slow_seconds = 0.3
        calendar.mode = "slow"
    before = {p.name: (daemon.watched / f"{p.name}.ots").read_bytes() for p in paths}
    assert _upgrade(daemon)["made_due"] == count
    wait_for(lambda: _proofs(daemon).get("complete", 0) >= 1, 60, "a first upgrade", daemon)
    daemon.stop(signal.SIGKILL)
    done_at_kill = _proofs(daemon).get("complete", 0)
    assert sum(_proofs(daemon).values()) == count
    assert done_at_kill < count, "the kill came too late to interrupt the round"

    for calendar in cals:
        calendar.mode = "ok"
    daemon = _daemon(tmp_path, cals, node).start()
    try:
        _upgrade(daemon)  # the jobs the kill interrupted were due already; the rest now
        wait_for(lambda: _proofs(daemon) == {"complete": count}, 90, "all upgraded", daemon)
        wait_for(lambda: _leftovers(daemon.watched, daemon.state) == [], 30, "no temp", daemon)
    finally:
        assert daemon.stop() == 0
    assert len(_rows(daemon, "SELECT id FROM proofs WHERE kind = 'ots'")) == count
    assert {s for s, *_ in _jobs(daemon, "upgrade")} == {"done"}
    archived = {p.read_bytes() for p in (daemon.state / "archive").rglob("*.ots")}
    for path in paths:
        upgraded = (daemon.watched / f"{path.name}.ots").read_bytes()
        assert upgraded != before[path.name]
        assert {before[path.name], upgraded} <= archived  # the pending proof is history
        rc, out = run_ots(daemon.watched, "--no-cache", "info", f"{path.name}.ots")
        assert rc == 0 and "BitcoinBlockHeaderAttestation" in out, out


def test_one_dead_calendar_is_tolerated_with_min_replies_1(
    tmp_path: Path, cals: tuple[FakeCalendar, FakeCalendar], node: FakeBitcoind
) -> None:
    alive, dead = cals
    dead.mode = "dead"
    daemon = _daemon(tmp_path, cals, node, min_replies=1).start()
    try:
        paths = _drop(daemon.watched, 5)
        wait_for(lambda: _proofs(daemon) == {"pending": 5}, 60, "5 pending proofs", daemon)
        wait_for(lambda: len(_sidecars(daemon.watched)) == 5, 30, "5 sidecars", daemon)
    finally:
        assert daemon.stop() == 0
    classes = {(provider, error) for provider, error, _ in _attempts(daemon)}
    assert (dead.url, "network") in {(p.rstrip("/"), c) for p, c in classes}, classes
    assert (alive.url, None) in {(p.rstrip("/"), c) for p, c in classes}, classes
    rc, out = run_ots(daemon.watched, "--no-cache", "info", f"{paths[0].name}.ots")
    assert rc == 0 and alive.url in out and dead.url not in out, out


def test_one_dead_calendar_of_min_replies_2_backs_off_then_catches_up(
    tmp_path: Path, cals: tuple[FakeCalendar, FakeCalendar], node: FakeBitcoind
) -> None:
    _, dead = cals
    dead.mode = "dead"
    daemon = _daemon(tmp_path, cals, node, min_replies=2, retry="3s").start()
    try:
        _drop(daemon.watched, 5)

        def backing_off() -> bool:
            jobs = _jobs(daemon, "obtain")
            return len(jobs) == 5 and all(s == "pending" and t >= 1 for s, t, _, _ in jobs)

        wait_for(backing_off, 60, "5 obtain jobs backing off", daemon)
        assert {c for _, _, c, _ in _jobs(daemon, "obtain")} == {"network"}
        messages = [str(m) for *_, m in _jobs(daemon, "obtain")]
        assert all("need at least 2 calendar replies" in m for m in messages), messages
        assert _proofs(daemon) == {} and _sidecars(daemon.watched) == []
        shown = daemon.cli("status", "--json")
        assert shown.returncode == 0, shown.stderr
        summary = json.loads(shown.stdout)["summary"]
        assert summary["jobs_backing_off"] == 5, summary
        assert summary["backoff_errors"] == {"network": 5}, summary
        assert summary["next_retry_at"] is not None

        # anchor.retry = "3s" (capped there): the catch-up comes within a few seconds, not
        # the default 15..30 s; nothing else brings it forward.
        dead.mode = "ok"
        wait_for(lambda: _proofs(daemon) == {"pending": 5}, 20, "the catch-up", daemon)
        wait_for(lambda: len(_sidecars(daemon.watched)) == 5, 30, "5 sidecars", daemon)
    finally:
        assert daemon.stop() == 0
    assert {s for s, *_ in _jobs(daemon, "obtain")} == {"done"}


@pytest.mark.parametrize("mode", ["garbage", "oversized"])
def test_a_hostile_digest_reply_is_refused_and_classified(
    tmp_path: Path, cals: tuple[FakeCalendar, FakeCalendar], node: FakeBitcoind, mode: str
) -> None:
    _, hostile = cals
    hostile.mode = mode
    daemon = _daemon(tmp_path, cals, node, min_replies=2, retry="3s").start()
    try:
        _drop(daemon.watched, 3)

        def refused() -> bool:
            return any(p.rstrip("/") == hostile.url for p, _, _ in _attempts(daemon))

        wait_for(refused, 60, "the hostile calendar's attempt", daemon)
        wait_for(lambda: len(_jobs(daemon, "obtain")) == 3, 30, "3 obtain jobs", daemon)
        wait_for(
            lambda: all(t >= 1 for _, t, _, _ in _jobs(daemon, "obtain")), 30, "a round", daemon
        )
    finally:
        assert daemon.stop() == 0
    mine = [(c, m) for p, c, m in _attempts(daemon) if p.rstrip("/") == hostile.url]
    assert mine and all(c == "parse" for c, _ in mine), mine
    assert {c for _, _, c, _ in _jobs(daemon, "obtain")} == {"parse"}
    assert _proofs(daemon) == {} and _sidecars(daemon.watched) == []
    assert _leftovers(daemon.watched, daemon.state) == []


def test_a_wrong_commitment_digest_reply_never_completes_its_fork(
    tmp_path: Path, cals: tuple[FakeCalendar, FakeCalendar], node: FakeBitcoind
) -> None:
    """A well-formed reply for another digest cannot be told apart when it arrives (its ops
    apply to any message, reference §2), so the proof is written; the lie shows at upgrade:
    the calendar answers "Not found" for the commitment, and only the honest fork completes."""
    honest, liar = cals
    liar.mode = "wrong_commitment"
    daemon = _daemon(tmp_path, cals, node, min_replies=2, retry="3s").start()
    try:
        [path] = _drop(daemon.watched, 1)
        wait_for(lambda: _proofs(daemon) == {"pending": 1}, 60, "a pending proof", daemon)
        for calendar in cals:
            calendar.mine()
        liar.mode = "ok"
        _upgrade(daemon)
        wait_for(lambda: _proofs(daemon) == {"complete": 1}, 60, "the upgrade", daemon)
    finally:
        assert daemon.stop() == 0
    notes = {(p.rstrip("/"), m) for p, _, m in _attempts(daemon, "upgrade")}
    assert (liar.url, "Not found (the calendar does not know this commitment)") in notes, notes
    assert (honest.url, "upgraded") in notes, notes
    rc, out = run_ots(daemon.watched, "--no-cache", "info", f"{path.name}.ots")
    assert rc == 0 and "BitcoinBlockHeaderAttestation" in out, out


def test_a_pending_uri_outside_the_allow_list_is_never_asked(
    tmp_path: Path, cals: tuple[FakeCalendar, FakeCalendar], node: FakeBitcoind
) -> None:
    with FakeCalendar(node) as other:
        daemon = _daemon(tmp_path, cals, node)
        # Stamped elsewhere, at a calendar stampd is not configured for, and there before the
        # daemon starts: the startup scan finds the file with its sidecar.
        sidecar = _ots_stamp(daemon.watched, "foreign.txt", "stamped elsewhere\n", other.url)
        client_bytes = sidecar.read_bytes()
        other.mine()  # it could even complete it, if it were asked
        asked_before = other.requests["timestamp"]
        other_url = other.url
        daemon.start()
        try:
            wait_for(lambda: _proofs(daemon) == {"pending": 1}, 60, "the adopted proof", daemon)
            _upgrade(daemon)
            wait_for(
                lambda: any(t >= 1 for _, t, _, _ in _jobs(daemon, "upgrade")),
                60,
                "an upgrade round",
                daemon,
            )
        finally:
            assert daemon.stop() == 0
        assert other.requests["timestamp"] == asked_before == 0
        assert all(c.requests["digest"] == 0 for c in cals)
    [(state, _, error_class, message)] = _jobs(daemon, "upgrade")
    assert state == "pending" and error_class == "rejected"
    assert other_url in str(message) and "anchor.allow" in str(message), message
    assert _proofs(daemon) == {"pending": 1}
    assert sidecar.read_bytes() == client_bytes


def test_a_proof_from_ots_stamp_is_adopted_then_upgraded(
    tmp_path: Path, cals: tuple[FakeCalendar, FakeCalendar], node: FakeBitcoind
) -> None:
    daemon = _daemon(tmp_path, cals, node).start()
    try:
        staging = tmp_path / "staging"
        staging.mkdir()
        sidecar = _ots_stamp(staging, "contract.txt", "signed contract\n", *(c.url for c in cals))
        client_bytes = sidecar.read_bytes()
        submitted = [c.requests["digest"] for c in cals]
        assert submitted == [1, 1]
        # The sidecar lands first, then the file (as a copy tool or `mv` of both would do).
        os.rename(sidecar, daemon.watched / sidecar.name)
        os.rename(staging / "contract.txt", daemon.watched / "contract.txt")
        wait_for(lambda: _proofs(daemon) == {"pending": 1}, 60, "the adopted proof", daemon)
        assert [c.requests["digest"] for c in cals] == submitted
        [(sidecar_sha256,)] = _rows(daemon, "SELECT sidecar_sha256 FROM proofs")
        assert sidecar_sha256 == hashlib.sha256(client_bytes).hexdigest()

        for calendar in cals:
            calendar.mine()
        assert _upgrade(daemon)["made_due"] == 1
        wait_for(lambda: _proofs(daemon) == {"complete": 1}, 60, "the upgrade", daemon)
        verified = daemon.cli("verify", "--json", str(daemon.watched / "contract.txt"))
    finally:
        assert daemon.stop() == 0
    assert [c.requests["digest"] for c in cals] == submitted
    upgraded = (daemon.watched / "contract.txt.ots").read_bytes()
    assert upgraded != client_bytes
    archived = {p.read_bytes() for p in (daemon.state / "archive").rglob("*.ots")}
    assert {client_bytes, upgraded} <= archived
    assert verified.returncode == 0, verified.stdout + verified.stderr
    [evidence] = json.loads(verified.stdout)["files"][0]["evidence"]
    assert evidence["status"] == "valid" and evidence["authority"].startswith("Bitcoin block")
