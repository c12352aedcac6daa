"""The index's tables, their allowed values, and the migrations that build them (DESIGN §7).

The schema is plain SQL under sqlite-utils' ``Migrations``: each step is applied once, in name
order, inside the writer's open transaction (:meth:`~.database.Index.open`). A migration is
history: it builds the schema as it was on the day it shipped, so its SQL never reads values
that may change later (the evidence kinds, say); a later step changes what must change.

Evidence kinds are not in the schema since ``0004_kinds_from_registry``: the registry
(:mod:`stampd.store.kinds`) is the one list, and :func:`require_kind` checks a kind where a
job or a proof row is inserted.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from stampd.store import kinds
from stampd.store.errors import ErrorClass, StampdError
from stampd.store.files.pathnames import escape

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

FILE_STATES = ("present", "missing", "unreadable")
PROOF_STATUSES = ("pending", "complete", "invalid")
#: The CHECK on ``jobs.action``: the values of :class:`stampd.store.kinds.JobAction`
#: (tests/store/test_index.py keeps the two equal).
JOB_ACTIONS = ("obtain", "upgrade", "renew")
JOB_STATES = ("pending", "running", "done", "cancelled")

#: The evidence kinds 0001 wrote into CHECK constraints: that day's list, kept as it was so
#: that the migration builds the same schema it always built (0004 drops the constraints).
_KINDS_OF_0001 = ("tsr", "ots", "p7s", "ers", "attest")

#: sqlite-utils' name for this set of steps in its ``_sqlite_migrations`` table.
MIGRATION_SET = "stampd"
#: Every step in order, by name: :meth:`~.database.Index.open` compares them with the rows of
#: ``_sqlite_migrations`` in one query, and loads sqlite-utils (about 40 ms of imports, a
#: tenth of the daemon's start) only when a step is to be applied (:func:`migration_steps`).
_STEPS: list[tuple[str, Callable[[Database], None]]] = []


def _step(name: str) -> Callable[[Callable[[Database], None]], Callable[[Database], None]]:
    def register(step: Callable[[Database], None]) -> Callable[[Database], None]:
        _STEPS.append((name, step))
        return step

    return register


def _check(column: str, values: Sequence[str]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"CHECK ({column} IN ({quoted}))"


@_step("0001_initial")
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
            kind TEXT NOT NULL {_check("kind", _KINDS_OF_0001)},
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
            kind TEXT NOT NULL {_check("kind", _KINDS_OF_0001)},
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


@_step("0002_escaped_paths")
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


@_step("0003_proofs_by_sidecar")
def _proofs_by_sidecar(db: Database) -> None:
    # Sidecar repair asks "are these bytes a proof of a file present elsewhere?" for what a
    # rename left at the old name (store/files/repair.py): answered by the proof's bytes' SHA-256.
    db.execute("CREATE INDEX proofs_sidecar ON proofs(sidecar_sha256)")


# The two tables as 0004 rebuilds them: those of 0001 without the CHECK on ``kind``, column
# for column in the same order. ``{name}`` is the new table's name until the swap.
_PROOFS_0004 = f"""CREATE TABLE {{name}} (
    id INTEGER PRIMARY KEY,
    version_id INTEGER NOT NULL REFERENCES versions(id),
    kind TEXT NOT NULL,
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
)"""
_JOBS_0004 = f"""CREATE TABLE {{name}} (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
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
)"""


@_step("0004_kinds_from_registry")
def _kinds_from_registry(db: Database) -> None:
    # 0001's CHECK (kind IN (...)) froze that day's kinds into `proofs` and `jobs`: a kind
    # added since, or one a test registers, could not be stored. The registry is the list now
    # (require_kind). SQLite cannot drop a constraint, so both tables are rebuilt with the
    # "12 steps" of sqlite.org/lang_altertable.html §7; Index.open turns foreign keys off
    # around the migration (step 1: the pragma is a no-op inside a transaction).
    _rebuild_tables(db.conn, {"proofs": _PROOFS_0004, "jobs": _JOBS_0004})


def _rebuild_tables(conn: sqlite3.Connection, definitions: dict[str, str]) -> None:
    """Rebuild each table with its new definition, then check every reference."""
    for table, definition in definitions.items():
        _rebuild(conn, table, definition)
    # Step 10: every reference still lands on a row (attempts → jobs, jobs → proofs, ...).
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise sqlite3.IntegrityError(
            f"foreign keys broken by the rebuild of {' and '.join(definitions)}: {broken[:5]}"
        )


def _rebuild(conn: sqlite3.Connection, table: str, definition: str) -> None:
    """Steps 3-8 of the table rebuild: ``table`` gets ``definition``, its rows and indexes."""
    # Step 3: its indexes (and triggers, should a later step add some) exactly as declared.
    kept = [
        sql
        for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger')"
            " AND sql IS NOT NULL ORDER BY rowid",
            (table,),
        )
    ]
    columns = ", ".join(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
    staged = f"new_{table}"
    # Only names of this module's own tables are interpolated.
    conn.execute(definition.format(name=staged))  # step 4
    conn.execute(f"INSERT INTO {staged} ({columns}) SELECT {columns} FROM {table}")  # noqa: S608
    conn.execute(f"DROP TABLE {table}")  # step 6
    conn.execute(f"ALTER TABLE {staged} RENAME TO {table}")  # step 7
    for sql in kept:  # step 8
        conn.execute(sql)


@_step("0005_proof_commitments")
def _proof_commitments(db: Database) -> None:
    # Issue 12: where each pending proof waits — (provider, commitment) — and when each
    # provider's anchor arrived (store/index/commitments.py). Every statement on it names a
    # proof (show reads a proof's rows; complete_job writes by the whole key), so the key is
    # the table: WITHOUT ROWID, no index besides (sqlite.org/withoutrowid.html), and its
    # prefix proof_id is the index the foreign key wants (sqlite.org/foreignkeys.html §3).
    db.execute(
        """CREATE TABLE proof_commitments (
            proof_id INTEGER NOT NULL REFERENCES proofs(id),
            provider TEXT NOT NULL,
            commitment BLOB NOT NULL,
            recorded_at TEXT NOT NULL,
            anchored_at TEXT,
            PRIMARY KEY (proof_id, provider, commitment)
        ) WITHOUT ROWID"""
    )


@_step("0006_no_versions_sha256")
def _no_versions_sha256(db: Database) -> None:
    # Issue 13: versions_sha256 was read by one statement only, the rename lookup
    # (versions._SQL_RENAME_SOURCES), which finds its candidates by (dev, ino) through
    # files_dev_ino and reaches each one's version by files.current_version_id, the primary
    # key. Its random 64-hex key dirtied a random leaf page per new version: on a first scan
    # it was most of COMMIT's cost (a third of the writer's time per file). Lookups by digest
    # go to proofs (proofs_digest, proofs_sidecar), which keep their indexes.
    db.execute("DROP INDEX versions_sha256")


def _one_of(column: str, values: Sequence[str]) -> str:
    """The CHECK of :func:`_check` written as comparisons: SQLite builds an ephemeral table
    for a CHECK's ``IN`` list of three or more values at every row it checks (EXPLAIN shows
    OpenEphemeral and one IdxInsert per value), ~2 us per constraint per row; ``=`` chains
    cost nothing. Same values, same verdict (NULL passes both, as in every CHECK)."""
    compared = " OR ".join(f"{column} = '{value}'" for value in values)
    return f"CHECK ({compared})"


# files as 0001 made it, and jobs as 0004 made it, column for column in the same order, with
# each CHECK of three or more values written by _one_of. ``{name}`` is the new table's name.
_FILES_0007 = f"""CREATE TABLE {{name}} (
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
    state TEXT NOT NULL DEFAULT 'present' {_one_of("state", FILE_STATES)},
    current_version_id INTEGER REFERENCES versions(id),
    problem_class TEXT,
    problem TEXT,
    first_seen_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)"""
_JOBS_0007 = f"""CREATE TABLE {{name}} (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    action TEXT NOT NULL {_one_of("action", JOB_ACTIONS)},
    version_id INTEGER REFERENCES versions(id),
    proof_id INTEGER REFERENCES proofs(id),
    state TEXT NOT NULL {_one_of("state", JOB_STATES)},
    tries INTEGER NOT NULL DEFAULT 0,
    next_try_at TEXT NOT NULL,
    last_error_class TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)"""


@_step("0007_checks_as_comparisons")
def _checks_as_comparisons(db: Database) -> None:
    # Issue 13: every new file inserts a files row and one jobs row per evidence kind, and
    # their CHECK (... IN (3+ values)) built an ephemeral table per row: ~4 us per files row
    # and ~4 us per jobs row on a first scan. The same constraints as comparisons, by the
    # table rebuild of 0004 (sqlite.org/lang_altertable.html §7; Index.open turns foreign
    # keys off around the migration, and the step checks them itself). proofs keeps its
    # CHECK: one row per proof obtained, not per file seen.
    _rebuild_tables(db.conn, {"files": _FILES_0007, "jobs": _JOBS_0007})


class UnknownKindError(StampdError):
    """A job or proof row for an evidence kind the registry does not know."""

    error_class = ErrorClass.INDEX

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"unknown evidence kind {kind!r}: the index stores only registered kinds"
            f" ({', '.join(kinds.names())})",
            hint="list only these in a watch's `evidence`; a new kind needs its entry in"
            " store/kinds.py",
        )
        self.kind = kind


def require_kind(kind: str) -> str:
    """``kind`` when the registry knows it; :class:`UnknownKindError` otherwise.

    Checked where ``jobs`` and ``proofs`` rows are inserted, in place of the CHECK constraint
    0004 dropped: one dict lookup, so it costs nothing on the recording path.
    """
    try:
        kinds.spec(kind)
    except KeyError:
        raise UnknownKindError(kind) from None
    return kind


def inserted_id(cursor: sqlite3.Cursor) -> int:
    """The id of the row an INSERT made: every table's ``id INTEGER PRIMARY KEY`` is its
    rowid (sqlite.org/lang_createtable.html#rowid)."""
    rowid = cursor.lastrowid
    if rowid is None:  # pragma: no cover - sqlite3 always sets it after INSERT
        raise RuntimeError("INSERT returned no rowid")
    return rowid


#: The names of every step, in the order they are applied.
STEP_NAMES = tuple(name for name, _ in _STEPS)


@functools.cache
def migration_steps() -> Migrations:
    """The steps as sqlite-utils ``Migrations`` (imports sqlite-utils on first use)."""
    from sqlite_utils.migrations import Migrations  # noqa: PLC0415 - only when a step is due

    steps = Migrations(MIGRATION_SET)
    for name, step in _STEPS:
        steps(name=name)(step)
    return steps


def __getattr__(name: str) -> Migrations:
    """``migrations``, the steps as sqlite-utils ``Migrations``, built on first use."""
    if name == "migrations":
        return migration_steps()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
