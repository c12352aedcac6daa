"""The SQLite index: every watch, file, version, proof, job and attempt (DESIGN §7).

One writer connection (the daemon) and any number of read-only connections (the CLI's
queries). The database runs in WAL mode so readers never block the writer. Every write
transaction starts with ``BEGIN IMMEDIATE``: a deferred ``BEGIN`` that reads first and then
wants to write fails at once with ``SQLITE_BUSY`` when another connection committed in
between, without consulting the busy handler (sqlite.org/lang_transaction.html; measured in
reference/watching-and-service.md §5.2). ``IMMEDIATE`` takes the write lock up front and
waits for it under ``busy_timeout`` instead.

Times are stored as ISO 8601 UTC text with microseconds (``2026-11-22T19:48:00.123456Z``):
readable in ``sqlite3``, and they sort correctly as strings. Digests are lowercase hex.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from stampd.store.errors import IndexUnavailableError

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
        f"""CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            watch_id INTEGER NOT NULL REFERENCES watches(id),
            path TEXT NOT NULL UNIQUE,
            dev INTEGER,
            ino INTEGER,
            state TEXT NOT NULL DEFAULT 'present' {_check("state", FILE_STATES)},
            current_version_id INTEGER REFERENCES versions(id),
            problem_class TEXT,
            problem TEXT,
            first_seen_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX files_watch_state ON files(watch_id, state)",
        "CREATE INDEX files_state ON files(state)",
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


def utc_now() -> str:
    """The current time in the index's text format."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """A timezone-aware datetime in the index's text format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class VersionFacts:
    """What identifies one content state of one file (DESIGN §1 "version")."""

    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int
    sha256: str
    sha512: str


@dataclass(frozen=True)
class RecordedVersion:
    """Row ids created by :meth:`Index.record_version`."""

    file_id: int
    version_id: int
    job_ids: tuple[int, ...]


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
    """The writer connection to ``STATE/index.sqlite``. Only the daemon holds one."""

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
            row = conn.execute("SELECT id FROM watches WHERE path = ?", (str(path),)).fetchone()
            if row is not None:
                return int(row[0])
            cursor = conn.execute(
                "INSERT INTO watches (path, added_at) VALUES (?, ?)", (str(path), utc_now())
            )
            return _rowid(cursor)

    def record_version(
        self,
        *,
        watch_id: int,
        path: Path,
        facts: VersionFacts,
        evidence: Sequence[str],
        seen_at: str | None = None,
    ) -> RecordedVersion:
        """Record a settled version and one pending job per evidence kind, in one transaction.

        DESIGN rule 1: the version and its jobs are durable before any network call, so a
        crash after this returns loses nothing; a crash before it leaves no half record.
        """
        now = utc_now()
        with self.write() as conn:
            row = conn.execute("SELECT id FROM files WHERE path = ?", (str(path),)).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO files (watch_id, path, dev, ino, state, first_seen_at, updated_at)"
                    " VALUES (?, ?, ?, ?, 'present', ?, ?)",
                    (watch_id, str(path), facts.dev, facts.ino, now, now),
                )
                file_id = _rowid(cursor)
            else:
                file_id = int(row[0])
            cursor = conn.execute(
                "INSERT INTO versions (file_id, size, mtime_ns, ctime_ns, dev, ino, sha256,"
                " sha512, seen_at, hashed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    file_id,
                    facts.size,
                    facts.mtime_ns,
                    facts.ctime_ns,
                    facts.dev,
                    facts.ino,
                    facts.sha256,
                    facts.sha512,
                    seen_at or now,
                    now,
                ),
            )
            version_id = _rowid(cursor)
            conn.execute(
                "UPDATE files SET current_version_id = ?, dev = ?, ino = ?, state = 'present',"
                " problem_class = NULL, problem = NULL, updated_at = ? WHERE id = ?",
                (version_id, facts.dev, facts.ino, now, file_id),
            )
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
        return RecordedVersion(file_id=file_id, version_id=version_id, job_ids=job_ids)


def _rowid(cursor: sqlite3.Cursor) -> int:
    rowid = cursor.lastrowid
    if rowid is None:  # pragma: no cover - sqlite3 always sets it after INSERT
        raise RuntimeError("INSERT returned no rowid")
    return rowid


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
