"""What every provider call reports: the attempt, and how it failed (DESIGN §6).

An attempt's ``error_class`` is one of a fixed set of stable strings; it is stored on the
attempt row, logged, and counted in metrics, so dashboards and scripts can rely on it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from stampd.store.errors import ErrorClass
from stampd.store.formats.tsp import VerifiedToken
from stampd.store.index.jobs import Attempt

__all__ = [
    "NO_RETRY",
    "Attempt",
    "ErrorClass",
    "ProviderFailure",
    "Stamped",
    "TimestampProvider",
]

#: Failures that more tries will not fix without an operator: credentials, paid quota.
NO_RETRY: frozenset[str] = frozenset({"auth", "quota"})


class ProviderFailure(Exception):
    """One failed try at one provider."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class: ErrorClass = error_class
        self.message = message
        self.http_status = http_status
        #: Seconds the provider asked us to wait (``Retry-After``), if it did.
        self.retry_after = retry_after


@dataclass(frozen=True, eq=False)
class Stamped:
    """A verified timestamp: the TSA's response bytes, unmodified, and what they prove."""

    response: bytes
    verified: VerifiedToken


class TimestampProvider(Protocol):
    """An RFC 3161 time-stamping authority as the pool sees it."""

    name: str
    #: Seconds to leave between two requests (some public TSAs ask for it).
    min_interval: float

    @property
    def identity(self) -> Hashable:
        """Equal for two provider objects that are the same TSA asked the same way.

        A reload rebuilds every provider; one whose identity is unchanged keeps what the pool
        learnt about it (breaker, rest, counters). Pacing (``min_interval``) is not part of it.
        """
        ...

    async def timestamp(self, digest: bytes, algorithm: str) -> Stamped:
        """A verified token for ``digest``, or :class:`ProviderFailure`."""
        ...
