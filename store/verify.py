"""What offline verification of one piece of evidence says, whatever its kind: the verdict.

One :class:`Verdict` per piece of evidence, with a status a person and a script can act on:

- ``valid``: every check passed, the authority's chain validated when the proof was made.
  ``renewal_overdue`` says the chain has expired since (reference/rfc3161.md §5): the proof
  still proves what it proved, but from now on only a renewed evidence record (RFC 4998)
  keeps it standing.
- ``invalid``: a check failed; ``reason`` is the stable code, ``message`` the explanation.
- ``unverifiable``: nothing is wrong that we can see, but the proof cannot be checked (a
  token without the TSA's certificate). Never reported as valid.
- ``pending``: the proof commits to this data, but its anchor is not confirmed yet (an
  ``.ots`` waiting for its Bitcoin block). Recorded, kept, and upgraded by a job; not yet
  proof of anything, so never reported as valid.

The fields every kind has live on the verdict; what only one kind knows (an RFC 3161 serial
and policy) is its :class:`VerdictDetail`. Each kind's verifier (a :class:`Verifier`, named by
the kind's registry entry, store/kinds.py) produces these; the job runner, sidecar adoption,
reuse of archived proofs and ``stampd verify`` all read the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from stampd.store.errors import StampdError

Status = Literal["valid", "invalid", "unverifiable", "pending"]

#: The data's digest under a named algorithm (computed on first use by the caller). Raises
#: ValueError for an algorithm whose digest it cannot give.
DigestOf = Callable[[str], bytes]


@dataclass(frozen=True)
class Commitment:
    """One place a proof waits for its anchor (issue 12): the provider holding it, under which
    commitment, and whether that provider's anchor has been delivered into the proof.

    An ``.ots`` proof waits at each calendar that answered (its Pending leaf's URI) under the
    message of that leaf (reference/opentimestamps.md §2); the index records each one
    (store/index/commitments.py). Kinds whose proofs are complete at once have none.
    """

    #: Who holds the proof (an OpenTimestamps calendar's URI).
    provider: str
    #: What it holds it under, as the provider is asked for the anchor.
    commitment: bytes
    #: Whether the provider's anchor is in the proof (its reply has been merged).
    anchored: bool = False


class VerdictDetail(Protocol):
    """What one kind's verdict adds to the kind-neutral fields."""

    @property
    def serial(self) -> str | None:
        """The proof's serial number as the index records it, if the kind has one."""
        ...

    @property
    def chain_holder(self) -> str:
        """Whose chain ``chain_not_after`` is about, as the operator calls it ("TSA")."""
        ...

    def note(self) -> str:
        """Text after the authority on ``stampd verify``'s line (`` (serial 1f)``), or ''."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The detail's JSON keys; every verdict of the kind carries all of them."""
        ...


@dataclass(frozen=True)
class Verdict:
    """The outcome for one piece of evidence."""

    kind: str
    #: Where the evidence came from (a sidecar path, the archive, the file given with ``--tsr``).
    source: str
    status: Status
    reason: str | None = None
    message: str | None = None
    #: When the evidence says the data existed (an RFC 3161 genTime).
    gen_time: datetime | None = None
    #: Who vouches for it, as people name it (the TSA's common name).
    authority: str | None = None
    #: The configured provider whose trust anchors it verified against; None when it is not
    #: valid, or when the anchors were not a provider's (``stampd verify --trust``).
    provider: str | None = None
    #: The digest algorithm the evidence covers.
    algorithm: str | None = None
    #: The earliest notAfter of the validated chain.
    chain_not_after: datetime | None = None
    renewal_overdue: bool = False
    detail: VerdictDetail | None = None
    #: Where the proof waits for its anchor, as its bytes say (kinds that are upgraded later);
    #: recorded when a proof is adopted or reused. Not part of :meth:`to_dict`.
    commitments: tuple[Commitment, ...] = ()

    @property
    def valid(self) -> bool:
        """Whether every check passed."""
        return self.status == "valid"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (times as ISO 8601 UTC); the detail's keys follow algorithm."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "source": self.source,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "gen_time": iso_time(self.gen_time),
            "authority": self.authority,
            "provider": self.provider,
            "algorithm": self.algorithm,
        }
        if self.detail is not None:
            data.update(self.detail.to_dict())
        data["chain_not_after"] = iso_time(self.chain_not_after)
        data["renewal_overdue"] = self.renewal_overdue
        return data


class Verifier(Protocol):
    """One kind's offline verifier: sidecar bytes and the data's digests in, a verdict out."""

    def verify(
        self, data: bytes, *, source: str, digest_of: DigestOf, prefer: str | None = None
    ) -> Verdict:
        """Check ``data`` completely; anchors of provider ``prefer`` are tried first.

        Never raises for bad evidence: that is an ``invalid`` verdict.
        """
        ...


def iso_time(moment: datetime | None) -> str | None:
    """A verdict time as ISO 8601 UTC to the second, as ``stampd verify`` prints it."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unreadable(kind: str, source: str, error: StampdError) -> Verdict:
    """The verdict for evidence that could not even be read."""
    return Verdict(kind, source, "invalid", error.error_class, error.message)
