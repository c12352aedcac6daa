"""The set-wise half of recording: a batch's files that are new to the index, in a few
statements (issue 13, Build 1).

A first scan hands the writer batches of paths the index has never seen. Recorded one by one
(:func:`.versions.record_each`) each costs two point lookups, three inserts and an update,
each a statement of its own. Here the whole batch takes two lookups (which of its paths, and
which of its inodes, the index already has) and then one ``executemany`` per table: the
items that touch no existing row — no row at their path, no row with their (dev, ino), and
neither shared with another item of the batch — cannot be ``unchanged`` or ``renamed``, so
each is a new file with one version and its jobs, and nothing else in the batch depends on it.
:func:`fresh` says which items those are; :func:`.versions.record_batch` records each run
of them with :func:`record_run`, and every other item by the per-file path, in batch order.

A scan's hashed files arrive as :class:`SettledFiles`, plain :data:`SettledRow` tuples that
go into these statements as they are: no object per file on their way from a hash worker's
reply to the committed row, and none built for the result of a plainly new one.

The rows are the ones the per-file path writes, ids included: the writer allocates them as
SQLite would, ``max(id) + 1`` upward (sqlite.org/autoinc.html: without AUTOINCREMENT a new
rowid is one more than the largest), which is safe because the caller holds the one write
transaction (``BEGIN IMMEDIATE``) and nothing else inserts meanwhile.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

from stampd.store.index.schema import require_kind

#: One settled, hashed file as the writer takes it, a plain tuple (no object per file, no
#: Path): its escaped path and escaped parent (:mod:`~stampd.store.files.pathnames`), its
#: ``fstat`` key ``dev, ino, size, mtime_ns, ctime_ns``, ``sha256`` and ``sha512`` in hex,
#: ``racy``, then its watch's id, ``hashed_at`` and the watch's evidence kinds: every field of
#: a :class:`~.versions.Settled` item, in this order.
SettledRow = tuple[str, str, int, int, int, int, int, str, str, bool, int, str, tuple[str, ...]]


class SettledFiles:
    """Many settled, hashed files at once, as :data:`SettledRow` rows: what a scan's hash task
    hands the writer (daemon/watch/scan_batches.py), recorded like as many
    :class:`~.versions.Settled` items (:func:`.versions.record_batch`).

    A first scan records a million files: one frozen dataclass, one ``Path`` and one
    ``Recorded`` per file cost the daemon's one GIL more than the SQL (issue 13's profile:
    about 50 µs per file between a worker's reply and the committed row)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[SettledRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)


#: Host parameters per lookup statement: far below SQLite's limit (32,766 since 3.32,
#: sqlite.org/limits.html §9) and one statement per 500 items.
CHUNK = 500
#: Rows per INSERT statement (x 12 columns: far below the host parameter limit).
ROWS_PER_INSERT = 64
#: Above this id SQLite no longer takes ``max + 1`` but a random unused rowid
#: (sqlite.org/autoinc.html); the caller then records item by item.
MAX_ROWID = 2**63 - 1

# Named for tests/store/test_index.py, which checks their plans: each a SEARCH on the index
# meant for it, one b-tree probe per listed value.
_SQL_PATHS_KNOWN = "SELECT path FROM files WHERE path IN ({marks})"
_SQL_INODES_KNOWN = "SELECT ino FROM files WHERE dev = ? AND ino IN ({marks})"
_SQL_NEXT_IDS = (
    "SELECT (SELECT COALESCE(MAX(id), 0) FROM files), (SELECT COALESCE(MAX(id), 0) FROM versions),"
    " (SELECT COALESCE(MAX(id), 0) FROM jobs)"
)
_SQL_INSERT_FILES = (
    "INSERT INTO files (id, watch_id, path, dir, dev, ino, size, mtime_ns, ctime_ns, racy,"
    " state, first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'present', ?, ?)"
)
_SQL_INSERT_VERSIONS = (
    "INSERT INTO versions (id, file_id, size, mtime_ns, ctime_ns, dev, ino, sha256, sha512,"
    " seen_at, hashed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_JOBS = (
    "INSERT INTO jobs (id, kind, action, version_id, state, next_try_at, created_at,"
    " updated_at) VALUES (?, ?, 'obtain', ?, 'pending', ?, ?, ?)"
)
# The two tables reference each other, and foreign keys are checked at once: a file row is
# inserted without its version, then gets it. Deferring the check instead would make every
# version insert search files by current_version_id, which has no index (sqlite.org/
# foreignkeys.html §3), while a violation is outstanding. A run's files and versions have
# consecutive ids in the same order, so one statement over the run's id range sets them all:
# current_version_id = id + (first version id - first file id).
_SQL_SET_CURRENT_OF_RUN = (
    "UPDATE files SET current_version_id = id + ? WHERE id BETWEEN ? AND ?"
    " AND current_version_id IS NULL"
)


def known_paths(conn: sqlite3.Connection, paths: Sequence[str]) -> set[str]:
    """Which of these escaped paths have a row in ``files`` (any state)."""
    found: set[str] = set()
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        sql = _SQL_PATHS_KNOWN.format(marks=", ".join("?" * len(chunk)))
        found.update(row[0] for row in conn.execute(sql, chunk))
    return found


def known_inodes(
    conn: sqlite3.Connection, inodes: Iterable[tuple[int, int]]
) -> set[tuple[int, int]]:
    """Which of these (dev, ino) pairs some row of ``files`` has (any state, any path)."""
    by_dev: dict[int, list[int]] = {}
    for dev, ino in inodes:
        by_dev.setdefault(dev, []).append(ino)
    found: set[tuple[int, int]] = set()
    for dev, inos in by_dev.items():
        for start in range(0, len(inos), CHUNK):
            chunk = inos[start : start + CHUNK]
            sql = _SQL_INODES_KNOWN.format(marks=", ".join("?" * len(chunk)))
            found.update((dev, row[0]) for row in conn.execute(sql, (dev, *chunk)))
    return found


@dataclass(frozen=True)
class NextIds:
    """The ids the next inserted file, version and job get (``max(id) + 1`` of each table)."""

    file: int
    version: int
    job: int


def next_ids(conn: sqlite3.Connection) -> NextIds | None:
    """The next ids, or None when SQLite would no longer allocate them as ``max + 1``."""
    files, versions, jobs = conn.execute(_SQL_NEXT_IDS).fetchone()
    if max(files, versions, jobs) >= MAX_ROWID - 1_000_000:
        return None
    return NextIds(files + 1, versions + 1, jobs + 1)


@dataclass
class _NewRows:
    """The rows of a run of new files, each list in id order (one tuple per row)."""

    files: list[tuple[object, ...]]
    versions: list[tuple[object, ...]]
    jobs: list[tuple[object, ...]]


def _insert(conn: sqlite3.Connection, ids: NextIds, rows: _NewRows) -> None:
    """Insert the files, their versions and jobs, and point each file at its version.

    ``rows`` are one run: file ``ids.file + k`` has version ``ids.version + k``, the k-th of
    ``rows.versions``.
    """
    _insert_many(conn, _SQL_INSERT_FILES, rows.files)
    _insert_many(conn, _SQL_INSERT_VERSIONS, rows.versions)
    last = ids.file + len(rows.files) - 1
    cursor = conn.execute(_SQL_SET_CURRENT_OF_RUN, (ids.version - ids.file, ids.file, last))
    if cursor.rowcount != len(rows.files):  # pragma: no cover - ids are ours (BEGIN IMMEDIATE)
        raise sqlite3.IntegrityError(
            f"files {ids.file}..{last}: {cursor.rowcount} rows got their version, not"
            f" {len(rows.files)}"
        )
    _insert_many(conn, _SQL_INSERT_JOBS, rows.jobs)


def _insert_many(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    """``executemany(sql, rows)``, :data:`ROWS_PER_INSERT` rows per statement: one step (and
    one release of the GIL, which sqlite3 drops around each step) per chunk, not per row.
    The remainder goes row by row, so only one statement text per table is ever prepared."""
    head, _, one = sql.partition(" VALUES ")
    full = len(rows) - len(rows) % ROWS_PER_INSERT
    if full:
        chunked = f"{head} VALUES {', '.join([one] * ROWS_PER_INSERT)}"
        # chain flattens in C: the comprehension it replaces was 3.5 µs per file under the GIL.
        conn.executemany(
            chunked,
            (
                tuple(chain.from_iterable(rows[start : start + ROWS_PER_INSERT]))
                for start in range(0, full, ROWS_PER_INSERT)
            ),
        )
    if full < len(rows):
        conn.executemany(sql, rows[full:])


def fresh(conn: sqlite3.Connection, rows: Sequence[SettledRow]) -> list[bool]:
    """Per row: whether it touches no row of the index and no other row — no row at its path
    or with its (dev, ino), and neither shared within ``rows`` — so that it can only be a new
    file whose recording changes nothing any other item looks at."""
    paths = [row[0] for row in rows]
    inodes = [(row[2], row[3]) for row in rows]
    path_count: dict[str, int] = {}
    for path in paths:
        path_count[path] = path_count.get(path, 0) + 1
    inode_count: dict[tuple[int, int], int] = {}
    for inode in inodes:
        inode_count[inode] = inode_count.get(inode, 0) + 1
    taken_paths = known_paths(conn, paths)
    taken_inodes = known_inodes(conn, inode_count)
    return [
        path_count[path] == 1
        and inode_count[inode] == 1
        and path not in taken_paths
        and inode not in taken_inodes
        for path, inode in zip(paths, inodes, strict=True)
    ]


def record_run(
    conn: sqlite3.Connection, run: Sequence[SettledRow], ids: NextIds, *, now: str
) -> None:
    """Record a run of rows :func:`fresh` found new: the rows of the per-file path's
    ``new_file`` branch (:func:`.versions.record_each`), ids included, inserted set-wise.

    The k-th row gets file ``ids.file + k`` and version ``ids.version + k``; its jobs (one per
    evidence kind, in order) take the next job ids after those of the rows before it.
    """
    files: list[tuple[object, ...]] = []
    versions: list[tuple[object, ...]] = []
    jobs: list[tuple[object, ...]] = []
    file_id, version_id, job_id = ids.file, ids.version, ids.job
    kinds_checked: set[tuple[str, ...]] = set()
    for (
        path,
        parent,
        dev,
        ino,
        size,
        mtime_ns,
        ctime_ns,
        sha256,
        sha512,
        racy,
        watch_id,
        hashed_at,
        evidence,
    ) in run:
        # First seen when its content was first in hand: never after "hashed".
        first_seen = hashed_at if hashed_at < now else now
        files.append(
            (
                file_id,
                watch_id,
                path,
                parent,
                dev,
                ino,
                size,
                mtime_ns,
                ctime_ns,
                int(racy),
                first_seen,
                now,
            )
        )
        # seen_at is when stampd first had this content in hand: the start of the read.
        versions.append(
            (
                version_id,
                file_id,
                size,
                mtime_ns,
                ctime_ns,
                dev,
                ino,
                sha256,
                sha512,
                hashed_at,
                hashed_at,
            )
        )
        if evidence:
            if evidence not in kinds_checked:
                for kind in evidence:
                    require_kind(kind)
                kinds_checked.add(evidence)
            for kind in evidence:
                jobs.append((job_id, kind, version_id, now, now, now))
                job_id += 1
        file_id += 1
        version_id += 1
    _insert(conn, ids, _NewRows(files, versions, jobs))
