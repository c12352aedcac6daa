"""The SQLite index: every watch, file, version, proof, job and attempt (DESIGN §7).

One writer connection (the daemon) and any number of read-only connections (the CLI's
queries). The database runs in WAL mode so readers never block the writer. Every write
transaction starts with ``BEGIN IMMEDIATE``: a deferred ``BEGIN`` that reads first and then
wants to write fails at once with ``SQLITE_BUSY`` when another connection committed in
between, without consulting the busy handler (sqlite.org/lang_transaction.html; measured in
reference/watching-and-service.md §5.2). ``IMMEDIATE`` takes the write lock up front and
waits for it under ``busy_timeout`` instead.

Paths are stored in the escaped form of :mod:`stampd.store.files.pathnames` (``caf\\351.txt``
for a Latin-1 name): lossless for every name Linux allows, valid UTF-8, and the same text
the CLI prints; a name that is printable UTF-8 without a backslash is stored as it is.

Times are stored as ISO 8601 UTC text with microseconds (``2026-11-22T19:48:00.123456Z``):
readable in ``sqlite3``, and they sort correctly as strings. Digests are lowercase hex.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from stampd.store.errors import IndexUnavailableError
from stampd.store.files.filestat import FileStat
from stampd.store.files.pathnames import escape, unescape, unescape_path

#: Seconds a connection waits for another connection's write lock before giving up.
BUSY_TIMEOUT_S = 10.0

EVIDENCE_KINDS = ("tsr", "ots", "p7s", "ers", "attest")
FILE_STATES = ("present", "missing", "unreadable")
PROOF_STATUSES = ("pending", "complete", "invalid")
JOB_ACTIONS = ("obtain", "upgrade", "renew")
JOB_STATES = ("pending", "running", "done", "cancelled")

migrations = Migrations("stampd")


def _check(column: str, values: Sequence[str]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"CHECK ({column} IN ({quoted}))"


@migrations(name="0001_initial")
def _initial_schema(db: Database) -> None:
    # Plain SQL rather than sqlite-utils' table builders: CHECK constraints, partial indexes
    # and foreign keys are the schema's documentation, and they must be exact.
    statements = [
        """CREATE TABLE watches (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            added_at TEXT NOT NULL
        )""",
        # One row per path ever recorded; rows are never deleted (DESIGN rule 6: proofs are
        # history). dev..ctime_ns are the scan key (reference/watching-and-service.md §3.4): the
        # last stat seen at this path — for a readable file its current version's stat, for an
        # unreadable one the stat it had when reading failed — so the scan rehashes a file only
        # when the key changes, or while `racy` says the key cannot be trusted yet.
        f"""CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            watch_id INTEGER NOT NULL REFERENCES watches(id),
            path TEXT NOT NULL UNIQUE,
            dir TEXT NOT NULL,
            dev INTEGER,
            ino INTEGER,
            size INTEGER,
            mtime_ns INTEGER,
            ctime_ns INTEGER,
            racy INTEGER NOT NULL DEFAULT 0 CHECK (racy IN (0, 1)),
            state TEXT NOT NULL DEFAULT 'present' {_check("state", FILE_STATES)},
            current_version_id INTEGER REFERENCES versions(id),
            problem_class TEXT,
            problem TEXT,
            first_seen_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX files_watch_state ON files(watch_id, state)",
        "CREATE INDEX files_state ON files(state)",
        # The scan lists one directory's rows at a time, and after its walk the directories
        # under a root that still have live rows; (dir, state) covers both.
        "CREATE INDEX files_dir_state ON files(dir, state)",
        # Rename detection looks a vanished file up by (dev, ino) (watching-and-service.md §3).
        "CREATE INDEX files_dev_ino ON files(dev, ino)",
        """CREATE TABLE versions (
            id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES files(id),
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            dev INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            sha512 TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            hashed_at TEXT NOT NULL
        )""",
        "CREATE INDEX versions_file ON versions(file_id, id)",
        "CREATE INDEX versions_sha256 ON versions(sha256)",
        f"""CREATE TABLE proofs (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES versions(id),
            kind TEXT NOT NULL {_check("kind", EVIDENCE_KINDS)},
            provider TEXT NOT NULL,
            status TEXT NOT NULL {_check("status", PROOF_STATUSES)},
            digest_alg TEXT NOT NULL,
            digest TEXT NOT NULL,
            gen_time TEXT,
            serial TEXT,
            authority TEXT,
            not_after TEXT,
            sidecar_sha256 TEXT,
            parent_id INTEGER REFERENCES proofs(id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX proofs_version ON proofs(version_id, kind)",
        # Reuse: "does this digest already have a valid token?" (issue 4).
        "CREATE INDEX proofs_digest ON proofs(digest, kind, status)",
        "CREATE INDEX proofs_kind_status ON proofs(kind, status)",
        # Renewal scheduling scans complete proofs by the expiry of their signing chain.
        "CREATE INDEX proofs_not_after ON proofs(not_after) WHERE status = 'complete'",
        f"""CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL {_check("kind", EVIDENCE_KINDS)},
            action TEXT NOT NULL {_check("action", JOB_ACTIONS)},
            version_id INTEGER REFERENCES versions(id),
            proof_id INTEGER REFERENCES proofs(id),
            state TEXT NOT NULL {_check("state", JOB_STATES)},
            tries INTEGER NOT NULL DEFAULT 0,
            next_try_at TEXT NOT NULL,
            last_error_class TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX jobs_state_due ON jobs(state, next_try_at)",
        "CREATE INDEX jobs_version ON jobs(version_id)",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            provider TEXT NOT NULL,
            started_at TEXT NOT NULL,
            latency_ms REAL,
            error_class TEXT,
            http_status INTEGER,
            message TEXT
        )""",
        "CREATE INDEX attempts_job ON attempts(job_id, id)",
        "CREATE INDEX attempts_provider ON attempts(provider, started_at)",
    ]
    for statement in statements:
        db.execute(statement)


@migrations(name="0002_escaped_paths")
def _escaped_paths(db: Database) -> None:
    # Paths were stored as raw text before names that are not UTF-8 were accepted; the
    # escaped form (store/files/pathnames.py) rewrites only names with a backslash or a control
    # character, so almost every row keeps its text and no index entry moves.
    conn = db.conn
    for table, columns in (("watches", ("path",)), ("files", ("path", "dir"))):
        listed = ", ".join(columns)
        changed = [
            (*(escape(value) for value in values), row_id)
            for row_id, *values in conn.execute(f"SELECT id, {listed} FROM {table}")  # noqa: S608
            if any(escape(value) != value for value in values)
        ]
        # Two steps: an escaped name may equal another row's old text ("a\\b" and "a\b"),
        # and `path` is UNIQUE. "//" never occurs in a stored (normalised) path.
        conn.executemany(
            f"UPDATE {table} SET path = '//stampd-migrating/' || id WHERE id = ?",  # noqa: S608
            [(row[-1],) for row in changed],
        )
        assignments = ", ".join(f"{column} = ?" for column in columns)
        conn.executemany(f"UPDATE {table} SET {assignments} WHERE id = ?", changed)  # noqa: S608


@migrations(name="0003_proofs_by_sidecar")
def _proofs_by_sidecar(db: Database) -> None:
    # Sidecar repair asks "are these bytes a proof of a file present elsewhere?" for what a
    # rename left at the old name (store/files/repair.py): answered by the proof's bytes' SHA-256.
    db.execute("CREATE INDEX proofs_sidecar ON proofs(sidecar_sha256)")


def utc_now() -> str:
    """The current time in the index's text format."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """A timezone-aware datetime in the index's text format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Settled:
    """One settled, hashed file, ready to be recorded by :meth:`Index.record_settled`."""

    watch_id: int
    path: Path
    #: The ``fstat`` the digests belong to (unchanged from before to after the read).
    stat: FileStat
    sha256: str
    sha512: str
    #: When the read began, in the index's time format (:func:`utc_now`).
    hashed_at: str
    #: The caller's verdict that ``stat.mtime_ns`` is too close to ``hashed_at`` for the scan
    #: key to be trusted (reference/watching-and-service.md §3.4, racy timestamps).
    racy: bool
    #: Evidence kinds of the watch: one pending ``obtain`` job each for a new version.
    evidence: tuple[str, ...]


#: What :meth:`Index.record_settled` did with one :class:`Settled` item:
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


@dataclass(frozen=True)
class ScanRow:
    """One row of a directory as the reconciliation scan compares it with the disk."""

    file_id: int
    name: str
    state: str
    #: The scan key; None when unknown (an unreadable file that could not even be stat'ed).
    stat: FileStat | None
    racy: bool
    #: Evidence kind → SHA-256 of the bytes of each complete proof of the current version:
    #: what the file's sidecars must hold (store/files/repair.py). Empty for most rows of a tree
    #: that is not stamped, and for a file whose first proof is still pending.
    sidecars: Mapping[str, frozenset[str]] = field(default_factory=dict)


#: States of a row whose file is, as far as the index knows, on disk.
LIVE_STATES = ("present", "unreadable")

# The SQL of the writer and of the scan helpers, named so that tests/test_index.py can check
# that each one is answered from an index (EXPLAIN QUERY PLAN) with a million versions.
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
# The proofs come from a correlated subquery on proofs_version, inside SQLite: one statement
# per directory however many files it holds.
_SQL_ROWS_IN_DIRECTORY = (
    "SELECT id, path, state, dev, ino, size, mtime_ns, ctime_ns, racy,"
    " (SELECT group_concat(p.kind || ':' || p.sidecar_sha256, ' ') FROM proofs p"
    "   WHERE p.version_id = files.current_version_id AND p.status = 'complete'"
    "   AND p.sidecar_sha256 IS NOT NULL)"
    " FROM files WHERE dir = ?"
)
# "+state" keeps the planner off files_state, which it would otherwise prefer without ANALYZE
# statistics and which selects nearly every row (sqlite.org/optoverview.html, "Disqualifying
# WHERE clause terms using unary-+"): these two must range-scan by path and by dir.
_SQL_PRESENT_UNDER = (
    "SELECT id, path FROM files WHERE (path = ? OR (path >= ? AND path < ?))"
    " AND +state IN ('present', 'unreadable') ORDER BY path"
)
_SQL_LIVE_DIRECTORIES_BELOW = (
    "SELECT DISTINCT dir FROM files WHERE dir >= ? AND dir < ?"
    " AND +state IN ('present', 'unreadable') ORDER BY dir"
)


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, uri=uri, check_same_thread=False)
    except sqlite3.Error as error:
        raise IndexUnavailableError(
            f"cannot open the index {target}: {error}",
            hint="check that the state directory exists and is readable by this user",
        ) from error
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Index:
    """The writer connection to ``STATE/index.sqlite``. Only the daemon holds one.

    Its write methods are meant for one thread (the daemon's index writer); the read helpers
    below (:func:`rows_in_directory`, :func:`present_under`) work on it as on a reader.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.db = Database(conn)

    @classmethod
    def open(cls, path: Path) -> Index:
        """Open (creating if needed) the index at ``path`` and bring its schema up to date."""
        conn = _connect(str(path))
        index = cls(path, conn)
        try:
            # WAL must be switched on outside a transaction; it then persists in the file.
            index.db.enable_wal()
            # NORMAL is durable against a process crash in WAL mode; a power loss may drop the
            # last commits, which the startup scan re-finds and sidecar adoption re-links
            # (DESIGN rule 1), so FULL's fsync per commit buys nothing here.
            conn.execute("PRAGMA synchronous = NORMAL")
            index._refuse_newer_schema()
            with index.write():
                migrations.apply(index.db)
        except sqlite3.DatabaseError as error:
            conn.close()
            raise IndexUnavailableError(
                f"{path}: not a usable stampd index ({error})",
                hint="move the file aside and restart; stampd rebuilds the index by scanning",
            ) from error
        except BaseException:
            conn.close()
            raise
        return index

    def _refuse_newer_schema(self) -> None:
        known = {migration.name for migration in migrations.pending(Database(memory=True))}
        applied = {migration.name for migration in migrations.applied(self.db)}
        unknown = sorted(applied - known)
        if unknown:
            raise IndexUnavailableError(
                f"{self.path}: written by a newer stampd (schema steps {', '.join(unknown)})",
                hint="upgrade stampd, or restore the index backup made before the downgrade",
            )

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close (a clean shutdown leaves one file)."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any error)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def ensure_watch(self, path: Path) -> int:
        """The id of the watch row for ``path``, created on first sight."""
        with self.write() as conn:
            row = conn.execute("SELECT id FROM watches WHERE path = ?", (escape(path),)).fetchone()
            if row is not None:
                return int(row[0])
            cursor = conn.execute(
                "INSERT INTO watches (path, added_at) VALUES (?, ?)", (escape(path), utc_now())
            )
            return _rowid(cursor)

    def record_settled(self, batch: Sequence[Settled]) -> list[Recorded]:
        """Record a batch of hashed files in ONE transaction; one :class:`Recorded` per item.

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

        Any error rolls the whole batch back (nothing of it is recorded) and is re-raised.
        The rename check ``lstat``s the old path inside the transaction: one call per
        candidate row, and candidates exist only when a file with this inode and this content
        was recorded under another path.
        """
        now = utc_now()
        with self.write() as conn:
            return [_record_one(conn, item, now) for item in batch]

    def record_unreadable(
        self,
        *,
        watch_id: int,
        path: Path,
        stat: FileStat | None,
        error_class: str,
        message: str,
    ) -> None:
        """Mark ``path`` unreadable with its problem, creating its row if needed.

        ``stat`` becomes the scan key, so the scan offers the file again only when its stat
        changes (a chmod changes ctime); None when even ``lstat`` failed, and then every scan
        retries it. Versions the file already has stay; its current version is kept.
        """
        now = utc_now()
        key = _key(stat)
        with self.write() as conn:
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

    def mark_missing(self, paths: Sequence[Path]) -> int:
        """Mark the present or unreadable rows at ``paths`` missing; return how many changed.

        Rows are never deleted, whatever happened to the file: proofs are history (DESIGN rule
        6), and a missing row whose inode turns up at another path is a rename (§3.4). Paths
        without a row, or already missing, are ignored.
        """
        if not paths:
            return 0
        now = utc_now()
        with self.write() as conn:
            cursor = conn.executemany(_SQL_MARK_MISSING, [(now, escape(path)) for path in paths])
            return cursor.rowcount


def _record_one(conn: sqlite3.Connection, item: Settled, now: str) -> Recorded:
    """One item of :meth:`Index.record_settled`, inside its transaction."""
    path, parent = escape(item.path), escape(item.path.parent)
    row = conn.execute(_SQL_FILE_AT_PATH, (path,)).fetchone()
    if row is not None and int(row[3]) != item.watch_id:
        # The path now belongs to another watch (the configuration changed).
        conn.execute(_SQL_MOVE, (item.watch_id, path, parent, row[0]))
    if row is not None and row[2] == item.sha256:
        file_id, version_id = int(row[0]), int(row[1])
        _set_present(conn, file_id, item.stat, racy=item.racy, now=now)
        return Recorded(item.path, "unchanged", file_id, version_id, (), None)

    source = _rename_source(conn, item)
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
            path=item.path,
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


def _rename_source(conn: sqlite3.Connection, item: Settled) -> tuple[int, Path, int, bool] | None:
    """``(file_id, old path, current version id, old path gone)`` of the row this file was
    renamed from, or None.

    Reference §3.4: the row must have the same (dev, ino) — ctime is left out because
    ``rename`` updates it — and the same content, and its path must no longer name this inode.
    """
    rows = conn.execute(
        _SQL_RENAME_SOURCES, (item.stat.dev, item.stat.ino, escape(item.path), item.sha256)
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
    path: Path,
    stat: FileStat,
    racy: bool = False,
    first_seen: str,
    now: str,
) -> int:
    """A new present row without a version yet (the caller adds one in the same transaction
    and then sets ``current_version_id``: the two tables reference each other)."""
    cursor = conn.execute(
        "INSERT INTO files (watch_id, path, dir, dev, ino, size, mtime_ns, ctime_ns, racy,"
        " state, first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'present', ?, ?)",
        (watch_id, escape(path), escape(path.parent), *_key(stat), int(racy), first_seen, now),
    )
    return _rowid(cursor)


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
    version_id = _rowid(cursor)
    job_ids = tuple(
        _rowid(
            conn.execute(
                "INSERT INTO jobs (kind, action, version_id, state, next_try_at,"
                " created_at, updated_at) VALUES (?, 'obtain', ?, 'pending', ?, ?, ?)",
                (kind, version_id, now, now, now),
            )
        )
        for kind in evidence
    )
    return version_id, job_ids


def _rowid(cursor: sqlite3.Cursor) -> int:
    rowid = cursor.lastrowid
    if rowid is None:  # pragma: no cover - sqlite3 always sets it after INSERT
        raise RuntimeError("INSERT returned no rowid")
    return rowid


def subtree_bounds(prefix: Path) -> tuple[str, str, str]:
    """``(exact, low, high)`` so that ``col = exact OR (col >= low AND col < high)`` selects
    ``prefix`` and everything below it with a range scan on an index of ``col``.

    "0" is the character after "/", so ``[dir/, dir0)`` is exactly the subtree: "/srv/dir"
    does not match "/srv/dir2" or "/srv/dir-old".
    """
    exact = escape(prefix)
    base = exact.rstrip("/")
    return exact, base + "/", base + "0"


def rows_in_directory(conn: sqlite3.Connection, directory: Path) -> dict[str, ScanRow]:
    """Every row (any state) whose path is a direct child of ``directory``, keyed by name."""
    rows: dict[str, ScanRow] = {}
    for file_id, path, state, dev, ino, size, mtime_ns, ctime_ns, racy, proofs in conn.execute(
        _SQL_ROWS_IN_DIRECTORY, (escape(directory),)
    ):
        key = (dev, ino, size, mtime_ns, ctime_ns)
        stat = None if None in key else FileStat(dev, ino, size, mtime_ns, ctime_ns)
        name = unescape(path.rpartition("/")[2])
        rows[name] = ScanRow(
            file_id=file_id,
            name=name,
            state=state,
            stat=stat,
            racy=bool(racy),
            sidecars=_sidecar_hashes(proofs) if proofs else {},
        )
    return rows


def _sidecar_hashes(concatenated: str) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for entry in concatenated.split():
        kind, _, sha256 = entry.partition(":")
        found.setdefault(kind, set()).add(sha256)
    return {kind: frozenset(hashes) for kind, hashes in found.items()}


def present_under(conn: sqlite3.Connection, directory: Path) -> list[tuple[int, Path]]:
    """``(file_id, path)`` of the present or unreadable rows at or below ``directory``, in
    path order: what a deleted or moved-away directory takes with it."""
    return [
        (int(file_id), unescape_path(path))
        for file_id, path in conn.execute(_SQL_PRESENT_UNDER, subtree_bounds(directory))
    ]


def live_directories_below(conn: sqlite3.Connection, directory: Path) -> Iterator[Path]:
    """Directories strictly below ``directory`` that hold present or unreadable rows, in path
    order, streamed from the ``files_dir_state`` index (never all rows in memory)."""
    _exact, low, high = subtree_bounds(directory)
    for (path,) in conn.execute(_SQL_LIVE_DIRECTORIES_BELOW, (low, high)):
        yield unescape_path(path)


def index_path(state_dir: Path) -> Path:
    """Where the index of a state directory lives."""
    return state_dir / "index.sqlite"


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection for queries; it can never write, even by mistake.

    Raises :class:`IndexUnavailableError` when there is no index yet (the daemon never ran).
    """
    if not path.exists():
        raise IndexUnavailableError(
            f"no index at {path} yet",
            hint="start the daemon (`stampd run` or `systemctl start stampd`) to create it",
        )
    conn = _connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("SELECT 1 FROM watches LIMIT 1").fetchall()
    except sqlite3.DatabaseError as error:
        conn.close()
        raise IndexUnavailableError(
            f"{path}: not a readable stampd index ({error})",
            hint="check the file's permissions, or that it belongs to stampd",
        ) from error
    conn.row_factory = sqlite3.Row
    return conn
