"""The ``ots`` kind end to end in-process: real Index, Recorder and EvidenceRunners, two fake
calendars and a fake bitcoind over loopback, and the real ``ots`` client as the oracle.

- A drop of 20 files is one merkle batch: exactly one ``/digest`` request per calendar, 20
  pending ``.ots`` sidecars, 20 upgrade jobs (reference/opentimestamps.md §3).
- Once a calendar "mines", the upgrade jobs complete the proofs (checked against the node's
  headers), the pending sidecars go to the archive, and ``ots verify`` accepts the new ones.
- A dead calendar: with ``min_replies = 1`` files are still stamped; with 2 the jobs back off
  with their attempts recorded, and catch up when it is back.
- The upgrade cadence (§4), the allow-list refusal, a decoy upgrade refused by the header
  check, and the "complete without a header source" rule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from stampd.daemon.config.model import Config
from stampd.daemon.config.reader import load_config
from stampd.daemon.evidence.bitcoind import BitcoindHeaders
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.ots import (
    MIN_UPGRADE_WAIT_S,
    OtsStrategy,
    strategy_from_config,
    upgrade_wait,
)
from stampd.daemon.evidence.runners import EvidenceRunners
from stampd.daemon.evidence.strategy import NotObtained, Obtained, ProofRequest
from stampd.daemon.watch.recorder import Recorder
from stampd.store.files.archive import archive_path
from stampd.store.formats.ots import bitcoin_leaves, decode, pending_leaves
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import DueJob
from stampd.store.index.times import format_time
from stampd.store.kinds import JobAction
from stampd.store.ots_verifier import OtsVerifier
from tests.conftest import settled
from tests.evidence.test_fake_calendar import run_ots
from tests.fake_bitcoind import FakeBitcoind
from tests.fake_calendar import FakeCalendar

#: Only so that a stuck runner fails the test instead of hanging it; nothing is timed.
STUCK_S = 30


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as node:
        yield node


@pytest.fixture
def calendars(bitcoind: FakeBitcoind) -> Iterator[tuple[FakeCalendar, FakeCalendar]]:
    with FakeCalendar(bitcoind) as one, FakeCalendar(bitcoind) as two:
        yield one, two


def anchor_config(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, ...],
    *,
    min_replies: int = 2,
    bitcoind: FakeBitcoind | None = None,
    allow: str = "",
) -> Config:
    extra = (
        "[anchor]\n"
        f"calendars = [{', '.join(repr(c.url) for c in calendars)}]\n"
        f"min_replies = {min_replies}\n"
        'timeout = "5s"\n'
        'upgrade_after = "1m"\n' + (f"allow = [{allow!r}]\n" if allow else "")
    )
    if bitcoind is not None:
        secret = tmp_path / "rpc.secret"
        secret.write_text("p\n")
        secret.chmod(0o600)
        extra += (
            f'[anchor.bitcoin]\nurl = "{bitcoind.url}"\nusername = "u"\nsecret_file = "{secret}"\n'
        )
    return load_config(make_config(extra, evidence='["ots"]'))


def drop_files(index: Index, config: Config, count: int) -> dict[str, bytes]:
    """``count`` files written and recorded (as the watcher would) with an ``ots`` job each."""
    watch = config.watches[0]
    watch_id = index.ensure_watch(watch.path)
    contents = {f"r{n:02}.txt": f"record {n}\n".encode() for n in range(count)}
    for name, data in contents.items():
        (watch.path / name).write_bytes(data)
        index.record_settled(
            [
                settled(
                    watch_id,
                    watch.path / name,
                    sha256=hashlib.sha256(data).hexdigest(),
                    sha512=hashlib.sha512(data).hexdigest(),
                    evidence=("ots",),
                )
            ]
        )
    return contents


def query(config: Config, sql: str) -> list[sqlite3.Row]:
    conn = open_reader(index_path(config.daemon.state_dir))
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(STUCK_S):
        while not condition():
            await asyncio.sleep(0.05)


def _all_due_now(index: Index) -> None:
    """Every pending job due at once (instead of waiting out upgrade_after or a back-off)."""
    past = format_time(datetime.now(UTC) - timedelta(seconds=1))
    with index.write() as conn:
        conn.execute("UPDATE jobs SET next_try_at = ? WHERE state = 'pending'", (past,))


class Running:
    """The runners of one configuration, for the length of an ``async with``."""

    def __init__(self, index: Index, config: Config) -> None:
        self.index = index
        self.config = config
        self.recorder = Recorder(index)
        self.runners = EvidenceRunners(
            recorder=self.recorder, state_dir=config.daemon.state_dir, locks=PathLocks()
        )

    async def __aenter__(self) -> Running:
        watch_id = self.index.ensure_watch(self.config.watches[0].path)
        self.runners.apply(self.runners.prepare(self.config), {watch_id: "adjacent"})
        assert set(self.runners.tasks()) == {"anchoring"}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runners.close()
        self.recorder.close()

    def completed(self) -> int:
        status = self.runners.status().get("ots") or {}
        return int(status.get("completed", 0))

    def state(self, action: str) -> list[str]:
        rows = query(self.config, f"SELECT state FROM jobs WHERE action = '{action}'")
        return [row["state"] for row in rows]

    async def all_due_now(self) -> None:
        await self.recorder.call(_all_due_now, self.index)
        self.runners.wake()


def test_twenty_files_one_request_per_calendar_then_upgraded_and_verified(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
    bitcoind: FakeBitcoind,
) -> None:
    config = anchor_config(make_config, tmp_path, calendars, bitcoind=bitcoind)
    state = config.daemon.state_dir
    state.mkdir()
    watched = config.watches[0].path
    index = Index.open(index_path(state))
    try:
        contents = drop_files(index, config, 20)

        async def scenario() -> None:
            async with Running(index, config) as running:
                await until(lambda: running.completed() == 20)
                assert [c.requests["digest"] for c in calendars] == [1, 1]
                rows = query(config, "SELECT status, provider FROM proofs")
                assert {row["status"] for row in rows} == {"pending"} and len(rows) == 20
                both = ", ".join(sorted(c.url for c in calendars))
                assert {row["provider"] for row in rows} == {both}
                assert running.state("upgrade") == ["pending"] * 20
                # Upgrades before anything is mined: asked, still pending, backed off.
                await running.all_due_now()
                await until(lambda: sum(c.requests["timestamp"] for c in calendars) == 40)
                await until(lambda: _tried(config) == 20)
                assert running.state("upgrade") == ["pending"] * 20
                pending_sidecars = {
                    name: (watched / f"{name}.ots").read_bytes() for name in contents
                }
                calendars[0].mine()
                await running.all_due_now()
                await until(lambda: running.completed() == 40)
                assert running.state("upgrade") == ["done"] * 20
                for name, old in pending_sidecars.items():
                    kept = hashlib.sha256(old).hexdigest()
                    assert archive_path(state, kept, "ots").is_file(), name

        asyncio.run(scenario())
    finally:
        index.close()
    rows = query(config, "SELECT status, gen_time, authority FROM proofs")
    assert {row["status"] for row in rows} == {"complete"}
    assert {row["authority"] for row in rows} == {"Bitcoin block 900001"}
    assert all(row["gen_time"] for row in rows)  # the block's time, read from its header
    for name in contents:
        proof = decode((watched / f"{name}.ots").read_bytes())
        assert [height for height, _ in bitcoin_leaves(proof.timestamp)] == [900001]
        assert len(pending_leaves(proof.timestamp)) == 2  # an upgrade only adds (rule 6)
    first = watched / "r00.txt.ots"
    rc, out = run_ots(tmp_path, "--no-cache", "info", str(first))
    assert rc == 0 and "verify BitcoinBlockHeaderAttestation(900001)" in out, out
    lists = [arg for c in calendars for arg in ("-l", c.url)]
    node = ("--bitcoin-node", bitcoind.url_with())
    rc, out = run_ots(
        tmp_path, "--no-cache", "--no-default-whitelist", *lists, *node, "verify", str(first)
    )
    assert rc == 0 and "Success! Bitcoin block 900001 attests existence" in out, out


def _tried(config: Config) -> int:
    rows = query(config, "SELECT tries FROM jobs WHERE action = 'upgrade' AND tries > 0")
    return len(rows)


def test_a_dead_calendar_with_one_reply_needed_still_stamps(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
) -> None:
    calendars[1].mode = "dead"
    config = anchor_config(make_config, tmp_path, calendars, min_replies=1)
    config.daemon.state_dir.mkdir()
    index = Index.open(index_path(config.daemon.state_dir))
    try:
        drop_files(index, config, 3)

        async def scenario() -> None:
            async with Running(index, config) as running:
                await until(lambda: running.completed() == 3)

        asyncio.run(scenario())
    finally:
        index.close()
    rows = query(config, "SELECT status, provider FROM proofs")
    assert [(r["status"], r["provider"]) for r in rows] == [("pending", calendars[0].url)] * 3
    attempts = query(config, "SELECT provider, error_class FROM attempts")
    assert {(a["provider"], a["error_class"]) for a in attempts} == {
        (calendars[0].url + "/", None),
        (calendars[1].url + "/", "network"),
    }


def test_a_missed_quorum_backs_off_and_catches_up_when_the_calendar_returns(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
) -> None:
    calendars[1].mode = "dead"
    config = anchor_config(make_config, tmp_path, calendars, min_replies=2)
    config.daemon.state_dir.mkdir()
    index = Index.open(index_path(config.daemon.state_dir))
    try:
        drop_files(index, config, 3)

        async def scenario() -> None:
            async with Running(index, config) as running:
                await until(lambda: len(query(config, "SELECT id FROM jobs WHERE tries > 0")) == 3)
                jobs = query(config, "SELECT state, last_error_class, last_error FROM jobs")
                assert {(j["state"], j["last_error_class"]) for j in jobs} == {
                    ("pending", "network")
                }
                assert all(
                    "need at least 2 calendar replies, received 1 within 5 s" in j["last_error"]
                    for j in jobs
                )
                assert query(config, "SELECT id FROM proofs") == []
                calendars[1].mode = "ok"
                await running.all_due_now()
                await until(lambda: running.completed() == 3)

        asyncio.run(scenario())
    finally:
        index.close()
    assert [c.requests["digest"] for c in calendars] == [2, 2]  # one batch per round
    attempts = query(config, "SELECT provider, error_class FROM attempts ORDER BY id")
    classes = {(a["provider"], a["error_class"]) for a in attempts}
    assert (calendars[1].url + "/", "network") in classes
    assert (calendars[1].url + "/", None) in classes
    rows = query(config, "SELECT status FROM proofs")
    assert [r["status"] for r in rows] == ["pending"] * 3


# --- the strategy on its own ----------------------------------------------------------------


def _request(digest: bytes, *, proof: bytes | None = None, tries: int = 0) -> ProofRequest:
    job = DueJob(1, "ots", tries, 1, digest.hex(), "", 1, Path("/x"), 1, "present", True)
    action = JobAction.OBTAIN if proof is None else JobAction.UPGRADE
    return ProofRequest(job, action, digest, proof)


def _strategy(config: Config, client: httpx.AsyncClient) -> OtsStrategy:
    strategy = strategy_from_config(config, http=client)
    assert isinstance(strategy, OtsStrategy)
    return strategy


def test_without_a_header_source_a_bitcoin_leaf_counts_as_complete(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
) -> None:
    config = anchor_config(make_config, tmp_path, calendars[:1], min_replies=1)
    digest = hashlib.sha256(b"x").digest()

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            strategy = _strategy(config, client)
            [obtained] = await strategy.obtain([_request(digest)])
            assert isinstance(obtained, Obtained) and obtained.verdict.status == "pending"
            [waiting] = await strategy.extend([_request(digest, proof=obtained.data)])
            assert isinstance(waiting, NotObtained) and waiting.error_class == "unavailable"
            assert waiting.message == f"still pending at {calendars[0].url}"
            # First failed round: upgrade_after (1 min) * 2, jittered down by at most a quarter.
            assert waiting.retry_after is not None and 90.0 <= waiting.retry_after <= 120.0
            assert [(a.error_class, a.http_status) for a in waiting.attempts] == [(None, 404)]
            calendars[0].mine()
            [upgraded] = await strategy.extend([_request(digest, proof=obtained.data)])
            assert isinstance(upgraded, Obtained), upgraded
            verdict = upgraded.verdict
            assert (verdict.status, verdict.reason) == ("valid", "not_checked")
            assert verdict.authority == "Bitcoin block 900001" and verdict.gen_time is None
            assert verdict.provider == calendars[0].url

    asyncio.run(scenario())


def test_a_decoy_upgrade_is_refused_by_the_header_check(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
    bitcoind: FakeBitcoind,
) -> None:
    config = anchor_config(make_config, tmp_path, calendars[:1], min_replies=1, bitcoind=bitcoind)
    digest = hashlib.sha256(b"x").digest()

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            strategy = _strategy(config, client)
            [obtained] = await strategy.obtain([_request(digest)])
            assert isinstance(obtained, Obtained)
            calendars[0].mine()
            calendars[0].mode = "wrong_commitment"
            [refused] = await strategy.extend([_request(digest, proof=obtained.data)])
            assert isinstance(refused, NotObtained)
            assert [a.error_class for a in refused.attempts] == ["verify"]
            assert refused.retry_after is not None and refused.retry_after >= MIN_UPGRADE_WAIT_S
            calendars[0].mode = "ok"
            [upgraded] = await strategy.extend([_request(digest, proof=obtained.data)])
            assert isinstance(upgraded, Obtained) and upgraded.verdict.status == "valid"
            assert upgraded.verdict.gen_time is not None

    asyncio.run(scenario())


def test_anchor_unchecked_is_logged_without_a_header_source_only(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
    bitcoind: FakeBitcoind,
) -> None:
    """The operator learns at start (and at each reload) that Bitcoin leaves go unchecked."""
    bare = anchor_config(make_config, tmp_path, calendars[:1], min_replies=1)
    checked = anchor_config(make_config, tmp_path, calendars[:1], min_replies=1, bitcoind=bitcoind)

    async def events(config: Config) -> list[str]:
        async with httpx.AsyncClient() as client:
            with capture_logs() as logged:
                _strategy(config, client).close()
        return [str(entry["event"]) for entry in logged]

    assert "anchor_unchecked" in asyncio.run(events(bare))
    assert "anchor_unchecked" not in asyncio.run(events(checked))


def test_without_a_header_source_a_decoy_is_recorded_unchecked_until_a_header_shows_it(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
    bitcoind: FakeBitcoind,
) -> None:
    """The limit of running without ``[anchor.bitcoin]`` (daemon/evidence/ots_judge.py): an
    upgrade made for another commitment evaluates like a real one, so it is recorded as
    complete but ``not_checked``, never with a block time; the first header check refuses it."""
    config = anchor_config(make_config, tmp_path, calendars[:1], min_replies=1)
    digest = hashlib.sha256(b"x").digest()

    async def scenario() -> bytes:
        async with httpx.AsyncClient() as client:
            strategy = _strategy(config, client)
            [obtained] = await strategy.obtain([_request(digest)])
            assert isinstance(obtained, Obtained)
            calendars[0].mine()
            calendars[0].mode = "wrong_commitment"
            [decoy] = await strategy.extend([_request(digest, proof=obtained.data)])
            assert isinstance(decoy, Obtained)
            assert (decoy.verdict.status, decoy.verdict.reason) == ("valid", "not_checked")
            assert decoy.verdict.gen_time is None and "not checked" in str(decoy.verdict.message)
            return decoy.data

    data = asyncio.run(scenario())
    with BitcoindHeaders(bitcoind.url, username="u", password="p") as headers:
        checked = OtsVerifier(headers).verify(data, source="x", digest_of=lambda _a: digest)
    assert (checked.status, checked.reason) == ("invalid", "merkle_root_mismatch")


def test_a_pending_uri_outside_the_allow_list_is_never_asked(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
) -> None:
    """The proof names calendars[1], which is neither configured nor allowed."""
    other = anchor_config(make_config, tmp_path, calendars[1:], min_replies=1)
    config = dataclasses.replace(
        other,
        anchor=dataclasses.replace(other.anchor, calendars=(calendars[0].url + "/",)),
    )
    digest = hashlib.sha256(b"x").digest()

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            [obtained] = await _strategy(other, client).obtain([_request(digest)])
            assert isinstance(obtained, Obtained)
            [outcome] = await _strategy(config, client).extend(
                [_request(digest, proof=obtained.data, tries=3)]
            )
            assert isinstance(outcome, NotObtained)
            assert outcome.error_class == "rejected"
            assert calendars[1].url in outcome.message and "anchor.allow" in outcome.message
            assert [a.error_class for a in outcome.attempts] == ["rejected"]

    asyncio.run(scenario())
    assert calendars[1].requests["timestamp"] == 0


def test_upgrade_cadence_doubles_to_the_cap_with_jitter_and_a_floor() -> None:
    rng = random.Random(7)
    hour, day = 3600.0, 86400.0
    waits = [upgrade_wait(t, after=hour, cap=day, rng=rng) for t in range(1, 8)]
    for tries, wait in enumerate(waits, start=1):
        full = min(day, hour * 2**tries)
        assert 0.75 * full <= wait <= full
    assert waits[-1] >= 0.75 * day  # capped, never given up
    assert upgrade_wait(1, after=1.0, cap=10.0, rng=rng) == MIN_UPGRADE_WAIT_S


def test_a_reload_keeps_the_breakers_of_unchanged_calendars(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
) -> None:
    config = anchor_config(make_config, tmp_path, calendars)
    changed = dataclasses.replace(config, anchor=dataclasses.replace(config.anchor, timeout=9.0))

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            old = _strategy(config, client)
            same = _strategy(config, client)
            other = _strategy(changed, client)
            same.take_over(old)
            other.take_over(old)
            for calendar in calendars:
                name = calendar.url + "/"
                assert same.pool.health[name] is old.pool.health[name]
                # Another timeout is another way of asking: a fresh breaker.
                assert other.pool.health[name] is not old.pool.health[name]
            assert same.report() == old.report()

    asyncio.run(scenario())
