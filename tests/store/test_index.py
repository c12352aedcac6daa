"""The SQLite index: migrations, WAL, write transactions, read-only readers, query plans."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from stampd.store.errors import IndexUnavailableError
from stampd.store.files.filestat import FileStat
from stampd.store.index import queries, scan_rows, versions
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.scan_rows import (
    disk_key,
    has_sidecar_proofs,
    live_directories_below,
    live_rows,
    present_under,
    stamped_rows,
)
from stampd.store.index.schema import UnknownKindError, migrations
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Settled
from tests.conftest import settled

A64, B128 = "a" * 64, "b" * 128


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
    assert applied == [
        ("0001_initial",),
        ("0002_escaped_paths",),
        ("0003_proofs_by_sidecar",),
        ("0004_kinds_from_registry",),
        ("0005_proof_commitments",),
        ("0006_no_versions_sha256",),
        ("0007_checks_as_comparisons",),
    ]


def test_reopening_applies_nothing_twice_and_keeps_data(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path) as index:
        watch = index.ensure_watch(Path("/srv/a"))
        index.record_settled([settled(watch, Path("/srv/a/x"), sha256=A64, sha512=B128)])
    with Index.open(path) as index:
        assert index.ensure_watch(Path("/srv/a")) == watch
        count = index.conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0]
        version_count = index.conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
    assert count == 7
    assert version_count == 1


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


def test_a_new_version_commits_one_job_per_kind(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        (first,) = index.record_settled(
            [settled(watch, Path("/srv/f"), sha256=A64, sha512=B128, evidence=["tsr", "ots"])]
        )
        (second,) = index.record_settled(
            [
                settled(
                    watch,
                    Path("/srv/f"),
                    sha256="c" * 64,
                    sha512="d" * 128,
                    evidence=["tsr"],
                    size=6,
                    mtime_ns=7,
                    ctime_ns=8,
                )
            ]
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
        with pytest.raises(UnknownKindError, match="unknown evidence kind 'nope'"):
            # "nope" is refused after the file and version rows went in.
            index.record_settled(
                [settled(watch, Path("/srv/f"), sha256=A64, sha512=B128, evidence=["tsr", "nope"])]
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


#: Each statement of the writer (versions.py) and the scan helpers (scan_rows.py), and the
#: index its plan must use.
WRITER_PLANS = {
    "_SQL_FILE_AT_PATH": "sqlite_autoindex_files_1 (path=?)",
    "_SQL_RENAME_SOURCES": "files_dev_ino (dev=? AND ino=?)",
    "_SQL_SET_PRESENT": "INTEGER PRIMARY KEY",
    "_SQL_SET_CURRENT": "INTEGER PRIMARY KEY",
    "_SQL_MOVE": "INTEGER PRIMARY KEY",
    "_SQL_SET_UNREADABLE": "INTEGER PRIMARY KEY",
    "_SQL_MARK_MISSING": "sqlite_autoindex_files_1 (path=?)",
    "_SQL_MARK_ID_MISSING": "INTEGER PRIMARY KEY",
    "_SQL_LIVE_ROWS": "files_dir_state (dir=? AND state=?)",
    "_SQL_ANY_SIDECAR_PROOF": "COVERING INDEX proofs_sidecar (sidecar_sha256>?)",
    "_SQL_STAMPED_ROWS": "(dir=? AND state=?) | SEARCH p USING INDEX proofs_version",
    "_SQL_PRESENT_UNDER": "sqlite_autoindex_files_1 (path>? AND path<?)",
    "_SQL_LIVE_DIRECTORIES_BELOW": "COVERING INDEX files_dir_state (dir>? AND dir<?)",
}


def _statement(name: str) -> str:
    sql = getattr(versions, name, None) or getattr(scan_rows, name)
    assert isinstance(sql, str)
    return sql


def test_every_writer_statement_has_its_plan_checked() -> None:
    named = [n for module in (versions, scan_rows) for n in vars(module) if n.startswith("_SQL_")]
    assert sorted(WRITER_PLANS) == sorted(named)


@pytest.mark.parametrize(("name", "expected"), sorted(WRITER_PLANS.items()))
def test_writer_and_scan_queries_use_the_right_index(
    tmp_path: Path, name: str, expected: str
) -> None:
    """The statements the writer and the scan run, as they run them: each is a SEARCH on the
    index meant for it (files_state would also be a SEARCH, but one that selects every row)."""
    sql = _statement(name)
    with Index.open(index_path(tmp_path)) as index:
        plan = " | ".join(
            row[3] for row in index.conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1,) * sql.count("?"))
        )
    assert "SCAN" not in plan, plan
    assert "files_state" not in plan, plan
    assert expected in plan, plan


def test_queries_on_an_index_with_history(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    with Index.open(path) as index:
        watch = index.ensure_watch(Path("/srv"))
        (recorded,) = index.record_settled(
            [settled(watch, Path("/srv/dir/a"), sha256=A64, sha512=B128, evidence=["tsr"])]
        )
        # Another inode: the same (dev, ino) and digest at a vanished path would be a rename.
        index.record_settled(
            [settled(watch, Path("/srv/dir2/b"), sha256=A64, sha512=B128, evidence=[], ino=5)]
        )
        with index.write() as conn:
            conn.execute(
                "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
                " gen_time, created_at, updated_at) VALUES (?, 'tsr', 'digicert', 'complete',"
                " 'sha256', ?, '2026-01-01T00:00:00.000000Z', 'x', 'x')",
                (recorded.version_id, A64),
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


# --- record_settled, record_unreadable, mark_missing, scan helpers ------------------------------


def _settled(
    watch: int,
    path: Path,
    *,
    racy: bool = False,
    evidence: tuple[str, ...] = ("tsr",),
    stat: FileStat | None = None,
    sha256: str | None = None,
) -> Settled:
    """A Settled item for a real file: its lstat and the SHA-256 of its bytes."""
    data = path.read_bytes()
    return Settled(
        watch_id=watch,
        path=path,
        stat=stat or FileStat.of(path.lstat()),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        sha512=hashlib.sha512(data).hexdigest(),
        hashed_at=utc_now(),
        racy=racy,
        evidence=evidence,
    )


def _count(index: Index, table: str) -> int:
    return int(index.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _file_row(index: Index, file_id: int) -> dict[str, object]:
    cursor = index.conn.execute("SELECT * FROM files WHERE id = ?", (file_id,))
    names = [column[0] for column in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    (tmp_path / "state").mkdir()
    with Index.open(index_path(tmp_path / "state")) as opened:
        yield opened


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "watched"
    root.mkdir()
    return root


def test_a_new_file_gets_a_version_jobs_and_its_scan_key(index: Index, tree: Path) -> None:
    path = tree / "a.pdf"
    path.write_bytes(b"invoice")
    watch = index.ensure_watch(tree)
    item = _settled(watch, path, evidence=("tsr", "ots"))
    (recorded,) = index.record_settled([item])
    assert recorded.outcome == "new_file"
    assert recorded.path == path and recorded.renamed_from is None
    assert len(recorded.job_ids) == 2
    row = _file_row(index, recorded.file_id)
    assert row["dir"] == str(tree)
    assert row["current_version_id"] == recorded.version_id
    assert row["state"] == "present" and row["racy"] == 0
    assert (row["dev"], row["ino"], row["size"], row["mtime_ns"], row["ctime_ns"]) == (
        item.stat.dev,
        item.stat.ino,
        item.stat.size,
        item.stat.mtime_ns,
        item.stat.ctime_ns,
    )
    seen_at, hashed_at = index.conn.execute(
        "SELECT seen_at, hashed_at FROM versions WHERE id = ?", (recorded.version_id,)
    ).fetchone()
    assert seen_at == hashed_at == item.hashed_at


def test_same_content_is_unchanged_and_only_refreshes_the_scan_key(
    index: Index, tree: Path
) -> None:
    path = tree / "a.pdf"
    path.write_bytes(b"invoice")
    watch = index.ensure_watch(tree)
    (first,) = index.record_settled([_settled(watch, path)])
    os.utime(path, ns=(10**18, 10**18))  # a touch: new mtime and ctime, same bytes
    touched = _settled(watch, path, racy=True)
    (again,) = index.record_settled([touched])
    assert again.outcome == "unchanged"
    assert (again.file_id, again.version_id, again.job_ids) == (first.file_id, first.version_id, ())
    assert _count(index, "versions") == 1 and _count(index, "jobs") == 1
    row = _file_row(index, first.file_id)
    assert (row["mtime_ns"], row["ctime_ns"]) == (10**18, touched.stat.ctime_ns)
    assert row["racy"] == 1


def test_new_content_is_a_new_version_and_keeps_the_old_one(index: Index, tree: Path) -> None:
    path = tree / "a.pdf"
    path.write_bytes(b"v1")
    watch = index.ensure_watch(tree)
    (first,) = index.record_settled([_settled(watch, path)])
    path.write_bytes(b"v2")
    (second,) = index.record_settled([_settled(watch, path)])
    assert second.outcome == "new_version"
    assert second.file_id == first.file_id and second.version_id != first.version_id
    assert len(second.job_ids) == 1
    assert _count(index, "versions") == 2 and _count(index, "jobs") == 2
    assert _file_row(index, first.file_id)["current_version_id"] == second.version_id


def test_a_rename_moves_the_row_with_its_history(index: Index, tree: Path) -> None:
    old = tree / "a.pdf"
    old.write_bytes(b"contract")
    watch = index.ensure_watch(tree)
    (first,) = index.record_settled([_settled(watch, old)])
    (tree / "sub").mkdir()
    new = tree / "sub" / "b.pdf"
    old.rename(new)
    (moved,) = index.record_settled([_settled(watch, new)])
    assert moved.outcome == "renamed"
    assert moved.renamed_from == old
    assert (moved.file_id, moved.version_id, moved.job_ids) == (first.file_id, first.version_id, ())
    row = _file_row(index, first.file_id)
    assert (row["path"], row["dir"], row["state"]) == (str(new), str(tree / "sub"), "present")
    assert _count(index, "files") == 1
    assert _count(index, "versions") == 1 and _count(index, "jobs") == 1


def test_a_rename_of_a_row_already_marked_missing_is_still_a_rename(
    index: Index, tree: Path
) -> None:
    """Moved out (DELETE event → missing), then moved back under another name (§3.4)."""
    old = tree / "a.pdf"
    old.write_bytes(b"contract")
    watch = index.ensure_watch(tree)
    (first,) = index.record_settled([_settled(watch, old)])
    new = tree / "b.pdf"
    old.rename(new)
    assert index.mark_missing([old]) == 1
    (moved,) = index.record_settled([_settled(watch, new)])
    assert (moved.outcome, moved.file_id) == ("renamed", first.file_id)
    assert _file_row(index, first.file_id)["state"] == "present"


def test_a_hard_link_is_not_a_rename(index: Index, tree: Path) -> None:
    """The old path still names the inode: the new name is a second file of the same content."""
    first_path = tree / "a.pdf"
    first_path.write_bytes(b"contract")
    watch = index.ensure_watch(tree)
    (first,) = index.record_settled([_settled(watch, first_path)])
    link = tree / "b.pdf"
    os.link(first_path, link)
    (linked,) = index.record_settled([_settled(watch, link)])
    assert linked.outcome == "new_file"
    assert linked.file_id != first.file_id and linked.renamed_from is None
    assert _file_row(index, first.file_id)["path"] == str(first_path)
    assert _file_row(index, first.file_id)["state"] == "present"
    # The original's ctime changed (link count) but its bytes did not: no restamp.
    (original,) = index.record_settled([_settled(watch, first_path)])
    assert original.outcome == "unchanged"


def test_same_inode_with_other_content_is_not_a_rename(index: Index, tree: Path) -> None:
    old = tree / "a.pdf"
    old.write_bytes(b"v1")
    watch = index.ensure_watch(tree)
    index.record_settled([_settled(watch, old)])
    new = tree / "b.pdf"
    old.rename(new)
    new.write_bytes(b"v2")  # renamed and rewritten before it settled
    (recorded,) = index.record_settled([_settled(watch, new)])
    assert recorded.outcome == "new_file"


def test_a_rename_onto_a_recorded_path_adds_a_version_there(index: Index, tree: Path) -> None:
    """`mv a b` over a recorded b: b keeps its own history plus a new version with a's
    content; a's row, whose path is gone, becomes missing and keeps its proofs."""
    source, destination = tree / "a.pdf", tree / "b.pdf"
    source.write_bytes(b"new text")
    destination.write_bytes(b"old text")
    watch = index.ensure_watch(tree)
    a, b = index.record_settled([_settled(watch, source), _settled(watch, destination)])
    source.replace(destination)
    (recorded,) = index.record_settled([_settled(watch, destination)])
    assert recorded.outcome == "new_version"
    assert recorded.file_id == b.file_id and recorded.renamed_from is None
    assert len(recorded.job_ids) == 1
    assert _file_row(index, a.file_id)["state"] == "missing"
    assert _file_row(index, a.file_id)["current_version_id"] == a.version_id
    assert _count(index, "versions") == 3


def test_a_batch_is_one_transaction(index: Index, tree: Path) -> None:
    """An error in item k rolls back items before it too: nothing of the batch is recorded."""
    watch = index.ensure_watch(tree)
    kept = tree / "kept.pdf"
    kept.write_bytes(b"v1")
    (before,) = index.record_settled([_settled(watch, kept)])
    kept.write_bytes(b"v2")
    (tree / "new.pdf").write_bytes(b"x")
    (tree / "bad.pdf").write_bytes(b"y")
    batch = [
        _settled(watch, kept),
        _settled(watch, tree / "new.pdf"),
        _settled(watch, tree / "bad.pdf", evidence=("tsr", "nope")),  # no such kind
    ]
    with pytest.raises(UnknownKindError):
        index.record_settled(batch)
    assert _count(index, "files") == 1
    assert _count(index, "versions") == 1
    assert _count(index, "jobs") == 1
    assert _file_row(index, before.file_id)["current_version_id"] == before.version_id
    assert not index.conn.in_transaction
    # The writer is usable afterwards, and the good items go through on their own.
    assert [r.outcome for r in index.record_settled(batch[:2])] == ["new_version", "new_file"]


def test_later_items_of_a_batch_see_earlier_ones(index: Index, tree: Path) -> None:
    path = tree / "a.pdf"
    path.write_bytes(b"same")
    watch = index.ensure_watch(tree)
    item = _settled(watch, path)
    assert [r.outcome for r in index.record_settled([item, item])] == ["new_file", "unchanged"]


def test_mark_missing_keeps_history(index: Index, tree: Path) -> None:
    path = tree / "a.pdf"
    path.write_bytes(b"contract")
    watch = index.ensure_watch(tree)
    (recorded,) = index.record_settled([_settled(watch, path)])
    assert index.mark_missing([path, tree / "never-seen"]) == 1
    assert index.mark_missing([path]) == 0  # already missing
    assert index.mark_missing([]) == 0
    row = _file_row(index, recorded.file_id)
    assert row["state"] == "missing"
    assert row["current_version_id"] == recorded.version_id
    assert row["ino"] == path.lstat().st_ino  # kept: a later rename is recognised by it
    assert _count(index, "versions") == 1 and _count(index, "jobs") == 1
    # Back with the same content: present again, no restamp.
    (back,) = index.record_settled([_settled(watch, path)])
    assert back.outcome == "unchanged"
    assert _file_row(index, recorded.file_id)["state"] == "present"


def test_unreadable_then_readable(index: Index, tree: Path) -> None:
    path = tree / "locked.pdf"
    path.write_bytes(b"secret")
    watch = index.ensure_watch(tree)
    stat = FileStat.of(path.lstat())
    index.record_unreadable(
        watch_id=watch, path=path, stat=stat, error_class="io", message="Permission denied"
    )
    file_id = index.conn.execute("SELECT id FROM files").fetchone()[0]
    row = _file_row(index, file_id)
    assert (row["state"], row["problem_class"], row["problem"]) == (
        "unreadable",
        "io",
        "Permission denied",
    )
    assert row["current_version_id"] is None
    # Its key is trusted: the scan retries it only once that changes.
    assert live_rows(index.conn, tree, stat.dev)["locked.pdf"] == disk_key(
        "locked.pdf", path.lstat()
    )
    (recorded,) = index.record_settled([_settled(watch, path)])
    assert (recorded.outcome, recorded.file_id) == ("new_file", file_id)
    row = _file_row(index, file_id)
    assert (row["state"], row["problem_class"], row["problem"]) == ("present", None, None)
    # Unreadable again (stat unknown this time), then readable with the same bytes.
    index.record_unreadable(watch_id=watch, path=path, stat=None, error_class="io", message="EIO")
    assert live_rows(index.conn, tree, stat.dev)["locked.pdf"] == ("locked.pdf", *[None] * 4)
    assert _file_row(index, file_id)["current_version_id"] == recorded.version_id
    (again,) = index.record_settled([_settled(watch, path)])
    assert again.outcome == "unchanged"
    assert _count(index, "versions") == 1


def test_live_rows_are_the_direct_children_that_are_present(index: Index, tmp_path: Path) -> None:
    watch = index.ensure_watch(Path("/srv"))
    for number, name in enumerate(["/srv/d/a", "/srv/d/sub/b", "/srv/d2/c", "/srv/d-x/e"]):
        index.record_settled(
            [
                settled(
                    watch,
                    Path(name),
                    sha256=f"{number}" * 64,
                    sha512=B128,
                    evidence=[],
                    size=1,
                    mtime_ns=2,
                    ctime_ns=3,
                    dev=4,
                    ino=number,
                )
            ]
        )
    index.mark_missing([Path("/srv/d/sub/b")])
    rows = live_rows(index.conn, "/srv/d", 4)
    # (name, ino, size, mtime_ns, ctime_ns): what the scan compares with the lstat.
    assert rows == {"a": ("a", 0, 1, 2, 3)}
    assert live_rows(index.conn, "/srv/d", 5)["a"][1] is None  # another device: never trusted
    assert live_rows(index.conn, "/srv/d/sub", 4) == {}  # b is missing: as if no row
    assert live_rows(index.conn, "/srv/nothing", 4) == {}
    # The same helpers on a read-only connection (its row factory is sqlite3.Row).
    reader = open_reader(index_path(tmp_path / "state"))
    try:
        assert live_rows(reader, Path("/srv/d"), 4) == rows
        under = present_under(reader, Path("/srv/d"))
        assert [path for _id, path in under] == [Path("/srv/d/a")]  # b is missing; d2 is not under
        assert list(live_directories_below(reader, Path("/srv"))) == [
            Path("/srv/d"),
            Path("/srv/d-x"),
            Path("/srv/d2"),
        ]
        assert list(live_directories_below(reader, Path("/srv/d"))) == []  # sub has no live row
    finally:
        reader.close()


def test_a_racy_row_is_live_but_never_trusted(index: Index) -> None:
    watch = index.ensure_watch(Path("/srv"))
    item = settled(watch, Path("/srv/a"), sha256=A64, sha512=B128, evidence=[], dev=4, ino=9)
    index.record_settled([dataclasses.replace(item, racy=True)])
    assert live_rows(index.conn, "/srv", 4) == {"a": ("a", None, 5, 1, 2)}


def test_stamped_rows_are_the_present_rows_with_sidecar_proofs(index: Index) -> None:
    watch = index.ensure_watch(Path("/srv"))
    recorded = index.record_settled(
        [
            settled(watch, Path(f"/srv/d/{name}"), sha256=f"{n}" * 64, sha512=B128, ino=n)
            for n, name in enumerate(["a", "b", "gone", "pending"])
        ]
    )
    assert not has_sidecar_proofs(index.conn)
    proofs = [
        (recorded[0].version_id, "tsr", "complete", "1" * 64),
        (recorded[0].version_id, "ots", "complete", "2" * 64),
        (recorded[1].version_id, "tsr", "complete", "3" * 64),
        (recorded[2].version_id, "tsr", "complete", "4" * 64),
        (recorded[3].version_id, "tsr", "pending", None),
    ]
    with index.write():
        index.conn.executemany(
            "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
            " sidecar_sha256, created_at, updated_at) VALUES (?, ?, 'x', ?, 'sha256', 'd', ?,"
            " 'now', 'now')",
            proofs,
        )
    index.mark_missing([Path("/srv/d/gone")])
    assert has_sidecar_proofs(index.conn)
    assert stamped_rows(index.conn, "/srv/d") == {
        "a": (
            recorded[0].file_id,
            "a",
            {"tsr": frozenset({"1" * 64}), "ots": frozenset({"2" * 64})},
        ),
        "b": (recorded[1].file_id, "b", {"tsr": frozenset({"3" * 64})}),
    }
    assert stamped_rows(index.conn, "/srv") == {}


def test_a_new_file_is_never_first_seen_after_it_was_hashed(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv/a"))
        item = settled(watch, Path("/srv/a/x"), sha256=A64, sha512=B128)
        index.record_settled([item])
        first_seen, hashed = index.conn.execute(
            "SELECT f.first_seen_at, v.hashed_at FROM files f"
            " JOIN versions v ON v.id = f.current_version_id"
        ).fetchone()
    assert first_seen <= hashed == item.hashed_at
