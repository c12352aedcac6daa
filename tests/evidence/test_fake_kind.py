"""A kind of the tests' own goes through the whole pipeline, as docs/adding-an-evidence-kind.md
says a new kind does — with no change outside this module.

The ``fake`` kind: a notary (a provider of this module's own role) seals digests, many in one
request; its receipt is a small JSON document with an HMAC, kept as ``FILE.fnr``. Registered
with ``store.kinds.registered`` and its two runtime entries (``fake_strategy``,
``fake_verifier`` below), it is run by the real :class:`EvidenceRunners` → :class:`JobRunner`
→ batcher → :class:`ProviderPool`, written as a sidecar and into the archive, recorded in a
real index — pending until an ``upgrade`` job the runner creates by itself completes it —
and then reported by ``stampd verify`` and ``stampd show`` in-process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import re
import sqlite3
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from stampd.daemon.cli.app import cli
from stampd.daemon.config.model import Config
from stampd.daemon.config.reader import load_config
from stampd.daemon.evidence.backoff import Backoff
from stampd.daemon.evidence.entries import VerifyOptions
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.runners import EvidenceRunners
from stampd.daemon.evidence.strategy import NotObtained, Obtained, Outcome, ProofRequest, Strategy
from stampd.daemon.watch.recorder import Recorder
from stampd.store import kinds
from stampd.store.errors import ErrorClass
from stampd.store.files.archive import archive_path
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.kinds import JobAction, KindSpec
from stampd.store.verify import DigestOf, Verdict
from tests.conftest import REPO, settled

KIND = "fake"
EXTENSION = "fnr"
SPEC = KindSpec(
    KIND,
    "fake notary receipts",
    sidecar=EXTENSION,
    actions=frozenset({JobAction.OBTAIN, JobAction.UPGRADE}),
    config_section=None,
    available=True,
    verifiable=True,
    verifier=f"{__name__}:fake_verifier",
    strategy=f"{__name__}:fake_strategy",
)
#: The notary's sealing key; its verifier knows it (a real kind's would check a signature).
SEAL_KEY = b"fake notary key"
#: Only so that a stuck runner fails the test instead of hanging it; nothing is timed.
STUCK_S = 20


# --- the kind's format and verifier (a real kind's live in store/) --------------------------


def receipt(digest: bytes, *, notary: str, level: int) -> bytes:
    """A sealed receipt for ``digest``; level 1 is pending, level 2 the upgraded (complete) one."""
    body = {
        "alg": "sha256",
        "digest": digest.hex(),
        "level": level,
        "notary": notary,
        "time": "2026-01-02T03:04:05Z",
    }
    text = json.dumps(body, sort_keys=True)
    seal = hmac.new(SEAL_KEY, text.encode(), "sha256").hexdigest()
    return json.dumps({"body": body, "seal": seal}, sort_keys=True).encode()


class FakeVerifier:
    """Checks a receipt's seal and that it covers the data."""

    def verify(
        self, data: bytes, *, source: str, digest_of: DigestOf, prefer: str | None = None
    ) -> Verdict:
        try:
            document = json.loads(data)
            body = document["body"]
            text = json.dumps(body, sort_keys=True)
        except (ValueError, KeyError, TypeError):
            return Verdict(KIND, source, "invalid", "parse", "not a fake receipt")
        seal = hmac.new(SEAL_KEY, text.encode(), "sha256").hexdigest()
        if not hmac.compare_digest(seal, str(document.get("seal"))):
            return Verdict(KIND, source, "invalid", "signature", "the seal does not match")
        if digest_of(body["alg"]).hex() != body["digest"]:
            return Verdict(KIND, source, "invalid", "imprint_mismatch", "made for other content")
        return Verdict(
            KIND,
            source,
            "valid" if body["level"] == 2 else "pending",
            gen_time=datetime.fromisoformat(body["time"].replace("Z", "+00:00")),
            authority=f"Fake Notary (level {body['level']})",
            provider=body["notary"],
            algorithm=body["alg"],
        )


def fake_verifier(options: VerifyOptions) -> FakeVerifier:
    """The registry's ``verifier`` entry: this kind needs no configuration to verify."""
    return FakeVerifier()


# --- the kind's provider and strategy (a real kind's live in daemon/evidence/) ---------------


class Notary:
    """A provider of this kind's own role: seals many digests in one request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.min_interval = 0.0
        #: The digests of each request, in order.
        self.requests: list[list[bytes]] = []
        #: Upgrades wait for this (the test looks at the pending proofs first), and the
        #: first one is answered "not yet" (an OTS calendar's "Pending confirmation").
        self.upgrades_open = asyncio.Event()
        self.not_yet = 1

    @property
    def identity(self) -> Hashable:
        return self.name

    async def seal(self, digests: Sequence[bytes], level: int) -> list[bytes]:
        self.requests.append(list(digests))
        return [receipt(digest, notary=self.name, level=level) for digest in digests]

    async def upgrade(self, digest: bytes) -> bytes | None:
        """The complete receipt, or None while it is not ready."""
        await self.upgrades_open.wait()
        self.requests.append([digest])
        if self.not_yet:
            self.not_yet -= 1
            return None
        return receipt(digest, notary=self.name, level=2)


NOTARY = Notary("notary")


class FakeStrategy:
    """Obtains receipts three jobs at a time (one notary request per batch), upgrades them."""

    kind: str = KIND
    component: str = "notarizing"
    done_event: str = "fake_notarized"
    digest_alg: str = "sha256"
    digest_setting: str = "fake.digest"
    batch: int = 3
    #: Long: the batch of the test goes out because it is full, not because time passed.
    window: float = 60.0
    #: Pending receipts are upgraded at once (the notary holds the answer until released).
    upgrade_after: float = 0.0

    def __init__(self, pool: ProviderPool[Notary]) -> None:
        self.pool = pool
        self.backoff = Backoff(1.0, 2.0)
        self._verifier = FakeVerifier()

    @property
    def verifier(self) -> FakeVerifier:
        return self._verifier

    async def obtain(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        return await self._sealed(requests, level=1)

    async def extend(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        outcomes: list[Outcome] = []
        for request in requests:
            assert request.proof is not None  # the pending receipt, from the archive
            assert json.loads(request.proof)["body"]["level"] == 1
            upgraded, attempts = await self.pool.first(
                lambda notary, d=request.digest: notary.upgrade(d)
            )
            if upgraded is None:
                outcomes.append(
                    NotObtained(ErrorClass.UNAVAILABLE, "not yet", attempts, retry_after=0.05)
                )
                continue
            verdict = self._verifier.verify(
                upgraded, source="notary", digest_of=lambda _alg, d=request.digest: d
            )
            outcomes.append(Obtained(upgraded, verdict, attempts))
        return outcomes

    async def _sealed(self, requests: Sequence[ProofRequest], *, level: int) -> list[Outcome]:
        digests = [request.digest for request in requests]
        receipts, attempts = await self.pool.first(lambda notary: notary.seal(digests, level))
        if receipts is None:
            return [NotObtained(ErrorClass.UNAVAILABLE, "no notary", attempts)] * len(requests)
        outcomes: list[Outcome] = []
        for request, data in zip(requests, receipts, strict=True):
            verdict = self._verifier.verify(
                data, source="notary", digest_of=lambda _alg, d=request.digest: d
            )
            outcomes.append(Obtained(data, verdict, attempts))
        return outcomes

    def take_over(self, old: Strategy) -> None:
        if isinstance(old, FakeStrategy):
            self.pool.take_over(old.pool)

    def report(self) -> list[dict[str, Any]]:
        return self.pool.report()

    def close(self) -> None:
        self.closed = True


def fake_strategy(config: Config, *, http: httpx.AsyncClient) -> FakeStrategy:
    """The registry's ``strategy`` entry."""
    return FakeStrategy(ProviderPool([NOTARY]))


# --- the test -------------------------------------------------------------------------------


def _query(state: Path, sql: str) -> list[sqlite3.Row]:
    conn = open_reader(index_path(state))
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(STUCK_S):
        while not condition():
            await asyncio.sleep(0.02)


def test_a_kind_registered_by_a_test_goes_through_the_whole_pipeline(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config_file = make_config()
    loaded = load_config(config_file)
    watch = dataclasses.replace(loaded.watches[0], evidence=(KIND,))
    config = dataclasses.replace(loaded, watches=(watch,))
    state = config.daemon.state_dir
    state.mkdir()
    contents = {name: f"{name}: a record\n".encode() for name in ("a.txt", "b.txt", "c.txt")}
    NOTARY.requests.clear()
    with kinds.registered(SPEC):
        index = Index.open(index_path(state))
        try:
            watch_id = index.ensure_watch(watch.path)
            for name, data in contents.items():
                (watch.path / name).write_bytes(data)
                index.record_settled(
                    [
                        settled(
                            watch_id,
                            watch.path / name,
                            sha256=hashlib.sha256(data).hexdigest(),
                            sha512=hashlib.sha512(data).hexdigest(),
                            evidence=(KIND,),
                        )
                    ]
                )
            asyncio.run(_run(index, config, watch_id))
        finally:
            index.close()
        _check_index_and_files(state, watch.path, contents)
        _check_cli(config_file, watch.path / "a.txt")


async def _run(index: Index, config: Config, watch_id: int) -> None:
    recorder = Recorder(index)
    state = config.daemon.state_dir
    runners = EvidenceRunners(recorder=recorder, state_dir=state, locks=PathLocks())
    try:
        runners.apply(runners.prepare(config), {watch_id: "adjacent"})
        assert set(runners.tasks()) == {"notarizing"}
        await _until(lambda: runners.status()[KIND] is not None)
        await _until(lambda: (runners.status()[KIND] or {}).get("completed") == 3)
        # One notary request for the three files: the strategy took them as one batch.
        assert [len(digests) for digests in NOTARY.requests] == [3]
        # Each receipt is pending, and the runner queued its upgrade job with it.
        proofs = _query(state, "SELECT status FROM proofs")
        assert [p["status"] for p in proofs] == ["pending"] * 3
        upgrades = _query(state, "SELECT proof_id FROM jobs WHERE action = 'upgrade'")
        assert sorted(job["proof_id"] for job in upgrades) == [1, 2, 3]
        NOTARY.upgrades_open.set()
        # The first answer is "not yet": that job backs off by the strategy's retry_after.
        await _until(lambda: (runners.status()[KIND] or {}).get("completed") == 6)
        assert [len(digests) for digests in NOTARY.requests] == [3, 1, 1, 1, 1]
    finally:
        await runners.close()
        recorder.close()


def _check_index_and_files(state: Path, watched: Path, contents: dict[str, bytes]) -> None:
    jobs = _query(state, "SELECT kind, action, state, tries FROM jobs ORDER BY id")
    assert [tuple(job)[:3] for job in jobs] == [(KIND, "obtain", "done")] * 3 + [
        (KIND, "upgrade", "done")
    ] * 3
    assert sorted(job["tries"] for job in jobs if job["action"] == "upgrade") == [1, 1, 2]
    proofs = _query(state, "SELECT kind, provider, status, sidecar_sha256 FROM proofs")
    assert {(p["kind"], p["provider"], p["status"]) for p in proofs} == {
        (KIND, "notary", "complete")
    }
    assert len(proofs) == 3  # an upgrade extends its proof's row: one per version
    for name, data in contents.items():
        digest = hashlib.sha256(data).digest()
        sidecar = (watched / f"{name}.{EXTENSION}").read_bytes()
        assert sidecar == receipt(digest, notary="notary", level=2)
        # Every receipt is archived, the pending one the upgrade replaced included (rule 6).
        for level in (1, 2):
            kept = hashlib.sha256(receipt(digest, notary="notary", level=level)).hexdigest()
            assert archive_path(state, kept, EXTENSION).is_file()


def _check_cli(config_file: Path, path: Path) -> None:
    runner = CliRunner()
    verified = runner.invoke(cli, ["--config", str(config_file), "verify", "--json", str(path)])
    assert verified.exit_code == 0, verified.output
    [evidence] = json.loads(verified.stdout)["files"][0]["evidence"]
    assert (evidence["kind"], evidence["status"], evidence["provider"]) == (
        KIND,
        "valid",
        "notary",
    )
    assert evidence["authority"] == "Fake Notary (level 2)"
    line = runner.invoke(cli, ["--config", str(config_file), "verify", str(path)])
    assert line.stdout.startswith(f"{path}: fake valid 2026-01-02T03:04:05Z Fake Notary")
    shown = runner.invoke(cli, ["--config", str(config_file), "show", "--json", str(path)])
    assert shown.exit_code == 0, shown.output
    [version] = json.loads(shown.stdout)["file"]["versions"]
    assert [(p["kind"], p["status"]) for p in version["proofs"]] == [(KIND, "complete")]
    assert sorted(job["action"] for job in version["jobs"]) == ["obtain", "upgrade"]


def test_the_guide_names_files_that_exist() -> None:
    """docs/adding-an-evidence-kind.md is checked against the tree: each module it names
    (not a placeholder like ``store/formats/<kind>.py``) is there."""
    guide = (REPO / "docs" / "adding-an-evidence-kind.md").read_text()
    named = set(re.findall(r"`((?:daemon|store|tests|docs)/[\w/.-]+\.(?:py|md))`", guide))
    assert named, "the guide names no files"
    missing = sorted(name for name in named if not (REPO / name).is_file())
    assert not missing, f"the guide names files that do not exist: {missing}"
