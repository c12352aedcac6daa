"""The index as the reconciliation scan reads it: one directory's rows, subtrees, live dirs.

The scan (daemon/watch/scan.py) compares each directory on disk with its rows here, and after
a walk asks which rows below a root it did not meet. Every helper takes a connection — the
writer's or a read-only one — and runs one statement answered from an index.

A restart walks every file of an unchanged tree and compares it with its row, so the rows of
a directory come back in the cheapest form that comparison takes (issue 13: a restart at half
the speed of ``find -printf``): one plain tuple per live row, no object per row, and the
proofs only for the directories of an index that has any.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from stampd.store.files.pathnames import escape, unescape, unescape_path

#: One live row as :func:`live_rows` gives it: ``(name, ino, size, mtime_ns, ctime_ns)``,
#: with ``ino`` None when the row must not be trusted (racy, on another device, or its key
#: unknown), so the tuple equals :func:`disk_key` of the file exactly when the file needs no
#: hashing (reference §3.4).
LiveRow = tuple[str, int | None, int | None, int | None, int | None]


class StampedRow(NamedTuple):
    """A present row whose current version has complete proofs with sidecars."""

    file_id: int
    name: str
    #: Evidence kind → SHA-256 of the bytes of each complete proof of the current version:
    #: what the file's sidecars must hold (store/files/repair.py).
    sidecars: Mapping[str, frozenset[str]]


# The SQL of the scan helpers, named so that tests/store/test_index.py can check that each
# one is answered from an index (EXPLAIN QUERY PLAN) with a million versions.
# Live rows only, from files_dir_state (dir, state): a missing row needs nothing from the scan
# that no row would not (a file there is hashed either way). The name is cut out by SQLite,
# and the doubt rides in ino rather than in a column of its own: each column fetched costs
# about 1,000 of the 12,000 instructions a row costs in the sqlite3 module (callgrind).
_SQL_LIVE_ROWS = (
    "SELECT substr(path, ?), CASE WHEN racy OR dev IS NOT ? THEN NULL ELSE ino END,"
    " size, mtime_ns, ctime_ns"
    " FROM files WHERE dir = ? AND state IN ('present', 'unreadable')"
)
# Whether any proof has sidecar bytes at all: an index of inventory watches has none, and its
# scans then never look for proofs (proofs are history, never deleted: once true, always).
_SQL_ANY_SIDECAR_PROOF = "SELECT 1 FROM proofs WHERE sidecar_sha256 IS NOT NULL LIMIT 1"
# One statement per directory, every row's proofs by proofs_version (version_id, kind).
_SQL_STAMPED_ROWS = (
    "SELECT f.id, substr(f.path, ?), p.kind, p.sidecar_sha256 FROM files f"
    " JOIN proofs p ON p.version_id = f.current_version_id"
    " WHERE f.dir = ? AND f.state = 'present' AND p.status = 'complete'"
    " AND p.sidecar_sha256 IS NOT NULL"
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


def disk_key(name: str, result: os.stat_result) -> LiveRow:
    """What :func:`live_rows` holds for ``name`` when its row matches this ``lstat``."""
    return (name, result.st_ino, result.st_size, result.st_mtime_ns, result.st_ctime_ns)


def live_rows(conn: sqlite3.Connection, directory: str | Path, device: int) -> dict[str, LiveRow]:
    """The present and unreadable rows whose path is a direct child of ``directory``, keyed
    by name, each as a :data:`LiveRow` (trusted when it is not racy and its ``dev`` is
    ``device``)."""
    escaped, start = _directory_text(directory)
    rows = {row[0]: row for row in _tuples(conn).execute(_SQL_LIVE_ROWS, (start, device, escaped))}
    if "\\" in "".join(rows):
        # Names that are not plain text are stored escaped (pathnames.py), so a backslash in
        # any key means some key is not the name on disk: rare, so one check per directory.
        rows = {unescape(name): (unescape(name), *row[1:]) for name, row in rows.items()}
    return rows


def has_sidecar_proofs(conn: sqlite3.Connection) -> bool:
    """Whether any proof in the index has sidecar bytes (else no directory has stamped rows)."""
    return conn.execute(_SQL_ANY_SIDECAR_PROOF).fetchone() is not None


def stamped_rows(conn: sqlite3.Connection, directory: str | Path) -> dict[str, StampedRow]:
    """The present rows directly in ``directory`` whose current version has complete proofs
    with sidecars, keyed by name."""
    escaped, start = _directory_text(directory)
    found: dict[str, tuple[int, dict[str, set[str]]]] = {}
    for file_id, name, kind, sha256 in conn.execute(_SQL_STAMPED_ROWS, (start, escaped)):
        hashes = found.setdefault(unescape(name), (file_id, {}))[1]
        hashes.setdefault(kind, set()).add(sha256)
    return {
        name: StampedRow(
            file_id, name, {kind: frozenset(values) for kind, values in hashes.items()}
        )
        for name, (file_id, hashes) in found.items()
    }


def _tuples(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor whose rows are plain tuples, whatever the connection's row factory (a
    reader's ``sqlite3.Row`` is slower to build and never equals a tuple)."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor


def _directory_text(directory: str | Path) -> tuple[str, int]:
    """The ``dir`` column's text for ``directory``, and where a child's name starts in its
    ``path`` (SQLite's substr counts characters from 1; the escaped text is valid UTF-8)."""
    escaped = escape(directory)
    return escaped, len(escaped) + (1 if escaped.endswith("/") else 2)


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
