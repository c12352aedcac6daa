"""Pending anchors in the index: `stampd upgrade`'s make_upgrades_due, and what status reads.

The rows are the ones the runner writes for an `.ots` proof still waiting for its block: the
obtain job completes with a `pending` proof and a follow-up `upgrade` job due later
(store/index/jobs.py complete_job), written here through the same store functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stampd.store.index import queries
from stampd.store.index.anchors import PendingAnchors
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import FollowUp, NewProof, complete_job, make_upgrades_due
from stampd.store.index.times import format_time
from stampd.store.kinds import EvidenceKind, JobAction
from tests.conftest import settled

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
ROOT = Path("/srv/records")


def _at(delta: timedelta) -> str:
    return format_time(NOW + delta)


def pending_anchor(index: Index, watch: int, path: Path, *, upgrade_in: timedelta) -> int:
    """Record `path` with an ots job, complete it with a pending proof; the upgrade job's id."""
    digest = f"{abs(hash(path)) % 10**12:064d}"
    (recorded,) = index.record_settled(
        [settled(watch, path, sha256=digest, sha512=digest * 2, evidence=("ots",), ino=hash(path))]
    )
    proof = NewProof(
        kind=EvidenceKind.OTS,
        provider="calendar",
        digest_alg="sha256",
        digest=digest,
        gen_time=None,
        serial=None,
        authority=None,
        not_after=None,
        sidecar_sha256=digest,
        status="pending",
    )
    proof_id = complete_job(
        index,
        job_id=recorded.job_ids[0],
        version_id=recorded.version_id,
        proof=proof,
        attempts=(),
        follow_up=FollowUp(JobAction.UPGRADE, _at(upgrade_in)),
    )
    row = index.conn.execute(
        "SELECT id FROM jobs WHERE proof_id = ? AND action = 'upgrade'", (proof_id,)
    ).fetchone()
    return int(row[0])


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with Index.open(index_path(tmp_path)) as opened:
        yield opened


def _next_try(index: Index, job_id: int) -> str:
    return str(
        index.conn.execute("SELECT next_try_at FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    )


def test_every_pending_upgrade_is_made_due_and_a_due_one_is_left_alone(index: Index) -> None:
    watch = index.ensure_watch(ROOT)
    later = pending_anchor(index, watch, ROOT / "a.txt", upgrade_in=timedelta(hours=5))
    much_later = pending_anchor(index, watch, ROOT / "b.txt", upgrade_in=timedelta(hours=20))
    due = pending_anchor(index, watch, ROOT / "c.txt", upgrade_in=-timedelta(minutes=1))
    result = make_upgrades_due(index, now=_at(timedelta()))
    assert (result.made_due, result.already_due) == (2, 1)
    assert _next_try(index, later) == _at(timedelta())
    assert _next_try(index, much_later) == _at(timedelta())
    assert _next_try(index, due) == _at(-timedelta(minutes=1))
    # The obtain jobs (done) are not touched, and asking again finds nothing to bring forward.
    again = make_upgrades_due(index, now=_at(timedelta()))
    assert (again.made_due, again.already_due) == (0, 3)


def test_only_the_upgrades_of_the_paths_given_are_made_due(index: Index) -> None:
    watch = index.ensure_watch(ROOT)
    hour = timedelta(hours=1)
    inside = pending_anchor(index, watch, ROOT / "dir" / "x.txt", upgrade_in=hour)
    deeper = pending_anchor(index, watch, ROOT / "dir" / "sub" / "y.txt", upgrade_in=hour)
    sibling = pending_anchor(index, watch, ROOT / "dir2" / "z.txt", upgrade_in=hour)
    named = pending_anchor(index, watch, ROOT / "one.txt", upgrade_in=hour)
    result = make_upgrades_due(index, now=_at(timedelta()), paths=[ROOT / "dir", ROOT / "one.txt"])
    assert (result.made_due, result.already_due) == (3, 0)
    assert {_next_try(index, job) for job in (inside, deeper, named)} == {_at(timedelta())}
    # "/srv/records/dir" is not a prefix of "/srv/records/dir2".
    assert _next_try(index, sibling) == _at(hour)
    nothing = make_upgrades_due(index, now=_at(timedelta()), paths=[ROOT / "absent"])
    assert (nothing.made_due, nothing.already_due) == (0, 0)


def test_status_counts_pending_anchors_and_the_age_of_the_oldest(index: Index) -> None:
    watch = index.ensure_watch(ROOT)
    pending_anchor(index, watch, ROOT / "a.txt", upgrade_in=timedelta(hours=1))
    pending_anchor(index, watch, ROOT / "b.txt", upgrade_in=timedelta(hours=1))
    # Made an hour before NOW, the first one three hours before.
    first = format_time(NOW - timedelta(hours=3))
    with index.write() as conn:
        conn.execute("UPDATE proofs SET created_at = ?", (format_time(NOW - timedelta(hours=1)),))
        conn.execute("UPDATE proofs SET created_at = ? WHERE id = 1", (first,))
    conn = open_reader(index.path)
    try:
        summary = queries.status_summary(conn, now=format_time(NOW))
    finally:
        conn.close()
    assert summary.pending_anchors == {"ots": PendingAnchors(2, first, 3 * 3600)}


def test_an_index_without_pending_anchors_says_zero(index: Index) -> None:
    conn = open_reader(index.path)
    try:
        summary = queries.status_summary(conn, now=format_time(NOW))
    finally:
        conn.close()
    assert summary.pending_anchors == {"ots": PendingAnchors(0, None, None)}
