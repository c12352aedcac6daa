"""Read models over the index for ``stampd ls``, ``show`` and ``providers`` (``status``'s is
:mod:`.summary`).

Paths in the results are text in the escaped form of :mod:`stampd.store.files.pathnames`, as the
index stores them and the CLI prints them; paths given as arguments are names as Python has
them (escaped here). The counts the metrics export are in :mod:`.counts`.

Every query here runs on a read-only connection (:func:`~.database.open_reader`) and
is shaped to use an index, so it stays fast with a million versions (bench/bench_index.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stampd.store.files.pathnames import escape
from stampd.store.index import summary
from stampd.store.index.commitments import CommitmentRow, commitments_of, has_commitments_table
from stampd.store.index.scan_rows import subtree_bounds

# `stampd status`'s summary lives in .summary, which status imports without this module's read
# models of `ls` and `show` (DESIGN §11: every frozen dataclass costs each start ~1.5 ms).
StatusSummary = summary.StatusSummary
WatchSummary = summary.WatchSummary
status_summary = summary.status_summary


@dataclass(frozen=True)
class FileListing:
    """One line of ``stampd ls``: a file, its current version and its evidence."""

    path: str
    #: present, missing, or unreadable (then ``problem_class``/``problem`` say why; a file that
    #: was never readable has no version, so no size or digest).
    state: str
    size: int | None
    sha256: str | None
    versions: int
    proofs: dict[str, str]
    pending_jobs: int
    problem_class: str | None
    problem: str | None


@dataclass(frozen=True)
class AttemptRow:
    provider: str
    started_at: str
    latency_ms: float | None
    error_class: str | None
    http_status: int | None
    message: str | None


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    action: str
    state: str
    tries: int
    next_try_at: str
    last_error_class: str | None
    last_error: str | None
    attempts: tuple[AttemptRow, ...]


@dataclass(frozen=True)
class ProofRow:
    id: int
    kind: str
    provider: str
    status: str
    digest_alg: str
    digest: str
    gen_time: str | None
    serial: str | None
    authority: str | None
    not_after: str | None
    sidecar_sha256: str | None
    parent_id: int | None
    #: Where the proof waits for its anchor, one row per (provider, commitment).
    commitments: tuple[CommitmentRow, ...] = ()


@dataclass(frozen=True)
class VersionDetail:
    id: int
    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str
    sha512: str
    seen_at: str
    hashed_at: str
    current: bool
    proofs: tuple[ProofRow, ...] = field(default=())
    jobs: tuple[JobRow, ...] = field(default=())


@dataclass(frozen=True)
class FileDetail:
    """Everything ``stampd show`` tells about one path."""

    path: str
    watch: str
    state: str
    problem_class: str | None
    problem: str | None
    first_seen_at: str
    versions: tuple[VersionDetail, ...]


#: Rows of ``stampd ls`` read per query: each page is its own short read, so a listing piped
#: into a pager does not hold one snapshot open (and the WAL growing) while it waits.
LIST_PAGE = 5000

# One statement per page whatever the page holds: the versions count, the proofs and the
# open jobs of each row come from correlated subqueries on versions_file, proofs_version and
# jobs_version, run inside SQLite, not from two more queries per row. Keyset pagination on
# the UNIQUE path index (`path > last`) keeps every page as cheap as the first.
_SQL_LIST_PAGE = """
    SELECT f.path, f.state, f.problem_class, f.problem, v.size, v.sha256,
           (SELECT COUNT(*) FROM versions WHERE file_id = f.id) AS versions,
           (SELECT group_concat(kind || ':' || status, ' ') FROM proofs
             WHERE version_id = v.id) AS proofs,
           (SELECT COUNT(*) FROM jobs WHERE version_id = v.id
             AND state IN ('pending', 'running')) AS pending
    FROM files f LEFT JOIN versions v ON v.id = f.current_version_id
    WHERE f.path {lower} ? AND f.path < ? AND (f.path = ? OR f.path >= ?)
    ORDER BY f.path LIMIT ?
"""
# Above every path: the bounds of "everything" (paths are absolute, so they start with "/").
_PATH_MAX = "\U0010ffff"


def list_files(
    conn: sqlite3.Connection, prefix: Path | None = None, *, limit: int | None = None
) -> Iterator[FileListing]:
    """Files at or under ``prefix`` (all files when None), in path order.

    A fixed number of queries per :data:`LIST_PAGE` rows, whatever each file holds.
    """
    if prefix is None:
        exact, low, high = "", "", _PATH_MAX
    else:
        exact, low, high = subtree_bounds(prefix)
    last, lower = exact, ">="
    remaining = limit
    while remaining is None or remaining > 0:
        page = LIST_PAGE if remaining is None else min(LIST_PAGE, remaining)
        sql = _SQL_LIST_PAGE.format(lower=lower)  # only ">=" or ">" is interpolated
        rows = conn.execute(sql, (last, high, exact, low, page)).fetchall()
        for row in rows:
            yield _listing(row)
        if len(rows) < page:
            return
        last, lower = rows[-1]["path"], ">"
        if remaining is not None:
            remaining -= len(rows)


def _listing(row: sqlite3.Row) -> FileListing:
    proofs: dict[str, str] = {}
    for entry in (row["proofs"] or "").split():
        kind, _, status = entry.partition(":")
        # A complete proof outranks a pending or invalid one of the same kind.
        if proofs.get(kind) != "complete":
            proofs[kind] = status
    return FileListing(
        path=row["path"],
        state=row["state"],
        size=row["size"],
        sha256=row["sha256"],
        versions=row["versions"],
        proofs=proofs,
        pending_jobs=int(row["pending"]),
        problem_class=row["problem_class"],
        problem=row["problem"],
    )


def file_detail(conn: sqlite3.Connection, path: Path) -> FileDetail | None:
    """Versions (newest first) with their proofs, jobs and attempts; None if never seen."""
    row = conn.execute(
        "SELECT f.*, w.path AS watch FROM files f JOIN watches w ON w.id = f.watch_id"
        " WHERE f.path = ?",
        (escape(path),),
    ).fetchone()
    if row is None:
        return None
    waits = has_commitments_table(conn)
    versions = tuple(
        VersionDetail(
            id=v["id"],
            size=v["size"],
            mtime_ns=v["mtime_ns"],
            ctime_ns=v["ctime_ns"],
            sha256=v["sha256"],
            sha512=v["sha512"],
            seen_at=v["seen_at"],
            hashed_at=v["hashed_at"],
            current=v["id"] == row["current_version_id"],
            proofs=_proofs_of(conn, v["id"], waits=waits),
            jobs=_jobs_of(conn, v["id"]),
        )
        for v in conn.execute(
            "SELECT * FROM versions WHERE file_id = ? ORDER BY id DESC", (row["id"],)
        ).fetchall()
    )
    return FileDetail(
        path=row["path"],
        watch=row["watch"],
        state=row["state"],
        problem_class=row["problem_class"],
        problem=row["problem"],
        first_seen_at=row["first_seen_at"],
        versions=versions,
    )


def _proofs_of(conn: sqlite3.Connection, version_id: int, *, waits: bool) -> tuple[ProofRow, ...]:
    return tuple(
        ProofRow(
            id=p["id"],
            kind=p["kind"],
            provider=p["provider"],
            status=p["status"],
            digest_alg=p["digest_alg"],
            digest=p["digest"],
            gen_time=p["gen_time"],
            serial=p["serial"],
            authority=p["authority"],
            not_after=p["not_after"],
            sidecar_sha256=p["sidecar_sha256"],
            parent_id=p["parent_id"],
            commitments=commitments_of(conn, p["id"]) if waits else (),
        )
        for p in conn.execute(
            "SELECT * FROM proofs WHERE version_id = ? ORDER BY id", (version_id,)
        ).fetchall()
    )


def _jobs_of(conn: sqlite3.Connection, version_id: int) -> tuple[JobRow, ...]:
    jobs = []
    for j in conn.execute(
        "SELECT * FROM jobs WHERE version_id = ? ORDER BY id", (version_id,)
    ).fetchall():
        attempts = tuple(
            AttemptRow(
                provider=a["provider"],
                started_at=a["started_at"],
                latency_ms=a["latency_ms"],
                error_class=a["error_class"],
                http_status=a["http_status"],
                message=a["message"],
            )
            for a in conn.execute(
                "SELECT * FROM attempts WHERE job_id = ? ORDER BY id", (j["id"],)
            ).fetchall()
        )
        jobs.append(
            JobRow(
                id=j["id"],
                kind=j["kind"],
                action=j["action"],
                state=j["state"],
                tries=j["tries"],
                next_try_at=j["next_try_at"],
                last_error_class=j["last_error_class"],
                last_error=j["last_error"],
                attempts=attempts,
            )
        )
    return tuple(jobs)


@dataclass(frozen=True)
class ProviderStats:
    """What the attempts table says of one provider (``stampd providers``)."""

    name: str
    attempts: int
    #: Failed attempts by ``error_class``.
    failures: dict[str, int]
    last_success_at: str | None
    last_failure_at: str | None
    #: Mean latency of successful attempts, in milliseconds.
    mean_latency_ms: float | None


def provider_stats(conn: sqlite3.Connection) -> dict[str, ProviderStats]:
    """Every provider that was ever tried, by name (one pass over ``attempts_provider``)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, error_class, count, last, latency in conn.execute(
        "SELECT provider, error_class, COUNT(*), MAX(started_at), AVG(latency_ms)"
        " FROM attempts GROUP BY provider, error_class"
    ):
        entry = rows.setdefault(
            name, {"attempts": 0, "failures": {}, "ok": None, "failed": None, "latency": None}
        )
        entry["attempts"] += count
        if error_class is None:
            entry["ok"], entry["latency"] = last, latency
        else:
            entry["failures"][error_class] = count
            entry["failed"] = max(filter(None, (entry["failed"], last)))
    return {
        name: ProviderStats(
            name=name,
            attempts=entry["attempts"],
            failures=entry["failures"],
            last_success_at=entry["ok"],
            last_failure_at=entry["failed"],
            mean_latency_ms=None if entry["latency"] is None else round(entry["latency"], 1),
        )
        for name, entry in rows.items()
    }
