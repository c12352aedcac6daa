"""The SQLite index: migrations, WAL, write transactions, read-only readers, query plans."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

from stampd.store import queries
from stampd.store.errors import IndexUnavailableError
from stampd.store.index import Index, VersionFacts, index_path, migrations, open_reader, utc_now

FACTS = VersionFacts(
    size=5, mtime_ns=1, ctime_ns=2, dev=3, ino=4, sha256="a" * 64, sha512="b" * 128
)


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migrations_create_every_table_from_empty(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path):
        pass
    assert {"watches", "files", "versions", "proofs", "jobs", "attempts"} <= _tables(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
    assert applied == [("0001_initial",)]


def test_reopening_applies_nothing_twice_and_keeps_data(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path) as index:
        watch = index.ensure_watch(Path("/srv/a"))
        index.record_version(watch_id=watch, path=Path("/srv/a/x"), facts=FACTS, evidence=["tsr"])
    with Index.open(path) as index:
        assert index.ensure_watch(Path("/srv/a")) == watch
        count = index.conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0]
        versions = index.conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
    assert count == 1
    assert versions == 1


def test_close_checkpoints_the_wal(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path) as index:
        index.ensure_watch(Path("/srv/a"))
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_an_index_from_a_newer_stampd_is_refused(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path) as index, index.write() as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('stampd', '9999_future', 'x')"
        )
    with pytest.raises(IndexUnavailableError, match=r"newer stampd.*9999_future"):
        Index.open(path)


def test_garbage_instead_of_an_index_is_a_clear_error(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexUnavailableError, match="not a usable stampd index") as info:
        Index.open(path)
    assert info.value.hint and "rebuild" in info.value.hint


def test_record_version_commits_version_and_one_job_per_kind(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        first = index.record_version(
            watch_id=watch, path=Path("/srv/f"), facts=FACTS, evidence=["tsr", "ots"]
        )
        second = index.record_version(
            watch_id=watch,
            path=Path("/srv/f"),
            facts=VersionFacts(6, 7, 8, 3, 4, "c" * 64, "d" * 128),
            evidence=["tsr"],
        )
        conn = index.conn
        assert first.file_id == second.file_id
        assert len(first.job_ids) == 2 and len(second.job_ids) == 1
        current = conn.execute("SELECT current_version_id FROM files").fetchone()[0]
        assert current == second.version_id
        jobs = conn.execute(
            "SELECT kind, action, state, version_id FROM jobs ORDER BY id"
        ).fetchall()
    assert jobs == [
        ("tsr", "obtain", "pending", first.version_id),
        ("ots", "obtain", "pending", first.version_id),
        ("tsr", "obtain", "pending", second.version_id),
    ]


def test_a_failed_write_leaves_no_partial_record(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        with pytest.raises(sqlite3.IntegrityError):
            # "nope" violates the CHECK on jobs.kind after the file and version rows went in.
            index.record_version(
                watch_id=watch, path=Path("/srv/f"), facts=FACTS, evidence=["tsr", "nope"]
            )
        counts = [
            index.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("files", "versions", "jobs")
        ]
    assert counts == [0, 0, 0]


def test_write_transactions_wait_for_each_other_instead_of_failing(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE takes the lock up front; a second writer waits under busy_timeout."""
    path = index_path(tmp_path)
    first = Index.open(path)
    second = Index.open(path)
    order: list[str] = []
    try:
        with first.write():  # BEGIN IMMEDIATE: the RESERVED lock is held from here on

            def other() -> None:
                second.ensure_watch(Path("/srv/b"))
                order.append("second")

            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.3)
            order.append("first")
        thread.join(timeout=10)
        assert order == ["first", "second"]
        assert second.conn.execute("SELECT COUNT(*) FROM watches").fetchone()[0] == 1
    finally:
        first.close()
        second.close()


def test_readers_are_read_only(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path):
        pass
    conn = open_reader(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO watches (path, added_at) VALUES ('/x', 'now')")
    conn.close()


def test_reader_without_an_index_says_the_daemon_never_ran(tmp_path: Path) -> None:
    with pytest.raises(IndexUnavailableError, match="no index at") as info:
        open_reader(index_path(tmp_path))
    assert "start the daemon" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        # ls PATH: a range scan on the unique path index, never a scan of files.
        (
            "SELECT f.id FROM files f LEFT JOIN versions v ON v.id = f.current_version_id"
            " WHERE f.path = ? OR (f.path >= ? AND f.path < ?) ORDER BY f.path",
            ("/a", "/a/", "/a0"),
        ),
        ("SELECT COUNT(*) FROM versions WHERE file_id = ?", (1,)),
        ("SELECT kind, status FROM proofs WHERE version_id = ? ORDER BY id", (1,)),
        ("SELECT COUNT(*) FROM jobs WHERE version_id = ? AND state IN ('pending','running')", (1,)),
        ("SELECT * FROM attempts WHERE job_id = ? ORDER BY id", (1,)),
        ("SELECT * FROM versions WHERE file_id = ? ORDER BY id DESC", (1,)),
        ("SELECT id FROM files WHERE dev = ? AND ino = ?", (1, 2)),
        (
            "SELECT id FROM proofs WHERE digest = ? AND kind = ? AND status = 'complete'",
            ("a", "tsr"),
        ),
        ("SELECT id FROM jobs WHERE state = 'pending' AND next_try_at <= ?", ("x",)),
    ],
)
def test_user_queries_use_an_index(tmp_path: Path, sql: str, params: tuple[object, ...]) -> None:
    """With a million versions a table scan is seconds; every filter must hit an index."""
    with Index.open(index_path(tmp_path)) as index:
        plan = " | ".join(row[3] for row in index.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    # Every step a SEARCH: even a full scan of an index is linear in the number of rows.
    assert "SCAN" not in plan, plan


def test_queries_on_an_index_with_history(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path) as index:
        watch = index.ensure_watch(Path("/srv"))
        recorded = index.record_version(
            watch_id=watch, path=Path("/srv/dir/a"), facts=FACTS, evidence=["tsr"]
        )
        index.record_version(watch_id=watch, path=Path("/srv/dir2/b"), facts=FACTS, evidence=[])
        with index.write() as conn:
            conn.execute(
                "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
                " gen_time, created_at, updated_at) VALUES (?, 'tsr', 'digicert', 'complete',"
                " 'sha256', ?, '2026-01-01T00:00:00.000000Z', 'x', 'x')",
                (recorded.version_id, FACTS.sha256),
            )
            conn.execute(
                "INSERT INTO attempts (job_id, provider, started_at, error_class, http_status)"
                " VALUES (?, 'sectigo', 'x', 'http_status', 503)",
                (recorded.job_ids[0],),
            )
            conn.execute(
                "UPDATE jobs SET tries = 1, next_try_at = '2999-01-01' WHERE id = ?",
                (recorded.job_ids[0],),
            )
    conn = open_reader(path)
    try:
        # "/srv/dir" must not match "/srv/dir2" — the prefix is a directory, not a string.
        listed = list(queries.list_files(conn, Path("/srv/dir")))
        assert [row.path for row in listed] == ["/srv/dir/a"]
        assert listed[0].proofs == {"tsr": "complete"}
        assert listed[0].pending_jobs == 1
        assert [row.path for row in queries.list_files(conn, None, limit=1)] == ["/srv/dir/a"]
        detail = queries.file_detail(conn, Path("/srv/dir/a"))
        assert detail is not None and detail.watch == "/srv"
        (version,) = detail.versions
        assert version.current and version.proofs[0].provider == "digicert"
        assert version.jobs[0].attempts[0].http_status == 503
        assert queries.file_detail(conn, Path("/srv/nope")) is None
        summary = queries.status_summary(conn, now=utc_now())
        assert summary.files == {"present": 2}
        assert summary.versions == 2
        assert summary.proofs == {"tsr": {"complete": 1}}
        assert summary.jobs == {"pending": 1}
        assert summary.jobs_backing_off == 1
        assert not summary.empty
    finally:
        conn.close()


def test_migration_names_are_unique_and_ordered() -> None:
    names = [m.name for m in migrations.pending(Database(memory=True))]
    assert names == sorted(names)
    assert len(names) == len(set(names))
