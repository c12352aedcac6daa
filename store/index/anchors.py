"""Proofs waiting for their anchor (an ``.ots`` before its Bitcoin block), for ``status``.

reference/opentimestamps.md §4: calendars confirm within hours, often a day, longer when one
runs out of funds; "never give up automatically; surface the age of pending proofs". The
counts per kind and the age of the oldest are what ``stampd status`` shows (the metrics read
the same rows, :mod:`.counts`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from stampd.store import kinds
from stampd.store.index.times import parse_time
from stampd.store.kinds import JobAction


@dataclass(frozen=True)
class PendingAnchors:
    """Proofs of one kind waiting for their anchor (an ``.ots`` before its Bitcoin block)."""

    count: int
    #: When the oldest of them was obtained (index time format); None when none waits.
    oldest_at: str | None
    #: How long the oldest has waited at the summary's ``now``, in whole seconds.
    oldest_age_s: int | None


# proofs_kind_status gives the pending rows of one kind; there are few (an upgrade completes
# them within a day or so), so MIN(created_at) over them costs nothing.
_SQL_PENDING_ANCHORS = (
    "SELECT COUNT(*), MIN(created_at) FROM proofs WHERE kind = ? AND status = 'pending'"
)


def pending_anchors(conn: sqlite3.Connection, *, now: str) -> dict[str, PendingAnchors]:
    """Proofs still waiting for their anchor, by kind (every kind with ``upgrade`` jobs, a
    zero count included), with the oldest one's time and age at ``now``.

    A pending proof's row is extended in place when it is upgraded (``complete_job``), so its
    ``created_at`` is when it was stamped: how long it has waited (reference
    opentimestamps.md §4: "surface the age of pending proofs").
    """
    now_at = parse_time(now)
    found: dict[str, PendingAnchors] = {}
    for kind in kinds.known():
        if JobAction.UPGRADE not in kind.actions:
            continue
        name = str(kind.name)
        count, first = conn.execute(_SQL_PENDING_ANCHORS, (name,)).fetchone()
        first_at = None if first is None else parse_time(str(first))
        age = None
        if first_at is not None and now_at is not None:
            age = max(0, int((now_at - first_at).total_seconds()))
        found[name] = PendingAnchors(int(count), None if first is None else str(first), age)
    return found
