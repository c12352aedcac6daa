"""Evidence jobs in the index: which are due, and how each one ends (DESIGN §3, rule 1).

A job is created with its version (:func:`~.versions.record_settled`) and stays
``pending`` until its proof is durable. The runner asks :func:`due_jobs` for work, and ends
each round with exactly one write transaction: :func:`complete_job` (proof row, attempts, job
done), :func:`fail_job` (attempts, back-off) or :func:`cancel_job` (attempts, nothing more can
be done); rounds that end together (a batch's) share one, :func:`complete_jobs`. Attempts
are written with the round's outcome, so the index never shows a try without knowing how its
job fared. :func:`make_upgrades_due` is ``stampd upgrade``: pending
``upgrade`` jobs brought forward to now.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stampd.store.errors import ErrorClass
from stampd.store.files.pathnames import unescape_path
from stampd.store.index.commitments import Commitment, record_commitments
from stampd.store.index.database import Index
from stampd.store.index.scan_rows import subtree_bounds
from stampd.store.index.schema import inserted_id, require_kind
from stampd.store.index.times import utc_now
from stampd.store.kinds import JobAction


@dataclass(frozen=True)
class Attempt:
    """One try of one job at one provider, as the ``attempts`` table stores it."""

    provider: str
    started_at: str
    latency_ms: float
    #: How the try failed (DESIGN §6: ``network`` … ``unknown``); None for a success.
    error_class: ErrorClass | None = None
    http_status: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class DueJob:
    """A pending job whose time has come, with what the runner needs to do it."""

    job_id: int
    kind: str
    #: Rounds already run (each ended in a failure, or the job would not be pending).
    tries: int
    version_id: int
    sha256: str
    sha512: str
    file_id: int
    path: Path
    watch_id: int
    #: The file's row state: present, missing or unreadable.
    file_state: str
    #: Whether this version is still the file's current content.
    current: bool
    #: The proof an ``upgrade`` or ``renew`` job extends, and its bytes' SHA-256 (its name in
    #: the archive); None for ``obtain`` jobs.
    proof_id: int | None = None
    proof_sha256: str | None = None


@dataclass(frozen=True)
class NewProof:
    """A verified proof about to be recorded for a version."""

    kind: str
    provider: str
    digest_alg: str
    #: Lowercase hex of the digest the proof covers.
    digest: str
    gen_time: str | None
    serial: str | None
    authority: str | None
    #: The earliest notAfter of the signing chain (index time format).
    not_after: str | None
    #: SHA-256 of the proof's bytes: its name in the archive.
    sidecar_sha256: str
    #: ``complete``, or ``pending`` for a proof that waits for its anchor (an ``.ots``
    #: before its Bitcoin block): an ``upgrade`` job follows it.
    status: str = "complete"
    #: Where the proof waits for its anchor, and which providers delivered it
    #: (store/index/commitments.py); none for kinds that are complete at once.
    commitments: tuple[Commitment, ...] = ()


@dataclass(frozen=True)
class FollowUp:
    """The job a round's proof asks for next: an ``upgrade`` of a pending proof."""

    action: JobAction
    #: When it is first due (index time format).
    next_try_at: str


@dataclass(frozen=True)
class Completion:
    """How one round ends with its proof: what :func:`complete_job` records."""

    job_id: int
    version_id: int
    proof: NewProof
    attempts: Sequence[Attempt]
    follow_up: FollowUp | None = None
    #: The proof row an upgrade or renewal extends; None for a new proof.
    extends: int | None = None


@dataclass(frozen=True)
class KnownProof:
    """A complete proof already in the index for some digest (a candidate for reuse)."""

    proof_id: int
    version_id: int
    provider: str
    sidecar_sha256: str


# Named so that tests/test_jobs.py can check each is answered from an index.
_SQL_DUE = (
    "SELECT j.id, j.kind, j.tries, v.id, v.sha256, v.sha512, f.id, f.path, f.watch_id,"
    " f.state, f.current_version_id = v.id, j.proof_id, p.sidecar_sha256"
    " FROM jobs j JOIN versions v ON v.id = j.version_id JOIN files f ON f.id = v.file_id"
    " LEFT JOIN proofs p ON p.id = j.proof_id"
    " WHERE j.state = 'pending' AND j.next_try_at <= ? AND j.kind = ? AND j.action = ?"
    " ORDER BY j.next_try_at, j.id LIMIT ?"
)
_SQL_KNOWN_PROOFS = (
    "SELECT id, version_id, provider, sidecar_sha256 FROM proofs"
    " WHERE digest = ? AND kind = ? AND status = 'complete' AND digest_alg = ?"
    " AND sidecar_sha256 IS NOT NULL ORDER BY id DESC LIMIT ?"
)
_SQL_CURRENT_PATH = (
    "SELECT path FROM files WHERE current_version_id = ? AND state = 'present' AND id = ?"
)
_SQL_INSERT_PROOF = (
    "INSERT INTO proofs (version_id, kind, provider, digest_alg, digest, gen_time,"
    " serial, authority, not_after, sidecar_sha256, status, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# An upgrade extends the proof it names (DESIGN rule 6: the bytes it replaces stay in the
# archive); the row follows the proof, so counts of pending anchors fall as they complete.
_SQL_EXTEND_PROOF = (
    "UPDATE proofs SET kind = ?, provider = ?, digest_alg = ?, digest = ?, gen_time = ?,"
    " serial = ?, authority = ?, not_after = ?, sidecar_sha256 = ?, status = ?, updated_at = ?"
    " WHERE id = ?"
)
_SQL_INSERT_FOLLOW_UP = (
    "INSERT INTO jobs (kind, action, version_id, proof_id, state, next_try_at, created_at,"
    " updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)"
)
_SQL_INSERT_ATTEMPT = (
    "INSERT INTO attempts (job_id, provider, started_at, latency_ms, error_class, http_status,"
    " message) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_JOB_DONE = (
    "UPDATE jobs SET state = 'done', proof_id = ?, tries = tries + 1, last_error_class = NULL,"
    " last_error = NULL, updated_at = ? WHERE id = ? AND state = 'pending'"
)
_SQL_JOB_FAILED = (
    "UPDATE jobs SET tries = tries + 1, next_try_at = ?, last_error_class = ?, last_error = ?,"
    " updated_at = ? WHERE id = ? AND state = 'pending'"
)
_SQL_JOB_CANCELLED = (
    "UPDATE jobs SET state = 'cancelled', tries = tries + 1, last_error_class = ?,"
    " last_error = ?, updated_at = ? WHERE id = ? AND state = 'pending'"
)


@dataclass(frozen=True)
class UpgradesDue:
    """What :func:`make_upgrades_due` found: jobs brought forward, and jobs due already."""

    #: Pending ``upgrade`` jobs whose next try was later and is now.
    made_due: int
    #: Pending ``upgrade`` jobs that were due anyway (waiting for a free round, or paused).
    already_due: int


# Pending upgrade jobs, all of them (through jobs_state_due) or those of the files at or
# under a path (the UNIQUE path index gives the files, jobs_version their jobs).
_SQL_PENDING_UPGRADES = (
    "SELECT j.id, j.next_try_at <= ? FROM jobs j WHERE j.state = 'pending' AND j.action = ?"
)
_SQL_PENDING_UPGRADES_UNDER = (
    "SELECT j.id, j.next_try_at <= ? FROM files f JOIN versions v ON v.file_id = f.id"
    " JOIN jobs j ON j.version_id = v.id"
    " WHERE (f.path = ? OR (f.path >= ? AND f.path < ?)) AND j.state = 'pending'"
    " AND j.action = ?"
)
_SQL_MAKE_DUE = (
    "UPDATE jobs SET next_try_at = ?, updated_at = ? WHERE id = ? AND state = 'pending'"
    " AND next_try_at > ?"
)


def make_upgrades_due(
    index: Index, *, now: str, paths: Sequence[Path] | None = None
) -> UpgradesDue:
    """Bring every pending ``upgrade`` job (or those of the files at or under ``paths``)
    forward to ``now``: ``stampd upgrade`` asks for a try at once, after a calendar
    operator said the block is mined, say. Nothing else about the job changes (its tries,
    and so its back-off after this try, stay), and a job due already is left alone.
    """
    with index.write() as conn:
        found: dict[int, bool] = {}
        if paths is None:
            for job_id, due in conn.execute(_SQL_PENDING_UPGRADES, (now, JobAction.UPGRADE)):
                found[int(job_id)] = bool(due)
        else:
            for path in paths:
                exact, low, high = subtree_bounds(path)
                for job_id, due in conn.execute(
                    _SQL_PENDING_UPGRADES_UNDER, (now, exact, low, high, JobAction.UPGRADE)
                ):
                    found[int(job_id)] = bool(due)
        later = [job_id for job_id, due in found.items() if not due]
        conn.executemany(_SQL_MAKE_DUE, [(now, now, job_id, now) for job_id in later])
        return UpgradesDue(made_due=len(later), already_due=len(found) - len(later))


def due_jobs(
    conn: sqlite3.Connection,
    kind: str,
    *,
    now: str,
    limit: int,
    action: JobAction = JobAction.OBTAIN,
) -> list[DueJob]:
    """Up to ``limit`` pending ``action`` jobs of ``kind`` due at ``now``, oldest due first."""
    return [
        DueJob(
            job_id=int(row[0]),
            kind=str(row[1]),
            tries=int(row[2]),
            version_id=int(row[3]),
            sha256=str(row[4]),
            sha512=str(row[5]),
            file_id=int(row[6]),
            path=unescape_path(row[7]),
            watch_id=int(row[8]),
            file_state=str(row[9]),
            current=bool(row[10]),
            proof_id=None if row[11] is None else int(row[11]),
            proof_sha256=None if row[12] is None else str(row[12]),
        )
        for row in conn.execute(_SQL_DUE, (now, kind, action, limit))
    ]


def known_proofs(
    conn: sqlite3.Connection, *, kind: str, digest_alg: str, digest: str, limit: int = 4
) -> list[KnownProof]:
    """Complete proofs of ``kind`` over this digest, newest first: a token obtained for the
    same content (a copy, a revert, a file renamed over another) need not be asked for again."""
    return [
        KnownProof(int(row[0]), int(row[1]), str(row[2]), str(row[3]))
        for row in conn.execute(_SQL_KNOWN_PROOFS, (digest, kind, digest_alg, limit))
    ]


def current_path(conn: sqlite3.Connection, *, file_id: int, version_id: int) -> Path | None:
    """Where the file is now, if it is present and ``version_id`` is still its content.

    A job's path is the one the file had when the job was picked; a rename since moves the
    row, and the sidecar belongs at the new name.
    """
    row = conn.execute(_SQL_CURRENT_PATH, (version_id, file_id)).fetchone()
    return unescape_path(row[0]) if row else None


def record_proof(index: Index, *, version_id: int, proof: NewProof) -> int:
    """Record a verified proof that no job asked for: a sidecar found next to the file (a
    user moved it along with the file) that proves the file's content."""
    now = utc_now()
    with index.write() as conn:
        cursor = conn.execute(_SQL_INSERT_PROOF, (version_id, *_proof_values(proof), now, now))
        proof_id = inserted_id(cursor)
        record_commitments(conn, proof_id, proof.commitments, now=now)
        return proof_id


def complete_job(
    index: Index | _Joined,
    *,
    job_id: int,
    version_id: int,
    proof: NewProof,
    attempts: Sequence[Attempt],
    follow_up: FollowUp | None = None,
    extends: int | None = None,
) -> int | None:
    """Record the proof (with its commitments), the round's attempts, the job's end and the
    job that follows (if any) in one transaction. With ``extends``, the proof is an upgrade of
    that proof row, which it updates; otherwise a new row is inserted.

    Returns the proof's id, or None when the job was no longer pending (then nothing is
    written: a second runner, or an operator, ended it first).
    """
    now = utc_now()
    with index.write() as conn:
        state = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if state is None or state[0] != "pending":
            return None
        if extends is None:
            cursor = conn.execute(_SQL_INSERT_PROOF, (version_id, *_proof_values(proof), now, now))
            proof_id = inserted_id(cursor)
        else:
            conn.execute(_SQL_EXTEND_PROOF, (*_proof_values(proof), now, extends))
            proof_id = extends
        # New pairs are added, pairs now anchored get their time; none is ever removed.
        record_commitments(conn, proof_id, proof.commitments, now=now)
        _insert_attempts(conn, job_id, attempts)
        conn.execute(_SQL_JOB_DONE, (proof_id, now, job_id))
        if follow_up is not None:
            conn.execute(
                _SQL_INSERT_FOLLOW_UP,
                (
                    proof.kind,
                    follow_up.action,
                    version_id,
                    proof_id,
                    follow_up.next_try_at,
                    now,
                    now,
                ),
            )
        return proof_id


class _Joined:
    """An open write transaction, shown to :func:`complete_job` as an index: each call writes
    into it instead of beginning (and committing) its own."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """The transaction already begun; an error propagates to its owner, who rolls back."""
        yield self._conn


def complete_jobs(index: Index, completions: Sequence[Completion]) -> list[int | None]:
    """:func:`complete_job` for each of ``completions``, in ONE write transaction; the proof
    ids (None for a job that was no longer pending), in order.

    The rounds of a batch (512 ``ots`` files under one calendar request) end at the same
    moment; a transaction each was one commit per file. All or nothing: an error rolls every
    one of them back, so the caller can record them one by one to find the bad one. Each
    job is still checked to be pending inside the transaction, so a job listed twice, or
    ended meanwhile by someone else, is recorded at most once.
    """
    with index.write() as conn:
        joined = _Joined(conn)
        return [
            complete_job(
                joined,
                job_id=completion.job_id,
                version_id=completion.version_id,
                proof=completion.proof,
                attempts=completion.attempts,
                follow_up=completion.follow_up,
                extends=completion.extends,
            )
            for completion in completions
        ]


def fail_job(
    index: Index,
    *,
    job_id: int,
    attempts: Sequence[Attempt],
    error_class: str,
    message: str,
    next_try_at: str,
) -> None:
    """Record a failed round: its attempts, the reason, and when to try again."""
    now = utc_now()
    with index.write() as conn:
        _insert_attempts(conn, job_id, attempts)
        conn.execute(_SQL_JOB_FAILED, (next_try_at, error_class, message, now, job_id))


def cancel_job(
    index: Index, *, job_id: int, attempts: Sequence[Attempt], error_class: str, message: str
) -> None:
    """End a job that can never succeed (its content is gone), keeping why."""
    now = utc_now()
    with index.write() as conn:
        _insert_attempts(conn, job_id, attempts)
        conn.execute(_SQL_JOB_CANCELLED, (error_class, message, now, job_id))


def _proof_values(proof: NewProof) -> tuple[str | None, ...]:
    return (
        # The registry, not a CHECK, says which kinds exist (schema 0004).
        require_kind(proof.kind),
        proof.provider,
        proof.digest_alg,
        proof.digest,
        proof.gen_time,
        proof.serial,
        proof.authority,
        proof.not_after,
        proof.sidecar_sha256,
        proof.status,
    )


def _insert_attempts(conn: sqlite3.Connection, job_id: int, attempts: Sequence[Attempt]) -> None:
    conn.executemany(
        _SQL_INSERT_ATTEMPT,
        [
            (
                job_id,
                a.provider,
                a.started_at,
                a.latency_ms,
                a.error_class,
                a.http_status,
                a.message,
            )
            for a in attempts
        ],
    )
