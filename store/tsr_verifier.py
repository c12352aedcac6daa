"""The ``tsr`` kind's verifier: an RFC 3161 token against the configured TSAs' roots.

One :class:`TsrVerifier` serves every place a token is checked: the TSA client on each reply
(daemon/evidence/tsa.py), the job runner when it adopts a sidecar left by a crash or reuses an
archived token, sidecar repair, and ``stampd verify``. It holds one :class:`AnchorSet` per
configured TSA (or per ``--trust`` file); a token is valid when it chains to one of them —
roots the token brings along are never trusted (reference/rfc3161.md §2) — and the verdict
names the TSA whose roots it chained to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from stampd.store.errors import StampdError
from stampd.store.formats.tsp import (
    TimestampRejected,
    TimestampToken,
    TokenInvalid,
    TspParseError,
    VerifiedToken,
    load_timestamp,
    verify_token,
)
from stampd.store.kinds import EvidenceKind
from stampd.store.verify import DigestOf, Status, Verdict

#: Token failures another TSA's roots may cure; anything else is the token's own fault.
_CHAIN_REASONS = ("chain", "eku")


@dataclass(frozen=True)
class AnchorSet:
    """The roots one TSA's tokens must chain to."""

    #: The configured TSA's name; None for roots that are no provider's (``--trust``).
    provider: str | None
    roots: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class TsrDetail:
    """What a ``tsr`` verdict adds: the token's serial number and policy."""

    serial_number: int | None = None
    policy: str | None = None

    @property
    def serial(self) -> str | None:
        """The serial as decimal text (up to 160 bits: too large for JSON numbers)."""
        return None if self.serial_number is None else str(self.serial_number)

    @property
    def chain_holder(self) -> str:
        """``chain_not_after`` is the TSA chain's."""
        return "TSA"

    def note(self) -> str:
        """`` (serial 1f)``: the serial in hex, as ``openssl ts -reply -text`` prints it."""
        return "" if self.serial_number is None else f" (serial {self.serial_number:x})"

    def to_dict(self) -> dict[str, Any]:
        """``serial`` and ``policy``, present on every ``tsr`` verdict."""
        return {"serial": self.serial, "policy": self.policy}


class TsrVerifier:
    """Checks RFC 3161 evidence (a TimeStampResp or a bare token) against anchor sets."""

    def __init__(
        self,
        anchors: Sequence[AnchorSet],
        *,
        extra_certificates: Sequence[x509.Certificate] = (),
        roots: str | None = None,
        root_remedy: str | None = None,
    ) -> None:
        """``roots`` says where the anchors came from and ``root_remedy`` what to do when a
        TSA's root is not among them; both are the caller's to phrase (a configuration key, a
        ``--trust`` file). ``extra_certificates`` may supply the signer certificate of a token
        made without certReq (never trusted as roots)."""
        self.anchors = tuple(anchors)
        self._extra = tuple(extra_certificates)
        self._roots = roots
        self._root_remedy = root_remedy

    def verify(
        self, data: bytes, *, source: str, digest_of: DigestOf, prefer: str | None = None
    ) -> Verdict:
        """The verdict on ``data``; ``prefer``'s roots are tried first (the TSA that made it).

        ``digest_of`` gives the data's digest under the token's imprint algorithm; when it
        raises ValueError (the digest is not at hand) the imprint is not compared and the
        caller must not trust the verdict for that algorithm.
        """
        try:
            token = load_timestamp(data)
        except (TspParseError, TimestampRejected) as error:
            return Verdict(
                EvidenceKind.TSR,
                source,
                "invalid",
                error.error_class,
                error.message,
                detail=_NO_DETAIL,
            )
        try:
            digest: bytes | None = digest_of(token.facts.algorithm)
        except ValueError:
            digest = None  # an algorithm hashlib lacks: verify_token names it
        except StampdError as error:  # the data could not be read again (SHA-384)
            return _facts_verdict(token, source, "invalid", error.error_class, error.message)
        return self.check(token, source=source, digest=digest, prefer=prefer)

    def check(
        self,
        token: TimestampToken,
        *,
        source: str,
        digest: bytes | None,
        prefer: str | None = None,
        now: datetime | None = None,
    ) -> Verdict:
        """The verdict on a parsed token for data with this ``digest`` (None: not compared)."""
        verified: VerifiedToken | None = None
        failure: TokenInvalid | None = None
        matched: str | None = None
        ordered = sorted(self.anchors, key=lambda anchor: anchor.provider != prefer)
        for anchor in ordered or [AnchorSet(None, ())]:
            try:
                verified = verify_token(
                    token, digest=digest, anchors=anchor.roots, extra_certificates=self._extra
                )
            except TokenInvalid as error:
                failure = error
                if error.reason not in _CHAIN_REASONS:
                    break  # the token itself is wrong: other roots will not change that
                continue
            matched = anchor.provider
            break
        if verified is None:
            assert failure is not None
            status: Status = "unverifiable" if failure.reason == "signer_unavailable" else "invalid"
            message = failure.message
            if failure.chain is not None:
                message = failure.chain.describe(roots=self._roots, remedy=self._root_remedy)
            return _facts_verdict(token, source, status, failure.reason, message)
        verdict = _facts_verdict(token, source, "valid", None, None)
        return Verdict(
            verdict.kind,
            source,
            "valid",
            gen_time=verdict.gen_time,
            authority=verified.authority,
            provider=matched,
            algorithm=verdict.algorithm,
            chain_not_after=verified.chain_not_after,
            renewal_overdue=verified.chain_not_after <= (now or datetime.now(UTC)),
            detail=verdict.detail,
        )


_NO_DETAIL = TsrDetail()


def _facts_verdict(
    token: TimestampToken, source: str, status: Status, reason: str | None, message: str | None
) -> Verdict:
    """A verdict with what the token says of itself (read before any check passed)."""
    facts = token.facts
    return Verdict(
        EvidenceKind.TSR,
        source,
        status,
        reason,
        message,
        gen_time=facts.gen_time,
        algorithm=facts.algorithm,
        detail=TsrDetail(facts.serial, facts.policy),
    )
