"""Where each pending proof waits, in the index: its (provider, commitment) pairs (issue 12).

A proof that is completed later is held by its providers under a commitment each (an
``.ots`` proof by every calendar that answered, under the message at that calendar's Pending
leaf: reference/opentimestamps.md §2). Those pairs were only inside the archived bytes; the
``proof_commitments`` table (schema step 0005) records each one with when it was recorded
and when its provider's anchor arrived, so an operator can ask a calendar about a proof by
hand, and see which calendars delivered.

Written by :func:`~.jobs.complete_job` and :func:`~.jobs.record_proof` in their own
transaction; read by ``stampd show`` (:func:`~.queries.file_detail`). Rows are history like
proofs (DESIGN rule 6): a pair is never deleted, and once anchored stays anchored. Every
statement here is answered by the table's primary key (tests/store/test_commitments.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from stampd.store.verify import Commitment

__all__ = [
    "Commitment",
    "CommitmentRow",
    "commitments_of",
    "has_commitments_table",
    "record_commitments",
]

TABLE = "proof_commitments"

# A pair seen again (every upgrade round reports all of a proof's pairs) keeps its first
# recorded_at: INSERT OR IGNORE on the primary key (sqlite.org/lang_conflict.html).
_SQL_INSERT = (
    "INSERT OR IGNORE INTO proof_commitments (proof_id, provider, commitment, recorded_at,"
    " anchored_at) VALUES (?, ?, ?, ?, ?)"
)
# Only a pair not anchored yet gets the time: the first delivery is the one that counts.
_SQL_ANCHORED = (
    "UPDATE proof_commitments SET anchored_at = ? WHERE proof_id = ? AND provider = ?"
    " AND commitment = ? AND anchored_at IS NULL"
)
_SQL_OF_PROOF = (
    "SELECT provider, commitment, recorded_at, anchored_at FROM proof_commitments"
    " WHERE proof_id = ? ORDER BY provider, commitment"
)
_SQL_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"


@dataclass(frozen=True)
class CommitmentRow:
    """One recorded pair, as ``stampd show`` lists it."""

    provider: str
    #: Lowercase hex of the commitment.
    commitment: str
    recorded_at: str
    #: When the provider's anchor was merged into the proof; None while it is pending.
    anchored_at: str | None


def record_commitments(
    conn: sqlite3.Connection, proof_id: int, commitments: Iterable[Commitment], *, now: str
) -> None:
    """Record the pairs of proof ``proof_id`` inside the caller's write transaction: new pairs
    are inserted, and pairs now anchored get ``anchored_at = now`` (once)."""
    pairs = list(dict.fromkeys(commitments))
    if not pairs:
        return
    conn.executemany(
        _SQL_INSERT,
        [(proof_id, c.provider, c.commitment, now, now if c.anchored else None) for c in pairs],
    )
    conn.executemany(
        _SQL_ANCHORED, [(now, proof_id, c.provider, c.commitment) for c in pairs if c.anchored]
    )


def has_commitments_table(conn: sqlite3.Connection) -> bool:
    """Whether the index has the table yet: a read-only reader (the CLI after an upgrade of
    stampd, before the daemon restarted and migrated) may open an index at step 0004."""
    return conn.execute(_SQL_TABLE_EXISTS, (TABLE,)).fetchone() is not None


def commitments_of(conn: sqlite3.Connection, proof_id: int) -> tuple[CommitmentRow, ...]:
    """The recorded pairs of one proof, by provider."""
    return tuple(
        CommitmentRow(
            provider=str(row[0]),
            commitment=bytes(row[1]).hex(),
            recorded_at=str(row[2]),
            anchored_at=None if row[3] is None else str(row[3]),
        )
        for row in conn.execute(_SQL_OF_PROOF, (proof_id,))
    )
