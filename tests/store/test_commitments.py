"""Schema step 0005 and the (provider, commitment) pairs of a proof in the index (issue 12).

Real SQLite files: an index stampd wrote at step 0004 upgrades in place (every row kept, the
table added), ``complete_job`` records a pending proof's pairs in its own transaction and an
upgrade marks the anchored ones, and ``show``'s query reads them — also from an index a
read-only CLI finds still at 0004.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from stampd.store.index import commitments, queries
from stampd.store.index.commitments import Commitment, record_commitments
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import (
    Attempt,
    FollowUp,
    NewProof,
    complete_job,
    record_proof,
)
from stampd.store.index.schema import migrations
from stampd.store.index.times import utc_now
from stampd.store.kinds import JobAction
from tests.conftest import settled

STEP = "0005_proof_commitments"
A64, A128 = "a" * 64, "a" * 128
CAL_A, CAL_B = "https://a.calendar.example", "https://b.calendar.example"
ONE, TWO = bytes(range(44)), bytes(range(1, 45))


def _ots_proof(status: str, *pairs: Commitment) -> NewProof:
    return NewProof(
        "ots", f"{CAL_A}, {CAL_B}", "sha256", A64, None, None, None, None, "f" * 64,
        status=status, commitments=pairs,
    )  # fmt: skip


def _tables(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))


def _rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT proof_id, provider, commitment, recorded_at, anchored_at FROM proof_commitments"
        " ORDER BY provider"
    ).fetchall()


def _index_at_0004(path: Path) -> int:
    """An index as stampd wrote it before 0005, with a pending ``ots`` proof; its version."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations.apply(Database(conn), stop_before=STEP)
    with conn:
        watch = conn.execute("INSERT INTO watches (path, added_at) VALUES ('/srv', 'x')").lastrowid
        assert watch is not None
        now = utc_now()
        file_id = conn.execute(
            "INSERT INTO files (watch_id, path, dir, first_seen_at, updated_at)"
            " VALUES (?, '/srv/a', '/srv', ?, ?)",
            (watch, now, now),
        ).lastrowid
        version = conn.execute(
            "INSERT INTO versions (file_id, size, mtime_ns, ctime_ns, dev, ino, sha256, sha512,"
            " seen_at, hashed_at) VALUES (?, 1, 1, 1, 1, 1, ?, ?, ?, ?)",
            (file_id, A64, A128, now, now),
        ).lastrowid
        conn.execute("UPDATE files SET current_version_id = ?", (version,))
        conn.execute(
            "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
            " created_at, updated_at) VALUES (?, 'ots', 'cal', 'pending', 'sha256', ?, ?, ?)",
            (version, A64, now, now),
        )
    conn.close()
    assert version is not None
    return version


def _everything(conn: sqlite3.Connection, tables: list[str]) -> dict[str, object]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


def test_an_index_at_0004_gets_the_table_and_keeps_every_row(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    _index_at_0004(path)
    with sqlite3.connect(path) as conn:
        old_tables = sorted(name for name in _tables(conn) if not name.startswith("sqlite_"))
        assert "proof_commitments" not in old_tables
        before = _everything(conn, [t for t in old_tables if t != "_sqlite_migrations"])
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        indexes_before = sorted(indexes)

    with Index.open(path) as index:
        conn = index.conn
        assert (STEP,) in conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
        assert _everything(conn, list(before)) == before
        definition = _tables(conn)["proof_commitments"]
        assert "WITHOUT ROWID" in definition and "REFERENCES proofs(id)" in definition
        columns = [(row[1], row[2], row[3], row[5]) for row in conn.execute(
            "PRAGMA table_info(proof_commitments)"
        )]  # fmt: skip
        assert columns == [
            ("proof_id", "INTEGER", 1, 1),
            ("provider", "TEXT", 1, 2),
            ("commitment", "BLOB", 1, 3),
            ("recorded_at", "TEXT", 1, 0),
            ("anchored_at", "TEXT", 0, 0),
        ]
        # The key is the table: no index of its own, none of the old ones touched (but
        # versions_sha256, which a later step, 0006, drops).
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        assert sorted(indexes) == [i for i in indexes_before if i[0] != "versions_sha256"]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), index.write():
            record_commitments(conn, 999, [Commitment(CAL_A, ONE)], now=utc_now())
        with index.write():
            record_commitments(conn, 1, [Commitment(CAL_A, ONE)], now=utc_now())
        assert [row[:3] for row in _rows(conn)] == [(1, CAL_A, ONE)]


def test_every_statement_on_the_table_is_answered_by_its_key(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        for sql, params in (
            (commitments._SQL_OF_PROOF, (1,)),
            (commitments._SQL_ANCHORED, ("t", 1, CAL_A, ONE)),
        ):
            plan = [row[3] for row in index.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert plan and all("USING PRIMARY KEY (proof_id=?" in step for step in plan), plan
            assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort either


def test_complete_job_records_the_pairs_and_an_upgrade_marks_the_anchored_one(
    tmp_path: Path,
) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        (recorded,) = index.record_settled(
            [settled(watch, Path("/srv/a"), sha256=A64, sha512=A128, evidence=["ots", "tsr"])]
        )
        ots_job, tsr_job = recorded.job_ids
        attempt = [Attempt(CAL_A, utc_now(), 1.0)]
        proof_id = complete_job(
            index,
            job_id=ots_job,
            version_id=recorded.version_id,
            proof=_ots_proof("pending", Commitment(CAL_A, ONE), Commitment(CAL_B, TWO)),
            attempts=attempt,
            follow_up=FollowUp(JobAction.UPGRADE, utc_now()),
        )
        assert proof_id is not None
        first = _rows(index.conn)
        assert [(r[0], r[1], r[2], r[4]) for r in first] == [
            (proof_id, CAL_A, ONE, None),
            (proof_id, CAL_B, TWO, None),
        ]
        # A kind that is complete at once records none.
        tsr = NewProof("tsr", "tsa", "sha256", A64, None, None, None, None, "e" * 64)
        complete_job(
            index, job_id=tsr_job, version_id=recorded.version_id, proof=tsr, attempts=attempt
        )
        assert len(_rows(index.conn)) == 2

        (upgrade,) = index.conn.execute(
            "SELECT id FROM jobs WHERE action = 'upgrade' AND state = 'pending'"
        ).fetchone()
        complete_job(
            index,
            job_id=upgrade,
            version_id=recorded.version_id,
            proof=_ots_proof(
                "complete", Commitment(CAL_A, ONE, anchored=True), Commitment(CAL_B, TWO)
            ),
            attempts=attempt,
            extends=proof_id,
        )
        (a, b) = _rows(index.conn)
        assert a[:4] == first[0][:4] and a[4] is not None and a[4] >= a[3]  # anchored, once
        assert b == first[1]  # still pending, recorded_at kept
        # Pairs are history: a later report that leaves A out, or calls it pending, keeps it.
        with index.write() as conn:
            record_commitments(conn, proof_id, [Commitment(CAL_A, ONE)], now="9999")
        assert _rows(index.conn) == [a, b]


def test_a_job_ended_elsewhere_records_no_pairs(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        (recorded,) = index.record_settled(
            [settled(watch, Path("/srv/a"), sha256=A64, sha512=A128, evidence=["ots"])]
        )
        with index.write() as conn:
            conn.execute("UPDATE jobs SET state = 'cancelled'")
        done = complete_job(
            index,
            job_id=recorded.job_ids[0],
            version_id=recorded.version_id,
            proof=_ots_proof("pending", Commitment(CAL_A, ONE)),
            attempts=[],
        )
        assert done is None and _rows(index.conn) == []


def test_a_proof_recorded_without_a_job_keeps_its_pairs(tmp_path: Path) -> None:
    """Sidecar repair records a moved sidecar's proof through record_proof."""
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        (recorded,) = index.record_settled(
            [settled(watch, Path("/srv/a"), sha256=A64, sha512=A128, evidence=[])]
        )
        proof = _ots_proof("complete", Commitment(CAL_A, ONE, anchored=True))
        proof_id = record_proof(index, version_id=recorded.version_id, proof=proof)
        ((row_proof, provider, commitment, recorded_at, anchored_at),) = _rows(index.conn)
        assert (row_proof, provider, commitment) == (proof_id, CAL_A, ONE)
        assert anchored_at == recorded_at  # anchored when first seen


def test_show_reads_the_pairs_and_an_index_still_at_0004_has_none(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    _index_at_0004(path)
    reader = open_reader(path)  # the CLI after an upgrade of stampd, before the daemon's
    try:
        detail = queries.file_detail(reader, Path("/srv/a"))
        assert detail is not None
        ((proof,),) = [version.proofs for version in detail.versions]
        assert proof.commitments == ()
    finally:
        reader.close()
    with Index.open(path) as index, index.write() as conn:
        record_commitments(
            conn, 1, [Commitment(CAL_B, TWO), Commitment(CAL_A, ONE, True)], now="2026-01-01"
        )
    reader = open_reader(path)
    try:
        detail = queries.file_detail(reader, Path("/srv/a"))
        assert detail is not None
        (proof,) = detail.versions[0].proofs
        assert proof.commitments == (
            commitments.CommitmentRow(CAL_A, ONE.hex(), "2026-01-01", "2026-01-01"),
            commitments.CommitmentRow(CAL_B, TWO.hex(), "2026-01-01", None),
        )
    finally:
        reader.close()
