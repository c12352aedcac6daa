"""Opening the index: where it lives, the settings every connection gets, read-only readers.

Standard library only (``sqlite3``): the CLI's queries (``stampd status``, ``ls``, ``show``)
open a reader through this module and never load sqlite-utils, which only the daemon's writer
needs, for the schema migrations (:mod:`.database`, :mod:`.schema`). Importing sqlite-utils
costs a CLI call tens of milliseconds of its start-up budget (DESIGN §11: ≤ 100 ms over
``python -c pass``). :mod:`.database` re-exports :func:`index_path` and :func:`open_reader`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stampd.store.errors import IndexUnavailableError

#: Seconds a connection waits for another connection's write lock before giving up.
BUSY_TIMEOUT_S = 10.0


def connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    """A connection to ``target`` with the busy timeout and foreign keys every one needs."""
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
    conn = connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
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
