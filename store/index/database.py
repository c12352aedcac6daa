"""The index's connections: the daemon's one writer (:class:`Index`) and read-only readers.

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
Times are in the format of :mod:`.times`; digests are lowercase hex. The tables are in
:mod:`.schema`, what the writer records in :mod:`.versions` and :mod:`.jobs`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from stampd.store.errors import IndexUnavailableError
from stampd.store.files.filestat import FileStat
from stampd.store.files.pathnames import escape
from stampd.store.index import versions

# The readers live in .connection, free of sqlite-utils; re-exported (`X as X`, PEP 484).
from stampd.store.index.connection import connect as _connect
from stampd.store.index.connection import index_path as index_path  # noqa: PLC0414
from stampd.store.index.connection import open_reader as open_reader  # noqa: PLC0414
from stampd.store.index.schema import MIGRATION_SET, STEP_NAMES, inserted_id, migration_steps
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Recorded, Settled

if TYPE_CHECKING:
    from sqlite_utils import Database


class Index:
    """The writer connection to ``STATE/index.sqlite``. Only the daemon holds one.

    Its write methods are meant for one thread (the daemon's index writer); the scan's read
    helpers (:mod:`.scan_rows`) work on its connection as on a reader.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @cached_property
    def db(self) -> Database:
        """The connection as a sqlite-utils ``Database``: for the schema steps only, so
        sqlite-utils is imported only when one is due (an index that is up to date opens
        with plain sqlite3)."""
        from sqlite_utils import Database  # noqa: PLC0415

        return Database(self.conn)

    @classmethod
    def open(cls, path: Path) -> Index:
        """Open (creating if needed) the index at ``path`` and bring its schema up to date."""
        conn = _connect(str(path))
        index = cls(path, conn)
        try:
            # WAL must be switched on outside a transaction; it then persists in the file
            # (what sqlite-utils' enable_wal does; no transaction is open on a new connection).
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = wal")
            # NORMAL is durable against a process crash in WAL mode; a power loss may drop the
            # last commits, which the startup scan re-finds and sidecar adoption re-links
            # (DESIGN rule 1), so FULL's fsync per commit buys nothing here.
            conn.execute("PRAGMA synchronous = NORMAL")
            index._refuse_newer_schema()
            index._migrate()
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

    def _applied_steps(self) -> list[str]:
        """The schema steps applied to this index, as sqlite-utils' ``Migrations.applied``
        reads them from its ``_sqlite_migrations`` table (none on a new index)."""
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
        ).fetchone()
        if exists is None:
            return []
        rows = self.conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid",
            (MIGRATION_SET,),
        )
        return [str(name) for (name,) in rows]

    def _migrate(self) -> None:
        """Apply the pending schema steps (:mod:`.schema`) in one write transaction."""
        if not set(STEP_NAMES) - set(self._applied_steps()):
            return
        # A step that rebuilds a table (0004) must run with foreign keys off, or dropping the
        # old table deletes its rows under the rows that reference them; the pragma is a
        # no-op inside a transaction, so it is switched around the whole upgrade
        # (sqlite.org/lang_altertable.html §7, steps 1 and 12). The step checks them itself.
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with self.write():
                migration_steps().apply(self.db)
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")

    def _refuse_newer_schema(self) -> None:
        unknown = sorted(set(self._applied_steps()) - set(STEP_NAMES))
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
            return inserted_id(cursor)

    def record_settled(self, batch: Sequence[Settled]) -> list[Recorded]:
        """Record a batch of hashed files in ONE transaction (:func:`.versions.record_settled`):
        one :class:`~.versions.Recorded` per item, or nothing of the batch on any error."""
        now = utc_now()
        with self.write() as conn:
            return versions.record_settled(conn, batch, now=now)

    def record_unreadable(
        self,
        *,
        watch_id: int,
        path: Path,
        stat: FileStat | None,
        error_class: str,
        message: str,
    ) -> None:
        """Mark ``path`` unreadable with its problem: :func:`.versions.record_unreadable`."""
        now = utc_now()
        with self.write() as conn:
            versions.record_unreadable(
                conn,
                watch_id=watch_id,
                path=path,
                stat=stat,
                error_class=error_class,
                message=message,
                now=now,
            )

    def mark_missing(self, paths: Sequence[Path]) -> int:
        """Mark the rows at ``paths`` missing; how many changed (:func:`.versions.mark_missing`)."""
        if not paths:
            return 0
        now = utc_now()
        with self.write() as conn:
            return versions.mark_missing(conn, paths, now=now)
