"""Schema step 0004: the evidence kinds leave the schema for the registry (store/kinds.py).

An index written before 0004 is upgraded in place by the table rebuild of
sqlite.org/lang_altertable.html §7: every row, index and reference survives, the queries
users run keep their plans, and a kind the registry gains (here a test's own) can be stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from stampd.store import kinds
from stampd.store.files import repair
from stampd.store.index import jobs, queries, scan_rows, versions
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import Attempt, NewProof, complete_job, record_proof
from stampd.store.index.schema import JOB_ACTIONS, UnknownKindError, migrations
from stampd.store.index.times import utc_now
from stampd.store.kinds import JobAction, KindSpec
from tests.conftest import settled

STEP = "0004_kinds_from_registry"
TEST_KIND = KindSpec(
    "xyz",
    "test evidence",
    sidecar="xyzproof",
    actions=frozenset({JobAction.OBTAIN}),
    config_section=None,
    available=True,
)

#: What `ls`, `show` and `status` (and the runner, repair and scan) ask of proofs and jobs,
#: with parameters; each must keep its plan through the rebuild.
USER_QUERIES: list[tuple[str, tuple[object, ...]]] = [
    (queries._SQL_LIST_PAGE.format(lower=">="), ("/srv", "/srv0", "/srv", "/srv/", 100)),
    ("SELECT * FROM proofs WHERE version_id = ? ORDER BY id", (1,)),
    ("SELECT * FROM jobs WHERE version_id = ? ORDER BY id", (1,)),
    ("SELECT * FROM attempts WHERE job_id = ? ORDER BY id", (1,)),
    ("SELECT kind, status, COUNT(*) FROM proofs GROUP BY kind, status", ()),
    ("SELECT state, COUNT(*) FROM jobs GROUP BY state", ()),
    (
        "SELECT COALESCE(last_error_class, 'unknown'), COUNT(*) FROM jobs"
        " WHERE state = 'pending' AND next_try_at > ? AND tries > 0 GROUP BY 1",
        ("x",),
    ),
    (
        "SELECT COUNT(*) FROM proofs WHERE status = 'complete'"
        " AND not_after >= ? AND not_after < ?",
        ("a", "b"),
    ),
    (jobs._SQL_DUE, ("x", "tsr", "obtain", 10)),
    (jobs._SQL_KNOWN_PROOFS, ("d", "tsr", "sha256", 4)),
    (repair._SQL_CURRENT_PROOFS, (1,)),
    (repair._SQL_HELD_ELSEWHERE, ("s", "tsr", "/srv/a")),
    (scan_rows._SQL_LIVE_ROWS, (6, 3, "/srv")),
    (scan_rows._SQL_STAMPED_ROWS, (6, "/srv")),
    (scan_rows._SQL_ANY_SIDECAR_PROOF, ()),
]


def _index_before_0004(path: Path) -> None:
    """An index as stampd wrote it before 0004, holding every kind of row and reference."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations.apply(Database(conn), stop_before=STEP)
    now = utc_now()
    with conn:
        watch = conn.execute(
            "INSERT INTO watches (path, added_at) VALUES ('/srv', ?)", (now,)
        ).lastrowid
        assert watch is not None
        recorded = versions.record_settled(
            conn,
            [
                settled(watch, Path("/srv/a.pdf"), sha256="a" * 64, sha512="a" * 128, ino=1),
                settled(
                    watch,
                    Path("/srv/b.pdf"),
                    sha256="b" * 64,
                    sha512="b" * 128,
                    evidence=["tsr", "ots"],
                    ino=2,
                ),
            ],
            now=now,
        )
        version = recorded[0].version_id
        values = "'sha256', ?, 'x', 'x')"
        tsr = conn.execute(
            "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
            f" created_at, updated_at) VALUES (?, 'tsr', 'tsa', 'complete', {values}",
            (version, "a" * 64),
        ).lastrowid
        # A renewal points at the proof it extends (proofs.parent_id → proofs.id).
        conn.execute(
            "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
            " created_at, updated_at, parent_id, not_after)"
            " VALUES (?, 'ers', 'tsa', 'complete', 'sha256', ?, 'x', 'x', ?, '2030')",
            (version, "a" * 64, tsr),
        )
        conn.execute(
            "UPDATE jobs SET state = 'done', proof_id = ?, tries = 1 WHERE id = ?",
            (tsr, recorded[0].job_ids[0]),
        )
        conn.executemany(
            "INSERT INTO attempts (job_id, provider, started_at, error_class)"
            " VALUES (?, ?, 'x', ?)",
            [(recorded[0].job_ids[0], "tsa", "timeout"), (recorded[0].job_ids[0], "tsa", None)],
        )
    conn.close()


#: Tables that steps after 0004 add (empty after the upgrade): not what 0004 keeps.
LATER_TABLES = ("proof_commitments",)
#: Indexes that steps after 0004 drop (0006: versions_sha256): not what 0004 keeps.
LATER_DROPPED_INDEXES = ("versions_sha256",)


def _snapshot(conn: sqlite3.Connection) -> dict[str, object]:
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name <> '_sqlite_migrations' ORDER BY name"
        )
        if name not in LATER_TABLES
    ]
    return {
        "rows": {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in tables},
        "indexes": sorted(
            row
            for row in conn.execute(
                "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'"
            )
            if row[0] not in LATER_DROPPED_INDEXES
        ),
        "plans": [
            [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            for sql, params in USER_QUERIES
        ],
    }


@pytest.fixture
def old_index(tmp_path: Path) -> Iterator[Path]:
    path = index_path(tmp_path)
    _index_before_0004(path)
    yield path


def test_an_index_from_before_0004_keeps_every_row_index_and_plan(old_index: Path) -> None:
    with sqlite3.connect(old_index) as conn:
        before = _snapshot(conn)
        tables = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert "CHECK (kind IN" in tables["proofs"] and "CHECK (kind IN" in tables["jobs"]

    with Index.open(old_index) as index:
        conn = index.conn
        assert (STEP,) in conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
        assert _snapshot(conn) == before
        tables = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        assert "kind IN" not in tables["proofs"] and "kind IN" not in tables["jobs"]
        # The other constraints stay (jobs' as comparisons since 0007).
        assert "CHECK (status IN" in tables["proofs"] and "CHECK (action = " in tables["jobs"]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # Foreign keys are enforced again after the upgrade (off only around the rebuild).
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), index.write():
            conn.execute("DELETE FROM jobs")  # attempts still reference them
    plans = before["plans"]
    assert isinstance(plans, list)
    for (sql, _params), plan in zip(USER_QUERIES, plans, strict=True):
        assert any("INDEX" in step or "PRIMARY KEY" in step for step in plan), (sql, plan)
        assert not any(step.startswith("SCAN") and "INDEX" not in step for step in plan), plan


def test_a_broken_reference_stops_the_upgrade_and_leaves_the_index_as_it_was(
    old_index: Path,
) -> None:
    with sqlite3.connect(old_index) as conn:  # foreign keys off: as damage would do it
        conn.execute("INSERT INTO attempts (job_id, provider, started_at) VALUES (999, 't', 'x')")
        before = _snapshot(conn)
    with pytest.raises(Exception, match="foreign keys broken") as caught:
        Index.open(old_index)
    assert "move the file aside" in str(caught.value)
    with sqlite3.connect(old_index) as conn:
        assert (STEP,) not in conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
        assert _snapshot(conn) == before


def test_a_registered_kind_can_be_recorded_shown_and_proven(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with kinds.registered(TEST_KIND), Index.open(path) as index:
        watch = index.ensure_watch(Path("/srv"))
        (recorded,) = index.record_settled(
            [settled(watch, Path("/srv/a"), sha256="a" * 64, sha512="a" * 128, evidence=["xyz"])]
        )
        (job_id,) = recorded.job_ids
        proof = NewProof("xyz", "fake", "sha256", "a" * 64, None, None, "fake", None, "f" * 64)
        attempt = Attempt("fake", utc_now(), 1.0)
        proof_id = complete_job(
            index, job_id=job_id, version_id=recorded.version_id, proof=proof, attempts=[attempt]
        )
        assert proof_id is not None
    reader = open_reader(path)
    try:
        (listing,) = queries.list_files(reader)
        assert listing.proofs == {"xyz": "complete"}
        detail = queries.file_detail(reader, Path("/srv/a"))
        assert detail is not None
        (version,) = detail.versions
        assert [(p.kind, p.id) for p in version.proofs] == [("xyz", proof_id)]
        assert [(j.kind, j.state) for j in version.jobs] == [("xyz", "done")]
    finally:
        reader.close()


def test_an_unknown_kind_is_refused_with_nothing_written(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        unknown = settled(
            watch, Path("/srv/a"), sha256="a" * 64, sha512="a" * 128, evidence=["xyz"]
        )
        with pytest.raises(UnknownKindError) as caught:
            index.record_settled([unknown])
        assert caught.value.error_class == "index"
        assert "unknown evidence kind 'xyz'" in caught.value.message
        assert "tsr" in caught.value.message and "store/kinds.py" in (caught.value.hint or "")
        assert index.conn.execute("SELECT COUNT(*) FROM versions").fetchone() == (0,)

        (recorded,) = index.record_settled(
            [settled(watch, Path("/srv/a"), sha256="a" * 64, sha512="a" * 128)]
        )
        proof = NewProof("xyz", "fake", "sha256", "a" * 64, None, None, None, None, "f" * 64)
        with pytest.raises(UnknownKindError):
            complete_job(
                index,
                job_id=recorded.job_ids[0],
                version_id=recorded.version_id,
                proof=proof,
                attempts=[Attempt("fake", utc_now(), 1.0)],
            )
        with pytest.raises(UnknownKindError):
            record_proof(index, version_id=recorded.version_id, proof=proof)
        conn = index.conn
        assert conn.execute("SELECT COUNT(*) FROM proofs").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM attempts").fetchone() == (0,)
        assert conn.execute("SELECT state FROM jobs").fetchall() == [("pending",)]


def test_the_action_check_lists_every_job_action() -> None:
    assert set(JOB_ACTIONS) == {action.value for action in JobAction}


def test_0006_drops_versions_sha256_and_renames_are_still_found_by_primary_key(
    tmp_path: Path,
) -> None:
    """The rename lookup was the only reader of versions_sha256 (issue 13): after 0006 it
    reaches each candidate's version through files.current_version_id, and still finds it."""
    tree = tmp_path / "watched"
    tree.mkdir()
    old = tree / "a.pdf"
    old.write_bytes(b"contract")
    path = index_path(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations.apply(Database(conn), stop_before="0006_no_versions_sha256")
    with conn:
        watch = conn.execute(
            "INSERT INTO watches (path, added_at) VALUES (?, 'x')", (str(tree),)
        ).lastrowid
        assert watch is not None
        stat = old.lstat()
        item = settled(
            watch, old, sha256="c" * 64, sha512="c" * 128, dev=stat.st_dev, ino=stat.st_ino
        )
        versions.record_each(conn, [item], now=utc_now())
    before = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("files", "versions")}
    conn.close()

    with Index.open(path) as index:
        names = {row[0] for row in index.conn.execute("SELECT name FROM sqlite_master")}
        assert "versions_sha256" not in names and "versions_file" in names
        after = {
            t: index.conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("files", "versions")
        }
        assert after == before
        plan = " | ".join(
            row[3]
            for row in index.conn.execute(
                f"EXPLAIN QUERY PLAN {versions._SQL_RENAME_SOURCES}", (1, 2, "/x", "c")
            )
        )
        assert "files_dev_ino (dev=? AND ino=?)" in plan, plan
        assert "SEARCH v USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
        new = tree / "b.pdf"
        old.rename(new)
        (moved,) = index.record_settled(
            [
                settled(
                    watch, new, sha256="c" * 64, sha512="c" * 128, dev=stat.st_dev, ino=stat.st_ino
                )
            ]
        )
        assert (moved.outcome, moved.renamed_from) == ("renamed", old)
