"""The provider roles: one ``Protocol`` per kind of party that produces evidence (DESIGN §1, §6).

Every provider, whatever its role, is a :class:`Provider` to the pool (daemon/evidence/pool.py):
a name, a pacing interval and an identity that says whether a reload changed it. Each role adds
the calls its evidence kind needs:

- :class:`TimestampProvider` — an RFC 3161 TSA (``tsr``; daemon/evidence/tsa.py);
- :class:`Calendar` — an OpenTimestamps calendar (``ots``, reference/opentimestamps.md §2);
- :class:`Signer` — a local key or a CSC signing service (``p7s``, reference/cades-csc.md);
- :class:`AttestationService` — a REST attestation service (``attest``,
  reference/attestation-services.md).

A failed call raises :class:`ProviderFailure`, whose ``error_class`` is one of the attempt
classes of :class:`~stampd.store.errors.ErrorClass`: stored on the attempt row, logged, and
counted in metrics, so dashboards and scripts can rely on it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from stampd.store.errors import ErrorClass, StampdError
from stampd.store.verify import Verdict

if TYPE_CHECKING:
    from stampd.store.formats.ots import Timestamp


class ProviderFailure(StampdError):
    """One failed try at one provider; its ``error_class`` says how it failed."""

    error_class: ErrorClass

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.http_status = http_status
        #: Seconds the provider asked us to wait (``Retry-After``), if it did.
        self.retry_after = retry_after


class Provider(Protocol):
    """What the pool needs of every provider, whatever its role."""

    name: str
    #: Seconds to leave between two requests (some public TSAs ask for it).
    min_interval: float

    @property
    def identity(self) -> Hashable:
        """Equal for two provider objects that are the same party asked the same way.

        A reload rebuilds every provider; one whose identity is unchanged keeps what the pool
        learnt about it (breaker, rest, counters). Pacing (``min_interval``) is not part of it.
        """
        ...


@dataclass(frozen=True, eq=False)
class Stamped:
    """A verified timestamp: the TSA's response bytes, unmodified, and the verdict on them."""

    response: bytes
    verdict: Verdict


class TimestampProvider(Provider, Protocol):
    """An RFC 3161 time-stamping authority."""

    async def timestamp(self, digest: bytes, algorithm: str) -> Stamped:
        """A verified token for ``digest``, or :class:`ProviderFailure`."""
        ...


class Calendar(Provider, Protocol):
    """An OpenTimestamps calendar: takes a digest, later hands out its Bitcoin attestation."""

    async def submit(self, digest: bytes) -> Timestamp:
        """The calendar's reply for ``digest``, decoded: a (pending) tree rooted at ``digest``.

        Upgrades are not asked of the configured calendars but of the URIs the proofs' pending
        leaves name, through the allow-list (daemon/evidence/calendar.py, ``UpgradeFetcher``).
        """
        ...


class Signer(Provider, Protocol):
    """A signing key (local, or behind a CSC service) that seals digests."""

    async def certificates(self) -> tuple[bytes, ...]:
        """The signing certificate first, then its chain, DER-encoded."""
        ...

    async def sign(self, digest: bytes, algorithm: str) -> bytes:
        """The signature value over ``digest`` (the hash of the signed attributes)."""
        ...


class AttestationService(Provider, Protocol):
    """A REST attestation service that records a digest and returns its receipt."""

    async def attest(self, digest: bytes, algorithm: str) -> bytes:
        """The service's receipt for ``digest``, its bytes as received."""
        ...
