"""Recording what the disk shows: versions, renames, unreadable and missing files (DESIGN §3).

The writer's side of ``files`` and ``versions``: a settled, hashed file becomes a new file, a
new version (with one pending ``obtain`` job per evidence kind, DESIGN rule 1), a rename of a
known row, or nothing new; a file that cannot be read, or has gone, changes its row's state.
Rows are never deleted (rule 6: proofs are history).

The functions take the writer's connection inside a transaction that the caller holds
(:meth:`~.database.Index.record_settled` and its siblings open it), and the time of that
transaction in the index's format (:mod:`.times`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stampd.store.files.filestat import FileStat
from stampd.store.files.pathnames import escape, unescape_path
from stampd.store.index import new_files
from stampd.store.index.schema import inserted_id, require_kind


@dataclass(frozen=True)
class Settled:
    """One settled, hashed file, ready to be recorded by :func:`record_settled`."""

    watch_id: int
    path: Path
    #: The ``fstat`` the digests belong to (unchanged from before to after the read).
    stat: FileStat
    sha256: str
    sha512: str
    #: When the read began, in the index's time format (:func:`~.times.utc_now`).
    hashed_at: str
    #: The caller's verdict that ``stat.mtime_ns`` is too close to ``hashed_at`` for the scan
    #: key to be trusted (reference/watching-and-service.md §3.4, racy timestamps).
    racy: bool
    #: Evidence kinds of the watch: one pending ``obtain`` job each for a new version.
    evidence: tuple[str, ...]


#: What :func:`record_settled` did with one :class:`Settled` item:
#: ``new_file`` — the path had no version yet (no row, or a row that was never readable);
#: ``new_version`` — the path had another content: a version and its jobs were added;
#: ``unchanged`` — same content as the current version: only the scan key was refreshed;
#: ``renamed`` — the row of the path this inode came from moved here, history and all.
Outcome = Literal["new_file", "new_version", "unchanged", "renamed"]


@dataclass(frozen=True)
class Recorded:
    """The outcome of one :class:`Settled` item."""

    path: Path
    outcome: Outcome
    file_id: int
    #: The file's current version: the new one, or the one it already had.
    version_id: int
    #: Jobs created (empty unless ``new_file`` or ``new_version``).
    job_ids: tuple[int, ...]
    #: For ``renamed``: the path the row had before.
    renamed_from: Path | None


# The SQL of the writer, named so that tests/store/test_index.py can check that each one is
# answered from an index (EXPLAIN QUERY PLAN) with a million versions.
_SQL_FILE_AT_PATH = (
    "SELECT f.id, f.current_version_id, v.sha256, f.watch_id FROM files f"
    " LEFT JOIN versions v ON v.id = f.current_version_id WHERE f.path = ?"
)
_SQL_RENAME_SOURCES = (
    "SELECT f.id, f.path, f.current_version_id FROM files f"
    " JOIN versions v ON v.id = f.current_version_id"
    " WHERE f.dev = ? AND f.ino = ? AND f.path <> ? AND v.sha256 = ? ORDER BY f.id"
)
# SQLite rewrites the entries of every index holding a column named in SET, changed or not,
# so each UPDATE names only what it must: a new file's row only gets its current version.
_SQL_SET_CURRENT = "UPDATE files SET current_version_id = ? WHERE id = ?"
_SQL_SET_PRESENT = (
    "UPDATE files SET dev = ?, ino = ?, size = ?, mtime_ns = ?, ctime_ns = ?, racy = ?,"
    " state = 'present', problem_class = NULL, problem = NULL,"
    " current_version_id = COALESCE(?, current_version_id), updated_at = ? WHERE id = ?"
)
_SQL_MOVE = "UPDATE files SET watch_id = ?, path = ?, dir = ? WHERE id = ?"
_SQL_SET_UNREADABLE = (
    "UPDATE files SET watch_id = ?, dir = ?, dev = ?, ino = ?, size = ?, mtime_ns = ?,"
    " ctime_ns = ?, racy = 0, state = 'unreadable', problem_class = ?, problem = ?,"
    " updated_at = ? WHERE id = ?"
)
_SQL_MARK_MISSING = (
    # The scan key stays: a missing row whose inode turns up elsewhere is a rename (§3.4).
    "UPDATE files SET state = 'missing', racy = 0, problem_class = NULL, problem = NULL,"
    " updated_at = ? WHERE path = ? AND state IN ('present', 'unreadable')"
)
_SQL_MARK_ID_MISSING = (
    "UPDATE files SET state = 'missing', racy = 0, problem_class = NULL, problem = NULL,"
    " updated_at = ? WHERE id = ? AND state IN ('present', 'unreadable')"
)


def record_settled(
    conn: sqlite3.Connection, batch: Sequence[Settled], *, now: str
) -> list[Recorded]:
    """Record a batch of hashed files in the caller's one transaction; one :class:`Recorded`
    per item.

    For each item, in order (later items see what earlier ones did):

    1. ``unchanged`` — the row at this path has this sha256 as its current version: only
       the scan key, ``racy`` and the state (present again, problem cleared) are updated.
       A touch, a chmod or a new link to the inode (ctime changes) must not restamp
       (§3.4: same digest, no stamp).
    2. ``renamed`` — no row at this path, and another row has this (dev, ino) and this
       sha256 while its own path no longer names that inode (gone, or another file now):
       that row moves here and keeps its versions, proofs and jobs (DESIGN: a rename is not
       a new version). A path that still names the inode is a hard link, not a rename.
    3. ``new_file`` / ``new_version`` — a version plus one pending ``obtain`` job per
       evidence kind (DESIGN rule 1). When a row already sits at this path and the inode
       came from another row (``mv a b`` over a recorded ``b``), the destination row gets
       the new version — its own history stays — and the source row becomes ``missing``
       if its path is gone; the source's proofs stay with it, and the job runner may reuse
       a valid proof for the same digest rather than asking a provider again.

    Items that touch no row and no other item of the batch can only be new files; each run
    of them is recorded set-wise (:mod:`.new_files`: a few statements for the run), with the
    rows and ids the per-file path (:func:`record_each`) would give them.

    Any error rolls the whole batch back (nothing of it is recorded) and is re-raised.
    The rename check ``lstat``s the old path inside the transaction: one call per
    candidate row, and candidates exist only when a file with this inode and this content
    was recorded under another path.
    """
    return record_batch(conn, batch, now=now).recorded


@dataclass
class Committed:
    """What :func:`record_batch` did with a batch."""

    #: One per :class:`Settled` item, and one per row of a :class:`~.new_files.SettledFiles`
    #: that was not plainly new (those went the per-file way), in batch order.
    recorded: list[Recorded]
    #: Rows of :class:`~.new_files.SettledFiles` recorded set-wise as new files (no
    #: :class:`Recorded` built for them) and the jobs they got.
    new_files: int = 0
    jobs: int = 0


def record_batch(
    conn: sqlite3.Connection, batch: Sequence[Settled | new_files.SettledFiles], *, now: str
) -> Committed:
    """:func:`record_settled` of a batch that may also hold :class:`~.new_files.SettledFiles`:
    each of their rows is recorded as its :class:`Settled` item would be, in order; the rows
    that are plainly new are only counted, the others each get their :class:`Recorded`."""
    rows: list[new_files.SettledRow] = []
    items: list[Settled | None] = []  # the Settled item of each row; None: from SettledFiles
    for element in batch:
        if isinstance(element, Settled):
            rows.append(_row_of(element))
            items.append(element)
        else:
            rows.extend(element.rows)
            items.extend([None] * len(element.rows))
    fresh = new_files.fresh(conn, rows)
    done = Committed([])
    start = 0
    while start < len(rows):
        end = start + 1
        # The ids after whatever the items before inserted (None: past max + 1 allocation).
        ids = new_files.next_ids(conn) if fresh[start] else None
        if ids is None:
            row = rows[start]
            item = items[start] or _settled_of(row)
            done.recorded.append(_record_one(conn, item, now, (row[0], row[1])))
        else:
            # A run of new files: set-wise, then the next per-file item sees their rows.
            while end < len(rows) and fresh[end]:
                end += 1
            new_files.record_run(conn, rows[start:end], ids, now=now)
            _count_run(done, rows[start:end], items[start:end], ids)
        start = end
    return done


def _count_run(
    done: Committed,
    run: Sequence[new_files.SettledRow],
    items: Sequence[Settled | None],
    ids: new_files.NextIds,
) -> None:
    """The outcomes of ``run``, which :func:`.new_files.record_run` recorded with ``ids``:
    a :class:`Recorded` for each :class:`Settled` item, counts for the other rows."""
    job_id = ids.job
    for offset, (row, item) in enumerate(zip(run, items, strict=True)):
        kinds = len(row[12])
        if item is None:
            done.new_files += 1
            done.jobs += kinds
        else:
            job_ids = tuple(range(job_id, job_id + kinds))
            file_id, version_id = ids.file + offset, ids.version + offset
            recorded = Recorded(item.path, "new_file", file_id, version_id, job_ids, None)
            done.recorded.append(recorded)
        job_id += kinds


def _row_of(item: Settled) -> new_files.SettledRow:
    """``item`` as the row :mod:`.new_files` takes."""
    path, parent = _escaped(item.path)
    stat = item.stat
    return (
        path,
        parent,
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


def _settled_of(row: new_files.SettledRow) -> Settled:
    """The :class:`Settled` item a row stands for (a row that goes the per-file way)."""
    return Settled(
        watch_id=row[10],
        path=unescape_path(row[0]),
        stat=FileStat(*row[2:7]),
        sha256=row[7],
        sha512=row[8],
        hashed_at=row[11],
        racy=row[9],
        evidence=row[12],
    )


def record_each(conn: sqlite3.Connection, batch: Sequence[Settled], *, now: str) -> list[Recorded]:
    """:func:`record_settled` item by item, each with its own lookups and statements: the
    path every item that is not plainly new takes, kept whole as the reference that the
    set-wise path must match row for row (tests/store/test_record_batch.py)."""
    return [_record_one(conn, item, now, _escaped(item.path)) for item in batch]


def _escaped(path: Path) -> tuple[str, str]:
    """``(escape(path), escape(path.parent))``, escaping once: escape commutes with joining
    (:mod:`~stampd.store.files.pathnames`), so the parent's text is the path's up to its
    last ``/``. The root and a leading ``//`` (which pathlib keeps) are left to pathlib."""
    text = escape(path)
    head = text.rpartition("/")[0]
    if head and not text.startswith("//"):
        return text, head
    return text, escape(path.parent)


def record_unreadable(
    conn: sqlite3.Connection,
    *,
    watch_id: int,
    path: Path,
    stat: FileStat | None,
    error_class: str,
    message: str,
    now: str,
) -> None:
    """Mark ``path`` unreadable with its problem, creating its row if needed.

    ``stat`` becomes the scan key, so the scan offers the file again only when its stat
    changes (a chmod changes ctime); None when even ``lstat`` failed, and then every scan
    retries it. Versions the file already has stay; its current version is kept.
    """
    key = _key(stat)
    row = conn.execute("SELECT id FROM files WHERE path = ?", (escape(path),)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO files (watch_id, path, dir, dev, ino, size, mtime_ns, ctime_ns,"
            " state, problem_class, problem, first_seen_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'unreadable', ?, ?, ?, ?)",
            (
                watch_id,
                escape(path),
                escape(path.parent),
                *key,
                error_class,
                message,
                now,
                now,
            ),
        )
    else:
        conn.execute(
            _SQL_SET_UNREADABLE,
            (watch_id, escape(path.parent), *key, error_class, message, now, row[0]),
        )


def mark_missing(conn: sqlite3.Connection, paths: Sequence[Path], *, now: str) -> int:
    """Mark the present or unreadable rows at ``paths`` missing; return how many changed.

    Rows are never deleted, whatever happened to the file: proofs are history (DESIGN rule
    6), and a missing row whose inode turns up at another path is a rename (§3.4). Paths
    without a row, or already missing, are ignored.
    """
    if not paths:
        return 0
    cursor = conn.executemany(_SQL_MARK_MISSING, [(now, escape(path)) for path in paths])
    return cursor.rowcount


def _record_one(
    conn: sqlite3.Connection, item: Settled, now: str, escaped: tuple[str, str]
) -> Recorded:
    """One item of :func:`record_settled`, inside its transaction; ``escaped`` is
    :func:`_escaped` of its path."""
    path, parent = escaped
    row = conn.execute(_SQL_FILE_AT_PATH, (path,)).fetchone()
    if row is not None and int(row[3]) != item.watch_id:
        # The path now belongs to another watch (the configuration changed).
        conn.execute(_SQL_MOVE, (item.watch_id, path, parent, row[0]))
    if row is not None and row[2] == item.sha256:
        file_id, version_id = int(row[0]), int(row[1])
        _set_present(conn, file_id, item.stat, racy=item.racy, now=now)
        return Recorded(item.path, "unchanged", file_id, version_id, (), None)

    source = _rename_source(conn, item, path)
    if source is not None:
        source_id, source_path, source_version, source_gone = source
        if row is None:
            conn.execute(_SQL_MOVE, (item.watch_id, path, parent, source_id))
            _set_present(conn, source_id, item.stat, racy=item.racy, now=now)
            return Recorded(item.path, "renamed", source_id, source_version, (), source_path)
        # The destination already has a row with its own history: that row gets the new
        # version below, and the source row, whose path no longer names a file, is missing.
        if source_gone:
            conn.execute(_SQL_MARK_ID_MISSING, (now, source_id))

    if row is None:
        file_id = _insert_file(
            conn,
            watch_id=item.watch_id,
            path=path,
            parent=parent,
            stat=item.stat,
            racy=item.racy,
            # First seen when its content was first in hand: never after "hashed".
            first_seen=min(item.hashed_at, now),
            now=now,
        )
        outcome: Outcome = "new_file"
    else:
        file_id = int(row[0])
        outcome = "new_file" if row[1] is None else "new_version"
    version_id, job_ids = _add_version(
        conn,
        file_id=file_id,
        stat=item.stat,
        sha256=item.sha256,
        sha512=item.sha512,
        # seen_at is when stampd first had this content in hand: the start of the read.
        seen_at=item.hashed_at,
        hashed_at=item.hashed_at,
        evidence=item.evidence,
        now=now,
    )
    if row is None:
        conn.execute(_SQL_SET_CURRENT, (version_id, file_id))
    else:
        _set_present(conn, file_id, item.stat, racy=item.racy, now=now, version_id=version_id)
    return Recorded(item.path, outcome, file_id, version_id, job_ids, None)


def _rename_source(
    conn: sqlite3.Connection, item: Settled, path: str
) -> tuple[int, Path, int, bool] | None:
    """``(file_id, old path, current version id, old path gone)`` of the row this file was
    renamed from (``path`` is its escaped path), or None.

    Reference §3.4: the row must have the same (dev, ino) — ctime is left out because
    ``rename`` updates it — and the same content, and its path must no longer name this inode.
    """
    rows = conn.execute(
        _SQL_RENAME_SOURCES, (item.stat.dev, item.stat.ino, path, item.sha256)
    ).fetchall()
    for file_id, old, version_id in rows:
        old_path = unescape_path(old)
        holds = _names_inode(old_path, item.stat)
        if holds is not True:
            return int(file_id), old_path, int(version_id), holds is None
    return None


def _names_inode(path: Path, stat: FileStat) -> bool | None:
    """Whether ``path`` names the inode of ``stat``; None when it names nothing at all."""
    try:
        found = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        # EACCES and the like: we cannot tell. Assume it still does — a missed rename costs
        # one restamp, a false one would take the history away from a file that is still there.
        return True
    return (found.st_dev, found.st_ino) == (stat.dev, stat.ino)


def _key(stat: FileStat | None) -> tuple[int | None, ...]:
    """The scan-key columns ``(dev, ino, size, mtime_ns, ctime_ns)`` of a stat (or NULLs)."""
    if stat is None:
        return (None, None, None, None, None)
    return (stat.dev, stat.ino, stat.size, stat.mtime_ns, stat.ctime_ns)


def _insert_file(
    conn: sqlite3.Connection,
    *,
    watch_id: int,
    path: str,
    parent: str,
    stat: FileStat,
    racy: bool = False,
    first_seen: str,
    now: str,
) -> int:
    """A new present row without a version yet at the escaped ``path`` in ``parent`` (the
    caller adds one in the same transaction and then sets ``current_version_id``: the two
    tables reference each other)."""
    cursor = conn.execute(
        "INSERT INTO files (watch_id, path, dir, dev, ino, size, mtime_ns, ctime_ns, racy,"
        " state, first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'present', ?, ?)",
        (watch_id, path, parent, *_key(stat), int(racy), first_seen, now),
    )
    return inserted_id(cursor)


def _set_present(
    conn: sqlite3.Connection,
    file_id: int,
    stat: FileStat,
    *,
    racy: bool,
    now: str,
    version_id: int | None = None,
) -> None:
    """Row ``file_id`` has this scan key and racy flag, is present, and has no problem; its
    current version becomes ``version_id`` when one is given."""
    conn.execute(_SQL_SET_PRESENT, (*_key(stat), int(racy), version_id, now, file_id))


def _add_version(
    conn: sqlite3.Connection,
    *,
    file_id: int,
    stat: FileStat,
    sha256: str,
    sha512: str,
    seen_at: str,
    hashed_at: str,
    evidence: Sequence[str],
    now: str,
) -> tuple[int, tuple[int, ...]]:
    """Insert a version and one pending ``obtain`` job per evidence kind; return their ids."""
    cursor = conn.execute(
        "INSERT INTO versions (file_id, size, mtime_ns, ctime_ns, dev, ino, sha256,"
        " sha512, seen_at, hashed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            file_id,
            stat.size,
            stat.mtime_ns,
            stat.ctime_ns,
            stat.dev,
            stat.ino,
            sha256,
            sha512,
            seen_at,
            hashed_at,
        ),
    )
    version_id = inserted_id(cursor)
    job_ids = tuple(
        inserted_id(
            conn.execute(
                "INSERT INTO jobs (kind, action, version_id, state, next_try_at,"
                " created_at, updated_at) VALUES (?, 'obtain', ?, 'pending', ?, ?, ?)",
                # The registry, not a CHECK, says which kinds exist (schema 0004).
                (require_kind(kind), version_id, now, now, now),
            )
        )
        for kind in evidence
    )
    return version_id, job_ids
