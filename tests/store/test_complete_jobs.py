"""complete_jobs: the rounds of a batch ended in one write transaction (store/index/jobs.py).

Exactly once still holds per job (each is checked pending inside the transaction), and the
transaction is all or nothing: one completion the index refuses leaves every job of the set
pending, so the caller can record them one by one (daemon/evidence/finisher.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stampd.store.index.database import Index, index_path
from stampd.store.index.jobs import Attempt, Completion, FollowUp, NewProof, complete_jobs
from stampd.store.kinds import EvidenceKind, JobAction
from tests.conftest import settled

ROOT = Path("/srv/records")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with Index.open(index_path(tmp_path)) as opened:
        yield opened


def recorded_jobs(index: Index, count: int) -> list[tuple[int, int, str]]:
    """``count`` files recorded with an ots job each: (job id, version id, sha256)."""
    watch = index.ensure_watch(ROOT)
    items = []
    for number in range(count):
        data = f"file {number}".encode()
        sha256 = hashlib.sha256(data).hexdigest()
        items.append(
            settled(
                watch,
                ROOT / f"f{number}",
                sha256=sha256,
                sha512=hashlib.sha512(data).hexdigest(),
                evidence=("ots",),
                ino=100 + number,
            )
        )
    return [
        (result.job_ids[0], result.version_id, item.sha256)
        for result, item in zip(index.record_settled(items), items, strict=True)
    ]


def completion(job_id: int, version_id: int, sha256: str) -> Completion:
    proof = NewProof(
        kind=EvidenceKind.OTS,
        provider="http://127.0.0.1:1",
        digest_alg="sha256",
        digest=sha256,
        gen_time=None,
        serial=None,
        authority=None,
        not_after=None,
        sidecar_sha256=hashlib.sha256(sha256.encode()).hexdigest(),
        status="pending",
    )
    attempt = Attempt("http://127.0.0.1:1", "2030-01-01T00:00:00.000000Z", 3.0)
    return Completion(
        job_id=job_id,
        version_id=version_id,
        proof=proof,
        attempts=(attempt,),
        follow_up=FollowUp(JobAction.UPGRADE, "2030-01-01T01:00:00.000000Z"),
    )


def states(index: Index) -> dict[str, int]:
    rows = index.conn.execute(
        "SELECT state, COUNT(*) FROM jobs WHERE action = 'obtain' GROUP BY state"
    ).fetchall()
    return {str(state): int(count) for state, count in rows}


def test_every_completion_of_a_set_is_recorded_with_its_follow_up(index: Index) -> None:
    jobs = recorded_jobs(index, 5)
    ids = complete_jobs(index, [completion(*job) for job in jobs])
    assert len(set(ids)) == 5 and None not in ids
    assert states(index) == {"done": 5}
    rows = index.conn.execute(
        "SELECT j.id, j.proof_id, p.version_id, p.status FROM jobs j JOIN proofs p"
        " ON p.id = j.proof_id WHERE j.action = 'obtain' ORDER BY j.id"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (job_id, proof_id, version_id, "pending")
        for (job_id, version_id, _), proof_id in zip(jobs, ids, strict=True)
    ]
    # Each pending proof has its upgrade job, each job its attempt.
    upgrades = index.conn.execute(
        "SELECT proof_id FROM jobs WHERE action = 'upgrade' AND state = 'pending' ORDER BY id"
    ).fetchall()
    assert [row[0] for row in upgrades] == ids
    assert index.conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 5


def test_a_job_listed_twice_or_already_done_is_recorded_once(index: Index) -> None:
    first, second = recorded_jobs(index, 2)
    [done_before] = complete_jobs(index, [completion(*first)])
    ids = complete_jobs(index, [completion(*first), completion(*second), completion(*second)])
    assert ids[0] is None and ids[1] is not None and ids[2] is None
    assert done_before is not None
    assert index.conn.execute("SELECT COUNT(*) FROM proofs").fetchone()[0] == 2
    assert index.conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 2


def test_one_refused_completion_rolls_back_the_whole_set(index: Index) -> None:
    jobs = recorded_jobs(index, 3)
    completions = [completion(*job) for job in jobs]
    # A version that does not exist: the proofs row's foreign key refuses it.
    job_id, _, sha256 = jobs[1]
    completions[1] = completion(job_id, 999_999, sha256)
    with pytest.raises(sqlite3.IntegrityError):
        complete_jobs(index, completions)
    assert states(index) == {"pending": 3}
    assert index.conn.execute("SELECT COUNT(*) FROM proofs").fetchone()[0] == 0
    assert index.conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 0
    # The writer is usable afterwards: the transaction was rolled back, not left open.
    assert None not in complete_jobs(index, [completion(*jobs[0]), completion(*jobs[2])])
    assert states(index) == {"done": 2, "pending": 1}
