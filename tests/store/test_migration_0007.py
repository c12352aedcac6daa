"""Schema step 0007: the CHECKs of files and jobs as comparisons, by a table rebuild.

SQLite builds an ephemeral table at every row for a CHECK's ``IN`` list of three or more
values; every new file inserts a files row and a jobs row per evidence kind (issue 13). The
rebuild must keep every row, index and reference, and the constraints must refuse what they
refused before.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from stampd.store.index import versions
from stampd.store.index.database import Index, index_path
from stampd.store.index.schema import FILE_STATES, JOB_ACTIONS, JOB_STATES, migrations
from stampd.store.index.times import utc_now
from tests.conftest import settled

STEP = "0007_checks_as_comparisons"
TABLES = ("watches", "files", "versions", "proofs", "jobs", "attempts")


def _index_before_0007(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations.apply(Database(conn), stop_before=STEP)
    now = utc_now()
    with conn:
        watch = conn.execute("INSERT INTO watches (path, added_at) VALUES ('/srv', 'x')").lastrowid
        assert watch is not None
        recorded = versions.record_settled(
            conn,
            [
                settled(watch, Path(f"/srv/{n}"), sha256=f"{n}" * 64, sha512="b" * 128, ino=n)
                for n in range(1, 4)
            ],
            now=now,
        )
        versions.mark_missing(conn, [Path("/srv/2")], now=now)
        versions.record_unreadable(
            conn, watch_id=watch, path=Path("/srv/u"), stat=None, error_class="x", message="m",
            now=now,
        )  # fmt: skip
        proof = conn.execute(
            "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
            " created_at, updated_at) VALUES (?, 'tsr', 't', 'complete', 'sha256', 'd', 'x', 'x')",
            (recorded[0].version_id,),
        ).lastrowid
        conn.execute(
            "UPDATE jobs SET state = 'done', proof_id = ? WHERE id = ?",
            (proof, recorded[0].job_ids[0]),
        )
        conn.execute(
            "INSERT INTO attempts (job_id, provider, started_at) VALUES (?, 't', 'x')",
            (recorded[0].job_ids[0],),
        )
    conn.close()


def _snapshot(conn: sqlite3.Connection) -> dict[str, object]:
    return {
        "rows": {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES},
        "indexes": sorted(
            conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")
        ),
    }


def _ephemeral(conn: sqlite3.Connection, sql: str) -> bool:
    params = (None,) * sql.count("?")
    return any(row[1] == "OpenEphemeral" for row in conn.execute(f"EXPLAIN {sql}", params))


INSERT_FILE = (
    "INSERT INTO files (watch_id, path, dir, state, first_seen_at, updated_at)"
    " VALUES (1, ?, '/srv', ?, 'x', 'x')"
)
INSERT_JOB = (
    "INSERT INTO jobs (kind, action, version_id, state, next_try_at, created_at, updated_at)"
    " VALUES ('tsr', ?, 1, ?, 'x', 'x', 'x')"
)


def test_0007_keeps_every_row_index_and_reference(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    _index_before_0007(path)
    with sqlite3.connect(path) as conn:
        before = _snapshot(conn)
        assert _ephemeral(conn, INSERT_FILE) and _ephemeral(conn, INSERT_JOB)
    with Index.open(path) as index:
        conn = index.conn
        assert (STEP,) in conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
        assert _snapshot(conn) == before
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        # What a new file costs: no ephemeral table per row any more.
        assert not _ephemeral(conn, INSERT_FILE) and not _ephemeral(conn, INSERT_JOB)


def test_the_constraints_refuse_what_they_refused_before(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        conn = index.conn
        index.ensure_watch(Path("/srv"))
        (recorded,) = index.record_settled(
            [settled(1, Path("/srv/a"), sha256="a" * 64, sha512="b" * 128, evidence=[])]
        )
        assert recorded.version_id == 1
        for n, state in enumerate(FILE_STATES):
            with index.write():
                conn.execute(INSERT_FILE, (f"/srv/ok{n}", state))
        for action in JOB_ACTIONS:
            for state in JOB_STATES:
                with index.write():
                    conn.execute(INSERT_JOB, (action, state))
        for sql, values in (
            (INSERT_FILE, ("/srv/bad", "gone")),
            (INSERT_FILE, ("/srv/bad", "")),
            (INSERT_JOB, ("stamp", "pending")),
            (INSERT_JOB, ("obtain", "waiting")),
            (INSERT_JOB, ("OBTAIN", "pending")),
        ):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"), index.write():
                conn.execute(sql, values)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"), index.write():
            conn.execute("UPDATE files SET racy = 2 WHERE id = 1")
