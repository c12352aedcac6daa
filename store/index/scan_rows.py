"""The index as the reconciliation scan reads it: one directory's rows, subtrees, live dirs.

The scan (daemon/watch/scan.py) compares each directory on disk with its rows here, and after
a walk asks which rows below a root it did not meet. Every helper takes a connection — the
writer's or a read-only one — and runs one statement answered from an index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stampd.store.files.filestat import FileStat
from stampd.store.files.pathnames import escape, unescape, unescape_path


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

# The SQL of the scan helpers, named so that tests/store/test_index.py can check that each
# one is answered from an index (EXPLAIN QUERY PLAN) with a million versions.
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
