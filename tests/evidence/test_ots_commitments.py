"""Each (calendar URI, commitment) of an ``.ots`` proof is recorded in the index (issue 12).

In-process, as tests/evidence/test_ots_strategy.py runs the kind: a real Index, Recorder and
runners, two fake calendars and a fake bitcoind over loopback. The commitments the index
holds are checked against the written ``.ots`` (recomputed with ``pending_leaves``) and
against what each calendar itself committed to; after one calendar mines, only its pair is
anchored; ``stampd show`` lists them; an adopted sidecar's pairs are recorded too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from stampd.daemon.cli.app import cli
from stampd.daemon.evidence.strategy import Obtained
from stampd.store.formats.ots import decode, pending_leaves
from stampd.store.index.database import Index, index_path
from stampd.store.ots_verifier import OtsVerifier
from stampd.store.verify import Commitment
from tests.evidence.test_ots_strategy import (
    Running,
    _request,
    _strategy,
    anchor_config,
    drop_files,
    query,
    until,
)
from tests.fake_bitcoind import FakeBitcoind
from tests.fake_calendar import FakeCalendar

_ROWS = (
    "SELECT p.id, f.path, c.provider, c.commitment, c.recorded_at, c.anchored_at"
    " FROM proof_commitments c JOIN proofs p ON p.id = c.proof_id"
    " JOIN versions v ON v.id = p.version_id JOIN files f ON f.id = v.file_id"
    " ORDER BY f.path, c.provider"
)


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as node:
        yield node


@pytest.fixture
def calendars(bitcoind: FakeBitcoind) -> Iterator[tuple[FakeCalendar, FakeCalendar]]:
    with FakeCalendar(bitcoind) as one, FakeCalendar(bitcoind) as two:
        yield one, two


def _pairs_on_disk(sidecar: Path) -> dict[str, bytes]:
    """Calendar URI → commitment, recomputed from the written ``.ots``."""
    return dict(pending_leaves(decode(sidecar.read_bytes()).timestamp))


def test_two_calendars_two_pairs_per_proof_then_the_mined_one_is_anchored(
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
        contents = drop_files(index, config, 2)

        async def scenario() -> None:
            async with Running(index, config) as running:
                await until(lambda: running.completed() == 2)
                rows = query(config, _ROWS)
                assert len(rows) == 4
                for name in contents:
                    mine = [r for r in rows if r["path"] == str(watched / name)]
                    on_disk = _pairs_on_disk(watched / f"{name}.ots")
                    assert {r["provider"]: bytes(r["commitment"]) for r in mine} == on_disk
                    assert all(r["anchored_at"] is None and r["recorded_at"] for r in mine)
                # What each calendar holds: one batch, so one commitment each, for both files.
                assert {r["provider"]: bytes(r["commitment"]) for r in rows} == {
                    c.url: c.pending[0] for c in calendars
                }
                calendars[0].mine()
                await running.all_due_now()
                await until(lambda: running.completed() == 4)

        asyncio.run(scenario())
    finally:
        index.close()
    rows = query(config, _ROWS)
    assert query(config, "SELECT DISTINCT status FROM proofs")[0]["status"] == "complete"
    anchored = {(r["path"], r["provider"]): r["anchored_at"] is not None for r in rows}
    assert anchored == {
        (str(watched / name), c.url): c is calendars[0] for name in contents for c in calendars
    }
    # The index agrees with the bytes: the upgraded proof has calendars[0]'s block below its
    # commitment, and still waits at calendars[1] (an upgrade only adds, rule 6).
    upgraded = (watched / "r00.txt.ots").read_bytes()
    verdict = OtsVerifier().verify(
        upgraded,
        source="sidecar",
        digest_of=lambda _alg: hashlib.sha256(contents["r00.txt"]).digest(),
    )
    assert set(verdict.commitments) == {
        Commitment(calendars[0].url, calendars[0].mined[0], anchored=True),
        Commitment(calendars[1].url, calendars[1].pending[0], anchored=False),
    }

    shown = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "config.toml"), "show", str(watched / "r00.txt"), "--json"]
    )
    assert shown.exit_code == 0, shown.output
    (proof,) = json.loads(shown.stdout)["file"]["versions"][0]["proofs"]
    listed = {c["provider"]: c for c in proof["commitments"]}
    assert set(listed) == {c.url for c in calendars}
    assert set(listed[calendars[0].url]) == {"provider", "commitment", "recorded_at", "anchored_at"}
    assert listed[calendars[0].url]["commitment"] == calendars[0].mined[0].hex()
    assert listed[calendars[0].url]["anchored_at"] is not None
    assert listed[calendars[1].url]["commitment"] == calendars[1].pending[0].hex()
    assert listed[calendars[1].url]["anchored_at"] is None
    text = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "config.toml"), "show", str(watched / "r00.txt")]
    )
    assert text.exit_code == 0, text.output
    pending = listed[calendars[1].url]
    assert (
        f"      calendar {calendars[1].url} commitment {pending['commitment']}"
        f" pending {pending['recorded_at']}\n" in text.stdout
    )
    done = listed[calendars[0].url]
    assert (
        f"      calendar {calendars[0].url} commitment {done['commitment']}"
        f" anchored {done['anchored_at']}\n" in text.stdout
    )


def test_an_adopted_sidecar_records_its_pairs(
    make_config: Callable[..., Path],
    tmp_path: Path,
    calendars: tuple[FakeCalendar, FakeCalendar],
) -> None:
    """A proof written as a sidecar before a crash kept its row from being committed."""
    config = anchor_config(make_config, tmp_path, calendars)
    config.daemon.state_dir.mkdir()
    watched = config.watches[0].path
    index = Index.open(index_path(config.daemon.state_dir))
    try:
        contents = drop_files(index, config, 1)
        digest = hashlib.sha256(contents["r00.txt"]).digest()

        async def scenario() -> None:
            async with httpx.AsyncClient() as client:
                [obtained] = await _strategy(config, client).obtain([_request(digest)])
            assert isinstance(obtained, Obtained)
            (watched / "r00.txt.ots").write_bytes(obtained.data)
            async with Running(index, config) as running:
                await until(lambda: running.completed() == 1)

        asyncio.run(scenario())
    finally:
        index.close()
    assert [c.requests["digest"] for c in calendars] == [1, 1]  # adopted, not asked again
    rows = query(config, _ROWS)
    assert {r["provider"]: bytes(r["commitment"]) for r in rows} == _pairs_on_disk(
        watched / "r00.txt.ots"
    )
    assert len(rows) == 2 and all(r["anchored_at"] is None for r in rows)
