"""The ``tsr`` job runner against local TSAs over loopback, with a real index and real files.

Each test records versions in a real index, runs the :class:`JobRunner` with the ``tsr``
strategy (:class:`TsrStrategy`) until its jobs end, and
then looks at what an operator would: the sidecar next to the file, the archive, and the
proof, job and attempt rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sqlite3
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from stampd.daemon.evidence.backoff import Backoff, backoff_seconds
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.runner import JobRunner
from stampd.daemon.evidence.tsa import Rfc3161Provider
from stampd.daemon.evidence.tsr import TsrStrategy
from stampd.daemon.watch.recorder import Recorder
from stampd.store.files.archive import archive_path
from stampd.store.files.filestat import FileStat
from stampd.store.formats.tsp import build_request, load_timestamp
from stampd.store.index import queries
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Settled
from stampd.store.trust import load_anchors
from stampd.store.tsr_verifier import AnchorSet, TsrVerifier
from tests.conftest import require_tool
from tests.fake_tsa import FakeTsa, OpenSslTsa
from tests.tsa_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Stamping")


@pytest.fixture(scope="module")
def good(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as server:
        yield server


@pytest.fixture(scope="module")
def bad(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki, hang_seconds=5) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(good: FakeTsa, bad: FakeTsa) -> None:
    good.mode = "ok"
    bad.mode = "ok"


@dataclass
class Tsa:
    name: str
    url: str
    anchors: tuple[x509.Certificate, ...]


@dataclass
class Rig:
    """A watched directory, a state directory and an index, as the daemon has them."""

    watched: Path
    state: Path
    index: Index
    watch_id: int

    def record(self, name: str, data: bytes, *, evidence: tuple[str, ...] = ("tsr",)) -> Path:
        path = self.watched / name
        path.write_bytes(data)
        info = os.stat(path)
        stat = FileStat(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        self.index.record_settled(
            [
                Settled(
                    watch_id=self.watch_id,
                    path=path,
                    stat=stat,
                    sha256=hashlib.sha256(data).hexdigest(),
                    sha512=hashlib.sha512(data).hexdigest(),
                    hashed_at=utc_now(),
                    racy=False,
                    evidence=evidence,
                )
            ]
        )
        return path

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        conn = open_reader(index_path(self.state))
        try:
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def jobs(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM jobs WHERE kind = 'tsr' ORDER BY id")

    def attempts(self) -> list[tuple[str, str | None, int | None]]:
        rows = self.query("SELECT provider, error_class, http_status FROM attempts ORDER BY id")
        return [(r["provider"], r["error_class"], r["http_status"]) for r in rows]

    def proofs(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM proofs ORDER BY id")

    def all_jobs_ended(self) -> bool:
        return all(job["state"] != "pending" for job in self.jobs())

    def stamp(
        self,
        tsas: Sequence[Tsa],
        *,
        until: Callable[[], bool] | None = None,
        layout: str = "adjacent",
        digest: str = "sha256",
        timeout: float = 1.0,
        retry: float = 30.0,
        wait: float = 30.0,
    ) -> dict[str, Any]:
        """Run the stamper until ``until`` holds (default: every job ended); its status."""
        return asyncio.run(
            self._stamp(tsas, until or self.all_jobs_ended, layout, digest, timeout, retry, wait)
        )

    async def _stamp(
        self,
        tsas: Sequence[Tsa],
        until: Callable[[], bool],
        layout: str,
        digest: str,
        timeout: float,
        retry: float,
        wait: float,
    ) -> dict[str, Any]:
        recorder = Recorder(self.index)
        async with httpx.AsyncClient() as client:
            providers = [
                Rfc3161Provider(
                    name=t.name, url=t.url, client=client, anchors=t.anchors, timeout=timeout
                )
                for t in tsas
            ]
            strategy = TsrStrategy(
                pool=ProviderPool(providers, selection="priority"),
                verifier=TsrVerifier([AnchorSet(t.name, t.anchors) for t in tsas]),
                digest_alg=digest,
                backoff=Backoff(retry, retry * 4),
            )
            stamper = JobRunner(
                recorder=recorder,
                strategy=strategy,
                state_dir=self.state,
                layouts={self.watch_id: layout},  # type: ignore[dict-item]
                rng=random.Random(7),
            )
            task = asyncio.create_task(stamper.run())
            deadline = asyncio.get_running_loop().time() + wait
            try:
                while not until():
                    assert asyncio.get_running_loop().time() < deadline, self.jobs()
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
                return stamper.status()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                recorder.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    watched = tmp_path / "watched"
    watched.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    index = Index.open(index_path(state))
    try:
        yield Rig(watched, state, index, index.ensure_watch(watched))
    finally:
        index.close()


def _tsa(name: str, server: FakeTsa | OpenSslTsa, pki: Pki) -> Tsa:
    return Tsa(name, server.url, load_anchors(pki.root_pem))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".tsr")


def _archived(rig: Rig, data: bytes) -> Path:
    return archive_path(rig.state, hashlib.sha256(data).hexdigest(), "tsr")


def _imprint(tsr: bytes) -> bytes:
    return load_timestamp(tsr).facts.hashed_message


def _openssl_verify(openssl: str, data: Path, tsr: Path, root: Path) -> str:
    result = subprocess.run(
        [openssl, "ts", "-verify", "-data", data, "-in", tsr, "-CAfile", root],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


# --- the happy path -------------------------------------------------------------------------


def test_a_job_ends_with_sidecar_archive_copy_proof_row_and_attempt(
    rig: Rig, good: FakeTsa, pki: Pki
) -> None:
    data = b"minutes of the board meeting\n"
    path = rig.record("minutes.txt", data)
    before = os.stat(path)

    status = rig.stamp([_tsa("good", good, pki)])

    tsr = _sidecar(path).read_bytes()
    assert _imprint(tsr) == hashlib.sha256(data).digest()
    assert _archived(rig, tsr).read_bytes() == tsr  # rule 1: archived as well
    [proof] = rig.proofs()
    assert (proof["kind"], proof["status"], proof["provider"]) == ("tsr", "complete", "good")
    assert proof["digest_alg"] == "sha256"
    assert proof["digest"] == hashlib.sha256(data).hexdigest()
    assert proof["sidecar_sha256"] == hashlib.sha256(tsr).hexdigest()
    assert proof["authority"] and proof["gen_time"] and proof["not_after"] and proof["serial"]
    [job] = rig.jobs()
    assert (job["state"], job["tries"], job["proof_id"]) == ("done", 1, proof["id"])
    assert rig.attempts() == [("good", None, 200)]
    assert status["completed"] == 1
    after = os.stat(path)  # rule 4: the data file is never touched
    assert (after.st_mtime_ns, after.st_ctime_ns, after.st_mode) == (
        before.st_mtime_ns,
        before.st_ctime_ns,
        before.st_mode,
    )


def test_every_sidecar_from_an_openssl_tsa_verifies_with_openssl(rig: Rig, pki: Pki) -> None:
    openssl = require_tool("openssl")
    paths = [rig.record(f"record-{n}.bin", os.urandom(100 + n)) for n in range(5)]
    with OpenSslTsa(rig.state.parent / "openssl-tsa", pki) as server:
        rig.stamp([_tsa("openssl", server, pki)])
    for path in paths:
        output = _openssl_verify(openssl, path, _sidecar(path), pki.root_pem)
        assert "Verification: OK" in output, output


@pytest.mark.parametrize("digest", ["sha384", "sha512"])
def test_the_configured_digest_is_what_the_tsa_signs(
    rig: Rig, good: FakeTsa, pki: Pki, digest: str
) -> None:
    data = b"a contract\n"
    path = rig.record("contract.pdf", data)
    rig.stamp([_tsa("good", good, pki)], digest=digest)
    tsr = _sidecar(path).read_bytes()
    assert load_timestamp(tsr).facts.algorithm == digest
    assert _imprint(tsr) == hashlib.new(digest, data).digest()
    assert rig.proofs()[0]["digest_alg"] == digest


def test_sha384_of_a_version_no_longer_on_disk_cancels_its_job(
    rig: Rig, good: FakeTsa, pki: Pki
) -> None:
    path = rig.record("draft.txt", b"first draft\n")
    path.write_bytes(b"changed before stamping\n")  # the index still says "first draft"
    requests = good.requests
    rig.stamp([_tsa("good", good, pki)], digest="sha384")
    [job] = rig.jobs()
    assert (job["state"], job["last_error_class"]) == ("cancelled", "content_gone")
    assert "set timestamp.digest to sha256 or sha512" in job["last_error"]
    assert not _sidecar(path).exists()
    assert good.requests == requests


def test_mirror_layout_writes_under_the_state_directory(rig: Rig, good: FakeTsa, pki: Pki) -> None:
    path = rig.record("report.csv", b"a,b\n1,2\n")
    rig.stamp([_tsa("good", good, pki)], layout="mirror")
    mirrored = rig.state / "mirror" / path.parent.relative_to("/") / "report.csv.tsr"
    assert _imprint(mirrored.read_bytes()) == hashlib.sha256(b"a,b\n1,2\n").digest()
    assert not _sidecar(path).exists()


# --- failover: every way a TSA can fail, at the level of a job ------------------------------

MISBEHAVIOUR = {
    "hang": ("timeout", None),
    "status_500": ("http_status", 500),
    "status_503_retry_after": ("http_status", 503),
    "status_429_retry_after": ("rate_limited", 429),
    "garbage": ("parse", None),
    "wrong_content_type": ("parse", 200),
    "oversized": ("parse", 200),
    "reject": ("rejected", None),
    "wrong_nonce": ("verify", None),
    "wrong_imprint": ("verify", None),
    "bad_signature": ("verify", None),
    "no_ess": ("verify", None),
    "wrong_ess": ("verify", None),
}


@pytest.mark.parametrize("mode", sorted(MISBEHAVIOUR))
def test_a_misbehaving_tsa_writes_nothing_and_the_next_one_stamps(
    rig: Rig, bad: FakeTsa, good: FakeTsa, pki: Pki, mode: str
) -> None:
    bad.mode = mode
    data = f"record for {mode}\n".encode()
    path = rig.record("record.txt", data)
    rig.stamp([_tsa("bad", bad, pki), _tsa("good", good, pki)])
    error_class, http_status = MISBEHAVIOUR[mode]
    assert rig.attempts() == [("bad", error_class, http_status), ("good", None, 200)]
    tsr = _sidecar(path).read_bytes()
    assert rig.proofs()[0]["provider"] == "good"
    assert _imprint(tsr) == hashlib.sha256(data).digest()
    # Nothing the bad TSA sent reached the archive either: the only archived proof is this one.
    assert [p.name for p in (rig.state / "archive").rglob("*.tsr")] == [
        f"{hashlib.sha256(tsr).hexdigest()}.tsr"
    ]


@pytest.mark.parametrize(
    "case", ["eku_not_critical", "extra_eku", "expired", "untrusted_root", "foreign_root_embedded"]
)
def test_a_tsa_certificate_that_must_not_be_trusted_fails_over(
    rig: Rig, good: FakeTsa, pki: Pki, tmp_path: Path, case: str
) -> None:
    past = datetime.now(UTC) - timedelta(days=800)
    other = {
        "eku_not_critical": lambda: make_pki(tmp_path, "Stamping", tsa_eku_critical=False),
        "extra_eku": lambda: make_pki(tmp_path, "Stamping", extra_eku=True),
        "expired": lambda: make_pki(
            tmp_path, "Stamping", tsa_not_before=past, tsa_not_after=past + timedelta(days=365)
        ),
        "untrusted_root": lambda: make_pki(tmp_path, "Elsewhere"),
        "foreign_root_embedded": lambda: make_pki(tmp_path, pki.name),
    }[case]()
    path = rig.record("record.txt", f"record for {case}\n".encode())
    with FakeTsa(other) as impostor:
        # Both are configured with the genuine root: only the good TSA's tokens chain to it.
        rig.stamp([_tsa("impostor", impostor, pki), _tsa("good", good, pki)])
    assert rig.attempts() == [("impostor", "verify", None), ("good", None, 200)]
    assert load_timestamp(_sidecar(path).read_bytes()).certificates[0] != other.tsa_cert


# --- when every TSA fails ------------------------------------------------------------------


def test_when_every_tsa_fails_the_job_backs_off_and_shows_in_status(
    rig: Rig, bad: FakeTsa, good: FakeTsa, pki: Pki
) -> None:
    bad.mode = "status_500"
    good.mode = "reject"
    path = rig.record("record.txt", b"nobody will stamp this today\n")
    rig.stamp(
        [_tsa("bad", bad, pki), _tsa("good", good, pki)],
        until=lambda: rig.jobs()[0]["tries"] >= 1,
    )
    [job] = rig.jobs()
    assert job["state"] == "pending"
    assert job["last_error_class"] == "rejected"
    assert "bad: http_status" in job["last_error"] and "good: rejected" in job["last_error"]
    next_try = datetime.fromisoformat(job["next_try_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=14) < next_try - datetime.now(UTC) <= timedelta(seconds=30)
    assert not _sidecar(path).exists()
    conn = open_reader(index_path(rig.state))
    try:
        summary = queries.status_summary(conn, now=utc_now())
    finally:
        conn.close()
    assert summary.jobs_backing_off == 1
    assert summary.backoff_errors == {"rejected": 1}


def test_all_tsas_down_then_one_back_completes_every_job(
    rig: Rig, bad: FakeTsa, good: FakeTsa, pki: Pki
) -> None:
    bad.mode = "status_503_retry_after"
    good.mode = "status_500"
    paths = [rig.record(f"r{n}.txt", f"record {n}\n".encode()) for n in range(5)]
    tsas = [_tsa("bad", bad, pki), _tsa("good", good, pki)]
    rig.stamp(tsas, retry=0.2, until=lambda: all(j["tries"] >= 2 for j in rig.jobs()))
    assert not any(_sidecar(p).exists() for p in paths)
    good.mode = "ok"
    rig.stamp(tsas, retry=0.2)
    assert all(j["state"] == "done" for j in rig.jobs())
    assert all(_sidecar(p).exists() for p in paths)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    waits = [backoff_seconds(n, base=30, cap=3600, rng=rng) for n in range(1, 12)]
    for n, wait in enumerate(waits, start=1):
        full = min(3600, 30 * 2 ** (n - 1))
        assert full / 2 <= wait <= full
    assert max(waits) <= 3600
    assert len({round(w, 6) for w in waits}) == len(waits)  # jittered, not lock-step


# --- reuse, adoption, history ---------------------------------------------------------------


def test_the_same_content_reuses_the_archived_token(rig: Rig, good: FakeTsa, pki: Pki) -> None:
    first = rig.record("a.txt", b"identical\n")
    rig.stamp([_tsa("good", good, pki)])
    requests = good.requests
    second = rig.record("copy-of-a.txt", b"identical\n")
    rig.stamp([_tsa("good", good, pki)])
    assert good.requests == requests  # no second request for the same digest
    assert _sidecar(second).read_bytes() == _sidecar(first).read_bytes()
    assert [p["version_id"] for p in rig.proofs()] == [1, 2]
    assert len(rig.attempts()) == 1


def test_a_corrupted_archive_copy_is_not_reused(rig: Rig, good: FakeTsa, pki: Pki) -> None:
    rig.record("a.txt", b"identical\n")
    rig.stamp([_tsa("good", good, pki)])
    archived = next((rig.state / "archive").rglob("*.tsr"))
    archived.chmod(0o644)
    archived.write_bytes(b"\x30\x00")
    second = rig.record("b.txt", b"identical\n")
    requests = good.requests
    rig.stamp([_tsa("good", good, pki)])
    assert good.requests == requests + 1
    assert _imprint(_sidecar(second).read_bytes()) == hashlib.sha256(b"identical\n").digest()


def test_a_sidecar_left_by_a_crash_is_adopted_not_restamped(
    rig: Rig, good: FakeTsa, pki: Pki
) -> None:
    data = b"stamped, then the daemon was killed\n"
    path = rig.record("killed.txt", data)
    request = build_request(hashlib.sha256(data).digest(), "sha256")
    left_behind = good.build_reply(request.der)
    _sidecar(path).write_bytes(left_behind)
    requests = good.requests
    rig.stamp([_tsa("good", good, pki)])
    assert good.requests == requests
    assert _sidecar(path).read_bytes() == left_behind
    assert _archived(rig, left_behind).read_bytes() == left_behind
    assert rig.proofs()[0]["sidecar_sha256"] == hashlib.sha256(left_behind).hexdigest()
    assert rig.attempts() == []


def test_a_sidecar_that_does_not_verify_is_archived_then_replaced(
    rig: Rig, good: FakeTsa, pki: Pki
) -> None:
    path = rig.record("record.txt", b"the real content\n")
    stray = b"not a timestamp at all"
    _sidecar(path).write_bytes(stray)
    rig.stamp([_tsa("good", good, pki)])
    assert _imprint(_sidecar(path).read_bytes()) == hashlib.sha256(b"the real content\n").digest()
    assert _archived(rig, stray).read_bytes() == stray  # rule 6: never silently overwritten


def test_a_changed_file_gets_a_new_sidecar_and_the_old_one_goes_to_the_archive(
    rig: Rig, good: FakeTsa, pki: Pki
) -> None:
    path = rig.record("ledger.txt", b"version one\n")
    rig.stamp([_tsa("good", good, pki)])
    old = _sidecar(path).read_bytes()
    rig.record("ledger.txt", b"version two\n")
    rig.stamp([_tsa("good", good, pki)])
    new = _sidecar(path).read_bytes()
    assert _imprint(new) == hashlib.sha256(b"version two\n").digest()
    assert _archived(rig, old).read_bytes() == old
    assert _archived(rig, new).read_bytes() == new
    assert [(p["version_id"], p["status"]) for p in rig.proofs()] == [
        (1, "complete"),
        (2, "complete"),
    ]


def test_a_superseded_version_is_stamped_into_the_archive_only(
    rig: Rig, good: FakeTsa, pki: Pki
) -> None:
    path = rig.record("notes.txt", b"short-lived\n")
    rig.record("notes.txt", b"what stayed\n")  # changed before the first job ran
    rig.stamp([_tsa("good", good, pki)])
    assert _imprint(_sidecar(path).read_bytes()) == hashlib.sha256(b"what stayed\n").digest()
    proofs = rig.proofs()
    assert len(proofs) == 2
    superseded = next(p for p in proofs if p["version_id"] == 1)
    archived = archive_path(rig.state, superseded["sidecar_sha256"], "tsr").read_bytes()
    assert _imprint(archived) == hashlib.sha256(b"short-lived\n").digest()


def test_a_symlink_planted_at_the_sidecar_name_is_never_followed(
    rig: Rig, good: FakeTsa, pki: Pki, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = rig.record("record.txt", b"content\n")
    _sidecar(path).symlink_to(victim)
    rig.stamp([_tsa("good", good, pki)], until=lambda: rig.jobs()[0]["tries"] >= 1)
    [job] = rig.jobs()
    assert (job["state"], job["last_error_class"]) == ("pending", "unsafe_path")
    assert victim.read_bytes() == b"precious"
    assert _sidecar(path).is_symlink()


def test_jobs_of_other_kinds_are_left_alone(rig: Rig, good: FakeTsa, pki: Pki) -> None:
    rig.record("record.txt", b"content\n", evidence=("ots", "tsr"))
    rig.stamp([_tsa("good", good, pki)])
    states = {row["kind"]: row["state"] for row in rig.query("SELECT kind, state FROM jobs")}
    assert states == {"ots": "pending", "tsr": "done"}


def test_the_runner_stops_when_cancelled_at_the_moment_it_is_woken(rig: Rig) -> None:
    """Shutdown cancels the runner; a job finishing (a wake-up) in the same loop tick must not
    swallow that cancellation (asyncio.wait_for on 3.11 did: python/cpython#86296)."""

    async def main() -> bool:
        recorder = Recorder(rig.index)
        strategy = TsrStrategy(
            pool=ProviderPool([]),
            verifier=TsrVerifier([]),
            digest_alg="sha256",
            backoff=Backoff(30, 60),
        )
        stamper = JobRunner(recorder=recorder, strategy=strategy, state_dir=rig.state, layouts={})
        task = asyncio.create_task(stamper.run())
        await asyncio.sleep(0.1)  # idle, waiting to be woken
        stamper.wake()
        task.cancel()
        done, _pending = await asyncio.wait([task], timeout=3)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        recorder.close()
        return bool(done)

    assert asyncio.run(main()), "the runner kept running after it was cancelled"
