"""How the index writes times: ISO 8601 UTC text with microseconds (``…T19:48:00.123456Z``).

Readable in ``sqlite3``, and the texts sort as the times do, so SQL can compare and order them
as strings (``next_try_at <= ?``, ``MAX(not_after)``).
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """The current time in the index's text format."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """A timezone-aware datetime in the index's text format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime | None:
    """A time in the index's format (:func:`format_time`) as an aware datetime; None for
    anything else, so one odd row cannot break a whole export."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
