"""Offline verification of the evidence for one file: what ``stampd verify`` reports.

One :class:`Verdict` per piece of evidence, with a status a person and a script can act on:

- ``valid``: every check passed, the TSA chain validated at genTime. ``renewal_overdue`` says
  the chain has expired since (reference/rfc3161.md §5): the token still proves what it
  proved, but from now on only a renewed evidence record (RFC 4998) keeps it standing.
- ``invalid``: a check failed; ``reason`` is the stable code, ``message`` the explanation.
- ``unverifiable``: nothing is wrong that we can see, but the proof cannot be checked (a
  token without the TSA's certificate). Never reported as valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography import x509

from stampd.store.errors import StampdError
from stampd.store.formats.tsp import (
    TimestampRejected,
    TokenInvalid,
    TspParseError,
    VerifiedToken,
    load_timestamp,
    verify_token,
)

Status = Literal["valid", "invalid", "unverifiable"]


@dataclass(frozen=True)
class Verdict:
    """The outcome for one piece of evidence."""

    kind: str
    #: Where the evidence came from (a sidecar path, or the file given with ``--tsr``).
    source: str
    status: Status
    reason: str | None = None
    message: str | None = None
    gen_time: datetime | None = None
    authority: str | None = None
    algorithm: str | None = None
    serial: int | None = None
    policy: str | None = None
    #: The earliest notAfter of the validated TSA chain.
    chain_not_after: datetime | None = None
    renewal_overdue: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (times as ISO 8601 UTC, the serial as text: up to 160 bits)."""
        return {
            "kind": self.kind,
            "source": self.source,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "gen_time": _iso(self.gen_time),
            "authority": self.authority,
            "algorithm": self.algorithm,
            "serial": None if self.serial is None else str(self.serial),
            "policy": self.policy,
            "chain_not_after": _iso(self.chain_not_after),
            "renewal_overdue": self.renewal_overdue,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The data's digest under a named algorithm (computed on first use by the caller).
DigestOf = Callable[[str], bytes]


def digest_of_bytes(data: bytes) -> DigestOf:
    """A :data:`DigestOf` for data in memory."""
    return lambda algorithm: hashlib.new(algorithm, data).digest()


def verify_tsr(
    data: bytes,
    *,
    source: str,
    digest_of: DigestOf,
    trust: Sequence[Sequence[x509.Certificate]],
    extra_certificates: Sequence[x509.Certificate] = (),
    now: datetime | None = None,
    roots: str | None = None,
    root_remedy: str | None = None,
) -> Verdict:
    """Verify RFC 3161 evidence (a TimeStampResp or a bare token) for the data.

    ``trust`` holds one anchor set per configured TSA; the token is valid when it chains to
    one of them (the roots configured for a TSA, never a root the token brings along).
    When the TSA's root is not among them, the message names ``roots`` (where they came
    from) and says ``root_remedy`` (what to do); both are the caller's to phrase.
    """
    try:
        token = load_timestamp(data)
    except (TspParseError, TimestampRejected) as error:
        return Verdict("tsr", source, "invalid", error.error_class, error.message)
    facts = token.facts
    known = Verdict(
        "tsr",
        source,
        "invalid",
        gen_time=facts.gen_time,
        algorithm=facts.algorithm,
        serial=facts.serial,
        policy=facts.policy,
    )
    try:
        digest = digest_of(facts.algorithm)
    except ValueError:
        digest = None  # an algorithm hashlib lacks: verify_token names it
    verified: VerifiedToken | None = None
    failure: TokenInvalid | None = None
    for anchors in trust or [()]:
        try:
            verified = verify_token(
                token, digest=digest, anchors=anchors, extra_certificates=extra_certificates
            )
            break
        except TokenInvalid as error:
            # A chain failure may pass with the next TSA's roots; anything else will not.
            failure = error
            if error.reason not in ("chain", "eku"):
                break
    if verified is None:
        assert failure is not None
        status: Status = "unverifiable" if failure.reason == "signer_unavailable" else "invalid"
        message = failure.message
        if failure.chain is not None:
            message = failure.chain.describe(roots=roots, remedy=root_remedy)
        return replace(known, status=status, reason=failure.reason, message=message)
    moment = now or datetime.now(UTC)
    return replace(
        known,
        status="valid",
        authority=verified.authority,
        chain_not_after=verified.chain_not_after,
        renewal_overdue=verified.chain_not_after <= moment,
    )


def unreadable(kind: str, source: str, error: StampdError) -> Verdict:
    """The verdict for evidence that could not even be read."""
    return Verdict(kind, source, "invalid", error.error_class, error.message)
