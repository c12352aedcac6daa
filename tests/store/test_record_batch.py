"""The set-wise recording of new files (store/index/new_files.py) writes exactly the rows of
the per-file path (``versions.record_each``), ids included, whatever the batch mixes."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from stampd.store.files.filestat import FileStat
from stampd.store.files.pathnames import escape
from stampd.store.index import new_files, versions
from stampd.store.index.database import Index, index_path
from stampd.store.index.schema import UnknownKindError
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Recorded, Settled

TABLES = ("watches", "files", "versions", "jobs")


def _settled(watch_id: int, path: Path, *, evidence: tuple[str, ...] = ("tsr",)) -> Settled:
    data = path.read_bytes()
    return Settled(
        watch_id=watch_id,
        path=path,
        stat=FileStat.of(path.lstat()),
        sha256=hashlib.sha256(data).hexdigest(),
        sha512=hashlib.sha512(data).hexdigest(),
        hashed_at=utc_now(),
        racy=False,
        evidence=evidence,
    )


def _tables(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}


def _compare(
    tmp_path: Path, setup: Callable[[sqlite3.Connection], None], batch: list[Settled]
) -> list[Recorded]:
    """In two fresh indexes, run ``setup`` and then record ``batch``: set-wise into one,
    item by item into the other. Both must end with the same rows and the same results."""
    results = []
    snapshots = []
    now = utc_now()
    for name, record in (("set", versions.record_settled), ("each", versions.record_each)):
        (tmp_path / name).mkdir()
        with Index.open(index_path(tmp_path / name)) as index:
            with index.write() as conn:
                setup(conn)
            with index.write() as conn:
                results.append(record(conn, batch, now=now))
            snapshots.append(_tables(index.conn))
    assert snapshots[0] == snapshots[1]
    assert results[0] == results[1]
    return results[0]


def _watches(*roots: Path) -> Callable[[sqlite3.Connection], None]:
    def setup(conn: sqlite3.Connection) -> None:
        for root in roots:
            conn.execute("INSERT INTO watches (path, added_at) VALUES (?, ?)", (str(root), "x"))

    return setup


def test_a_batch_of_new_files_is_recorded_set_wise(tmp_path: Path) -> None:
    tree = tmp_path / "watched"
    tree.mkdir()
    for n in range(150):
        (tree / f"f{n:03}").write_bytes(b"x%d" % n)
    items = [_settled(1, tree / f"f{n:03}", evidence=("tsr", "ots")) for n in range(150)]
    (tmp_path / "trace").mkdir()
    with Index.open(index_path(tmp_path / "trace")) as index:
        index.ensure_watch(tree)
        statements: list[str] = []
        index.conn.set_trace_callback(statements.append)
        recorded = index.record_settled(items)
        index.conn.set_trace_callback(None)
    assert [r.outcome for r in recorded] == ["new_file"] * 150
    assert all(len(r.job_ids) == 2 for r in recorded)
    # Not two lookups per file: two for the batch (its paths, its inodes) and its next ids;
    # then the inserts (the trace shows each row of an executemany as a statement).
    selects = [s for s in statements if s.startswith("SELECT")]
    assert len(selects) == 3, selects
    assert not any(s.startswith("INSERT INTO files (watch_id") for s in statements)
    assert _compare(tmp_path, _watches(tree), items) == recorded


def test_a_batch_mixing_new_changed_renamed_and_linked_paths_matches_the_per_file_path(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "watched"
    (tree / "sub").mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()

    def write(name: str, data: bytes, root: Path = tree) -> Path:
        path = root / name
        path.write_bytes(data)
        return path

    kept, changed, moved, over_src, over_dst, linked, unreadable = (
        write(n, n.encode())
        for n in ("kept", "changed", "moved", "over_src", "over_dst", "linked", "unreadable")
    )
    elsewhere = write("elsewhere", b"watch 2", other)
    before = [_settled(1, p) for p in (kept, changed, moved, over_src, over_dst, linked)]
    before.append(_settled(2, elsewhere))

    # What happened on disk since: each path below is one kind of case.
    changed.write_bytes(b"changed, v2")
    renamed = tree / "sub" / "moved-here"
    moved.rename(renamed)
    over_src.replace(over_dst)  # mv over a recorded path: a new version there
    link = tree / "link"
    os.link(linked, link)  # a hard link: a new file, not a rename
    twice = write("twice", b"first")
    first_take = _settled(1, twice)
    twice.write_bytes(b"second content")
    replaced = write("replaced", b"before the atomic save")
    replaced_take = _settled(1, replaced)
    write("replaced.tmp", b"after the atomic save").replace(replaced)  # same path, new inode
    hop = write("hop", b"renamed within the batch")
    hop_take = _settled(1, hop)
    hopped = tree / "hopped"
    hop.rename(hopped)  # same inode, new path, the old one gone

    batch = [
        _settled(1, write("new-a", b"a")),
        _settled(1, kept),  # unchanged
        _settled(1, write("new-b", b"b")),
        _settled(1, write("new-c", b"c")),
        _settled(1, changed),  # new version
        _settled(1, write("new-d", b"d"), evidence=()),
        _settled(1, renamed),  # renamed
        _settled(1, write("new-e", b"e"), evidence=("tsr", "ots")),
        _settled(1, over_dst),  # new version, source row missing
        _settled(1, link),  # new file sharing an inode with a row
        first_take,  # the same new path twice in one batch
        _settled(1, write("new-f", b"f")),
        _settled(1, twice),
        _settled(1, unreadable),  # a row without a version: new_file on the per-file path
        _settled(1, elsewhere),  # the path moves to another watch: unchanged there
        _settled(1, write("new-g", b"g")),
        replaced_take,
        hop_take,
        _settled(1, replaced),
        _settled(1, hopped),
    ]

    now = utc_now()  # one time for both indexes' setup

    def setup(conn: sqlite3.Connection) -> None:
        _watches(tree, other)(conn)
        versions.record_each(conn, before, now=now)
        versions.record_unreadable(
            conn,
            watch_id=1,
            path=unreadable,
            stat=None,
            error_class="permission",
            message="denied",
            now=now,
        )

    outcomes = [r.outcome for r in _compare(tmp_path, setup, batch)]
    assert outcomes == [
        "new_file",
        "unchanged",
        "new_file",
        "new_file",
        "new_version",
        "new_file",
        "renamed",
        "new_file",
        "new_version",
        "new_file",
        "new_file",
        "new_file",
        "new_version",
        "new_file",
        "unchanged",
        "new_file",
        "new_file",
        "new_file",
        "new_version",
        "renamed",
    ]


def test_an_unknown_kind_among_new_files_rolls_the_batch_back(tmp_path: Path) -> None:
    tree = tmp_path / "watched"
    tree.mkdir()
    (tree / "a").write_bytes(b"a")
    (tree / "b").write_bytes(b"b")
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(tree)
        batch = [_settled(watch, tree / "a"), _settled(watch, tree / "b", evidence=("nope",))]
        with pytest.raises(UnknownKindError):
            index.record_settled(batch)
        assert _tables(index.conn)["files"] == []
        assert not index.conn.in_transaction


#: Each statement of store/index/new_files.py and what its plan must use (with three values
#: where a statement lists them).
PLANS = {
    "_SQL_PATHS_KNOWN": "COVERING INDEX sqlite_autoindex_files_1 (path=?)",
    "_SQL_INODES_KNOWN": "COVERING INDEX files_dev_ino (dev=? AND ino=?)",
    # MAX(id) is the last entry of each table's rowid b-tree (sqlite.org/optoverview.html §13).
    "_SQL_NEXT_IDS": "SEARCH files | SCALAR SUBQUERY 2 | SEARCH versions",
    "_SQL_SET_CURRENT_OF_RUN": "INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
    "_SQL_INSERT_FILES": "",
    "_SQL_INSERT_VERSIONS": "",
    "_SQL_INSERT_JOBS": "",
}


def test_every_statement_of_the_set_wise_path_has_its_plan_checked() -> None:
    assert sorted(PLANS) == sorted(n for n in vars(new_files) if n.startswith("_SQL_"))


@pytest.mark.parametrize(("name", "expected"), sorted(PLANS.items()))
def test_the_set_wise_statements_use_an_index(tmp_path: Path, name: str, expected: str) -> None:
    """Point lookups, one b-tree probe per value, never a scan of files or versions."""
    sql = getattr(new_files, name).format(marks="?, ?, ?")
    with Index.open(index_path(tmp_path)) as index:
        plan = " | ".join(
            row[3] for row in index.conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1,) * sql.count("?"))
        )
    # SCAN CONSTANT ROW is the one-row SELECT around the MAX() subqueries.
    assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), plan
    assert expected in plan, plan


@pytest.mark.parametrize(
    "name", ["/a", "/", "/srv/a/b", "a", "a/b", "//srv/a", "/srv/caf\udce9/x\\y", "/srv/t\tab"]
)
def test_a_path_and_its_parent_are_escaped_as_escape_would(name: str) -> None:
    path = Path(name)
    assert versions._escaped(path) == (escape(path), escape(path.parent))


def _row(item: Settled) -> new_files.SettledRow:
    """``item`` as a scan's hash task hands it over (daemon/watch/scan_batches.py)."""
    stat = item.stat
    return (
        escape(item.path),
        escape(item.path.parent),
        stat.dev,
        stat.ino,
        stat.size,
        stat.mtime_ns,
        stat.ctime_ns,
        item.sha256,
        item.sha512,
        item.racy,
        item.watch_id,
        item.hashed_at,
        item.evidence,
    )


def test_settled_files_rows_are_recorded_as_their_settled_items_would_be(
    tmp_path: Path,
) -> None:
    """Rows (a scan's SettledFiles) beside Settled items: the same tables as the per-file
    path; Recorded only for what is not plainly new, the plainly new ones counted."""
    tree = tmp_path / "watched"
    (tree / "sub").mkdir(parents=True)

    def write(name: str, data: bytes) -> Path:
        (tree / name).write_bytes(data)
        return tree / name

    kept, changed, moved = (write(n, n.encode()) for n in ("kept", "changed", "moved"))
    before = [_settled(1, p) for p in (kept, changed, moved)]
    changed.write_bytes(b"changed, v2")
    renamed = tree / "sub" / "mo\\ved \udce9"  # escaped in the index, back to this Path
    moved.rename(renamed)
    twice = write("twice", b"first")
    first_take = _settled(1, twice)
    twice.write_bytes(b"second")
    batch = [
        _settled(1, write("new-a", b"a")),
        _settled(1, kept),
        _settled(1, write("new-b", b"b"), evidence=("tsr", "ots")),
        _settled(1, renamed),
        _settled(1, write("new-c", b"c"), evidence=()),
        first_take,
        _settled(1, changed),
        _settled(1, twice),
        *(_settled(1, write(f"new-{n}", b"%d" % n)) for n in range(5)),
    ]
    now = utc_now()

    def setup(conn: sqlite3.Connection) -> None:
        _watches(tree)(conn)
        versions.record_each(conn, before, now=now)

    mixed: list[Settled | new_files.SettledFiles] = [
        new_files.SettledFiles([_row(item) for item in batch[:4]]),
        batch[4],  # a Settled item among the rows keeps its Recorded
        new_files.SettledFiles([_row(item) for item in batch[5:]]),
    ]
    snapshots = []
    for name in ("rows", "each"):
        (tmp_path / name).mkdir()
        with Index.open(index_path(tmp_path / name)) as index:
            with index.write() as conn:
                setup(conn)
            with index.write() as conn:
                if name == "rows":
                    done = versions.record_batch(conn, mixed, now=now)
                else:
                    each = versions.record_each(conn, batch, now=now)
            snapshots.append(_tables(index.conn))
    assert snapshots[0] == snapshots[1]
    assert [r for r in done.recorded if r.outcome != "new_file"] == [
        r for r in each if r.outcome != "new_file"
    ]
    assert [r.outcome for r in done.recorded if r.outcome != "new_file"] == [
        "unchanged",
        "renamed",
        "new_version",
        "new_version",
    ]
    assert done.recorded[[r.path for r in done.recorded].index(renamed)].renamed_from == moved
    # The Settled item is recorded set-wise too, and still gets its Recorded.
    assert each[4] in done.recorded
    new_in_recorded = sum(r.outcome == "new_file" for r in done.recorded)
    assert done.new_files + new_in_recorded == sum(r.outcome == "new_file" for r in each)
    assert done.new_files >= 5
    assert done.jobs + sum(len(r.job_ids) for r in done.recorded) == sum(
        len(r.job_ids) for r in each
    )
