"""The ``ots`` kind's verifier: an OpenTimestamps proof walked offline to what it proves.

reference/opentimestamps.md §5: walk the tree from the file digest (the decoder has evaluated
every op, so each node knows its message); for each Bitcoin attestation at height h take the
80-byte block header at h — ``hashMerkleRoot`` is bytes 36..68 (internal order), ``nTime``
bytes 68..72 little-endian — and require the leaf's message to equal that merkle root. One
matching leaf is enough; the proof then shows the data existed no later than that block's
time. Hashes are shown byte-reversed, as Bitcoin software displays them.

Where headers come from is the caller's business (a bitcoind over JSON-RPC, in the daemon):
this module only takes a :data:`HeaderLookup`. Without one, the Bitcoin leaves are listed
with their height and merkle root and the verdict says "not checked against Bitcoin", which is
never ``valid`` (the reference client exits 1 there too).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from stampd.store.errors import StampdError
from stampd.store.formats.ots import (
    BlockHeader,
    OtsDecodeError,
    OtsProof,
    Pending,
    Timestamp,
    decode,
)
from stampd.store.kinds import EvidenceKind
from stampd.store.verify import Commitment, DigestOf, Status, Verdict, iso_time

#: The 80-byte header of the block at a height, or None when there is no header to be had.
HeaderLookup = Callable[[int], bytes | None]
HEADER_SIZE = 80

Outcome = Literal["ok", "mismatch", "not_checked"]


@dataclass(frozen=True)
class BitcoinCheck:
    """One Bitcoin attestation and what its block header said."""

    height: int
    #: The leaf's message: the merkle root the proof claims, in internal byte order.
    merkle_root: bytes
    outcome: Outcome
    #: The header's ``nTime`` when it was checked.
    block_time: datetime | None = None
    #: The header's merkle root when it was checked (internal order).
    header_root: bytes | None = None

    @property
    def shown_root(self) -> str:
        """The claimed merkle root as block explorers and ``bitcoin-cli`` show it."""
        return self.merkle_root[::-1].hex()

    def to_dict(self) -> dict[str, Any]:
        """JSON: height, merkle root (display order), header outcome, block time."""
        return {
            "height": self.height,
            "merkle_root": self.shown_root,
            "header": self.outcome,
            "block_time": iso_time(self.block_time),
        }


@dataclass(frozen=True)
class OtsDetail:
    """What an ``ots`` verdict adds: the digest check and every leaf of the proof."""

    #: Whether the proof starts from the data's digest (None: the digest was not at hand).
    digest_matches: bool | None = None
    #: Every Bitcoin attestation, in height order.
    bitcoin: tuple[BitcoinCheck, ...] = ()
    #: The calendars of the forks still pending (their URIs).
    pending: tuple[str, ...] = ()
    #: Attestations stampd cannot check: other chains' ("ethereum block 3283713") and
    #: unknown ones ("unknown attestation 0102030405060708").
    other: tuple[str, ...] = ()

    @property
    def serial(self) -> str | None:
        """An OpenTimestamps proof has no serial number."""
        return None

    @property
    def chain_holder(self) -> str:
        """No certificate chain: the anchor is Bitcoin's."""
        return "Bitcoin"

    def note(self) -> str:
        """`` (2 forks still pending)`` after the block, when some calendars have not answered."""
        if not self.pending:
            return ""
        forks = "fork" if len(self.pending) == 1 else "forks"
        return f" ({len(self.pending)} {forks} still pending)"

    def to_dict(self) -> dict[str, Any]:
        """``digest_matches``, ``bitcoin``, ``pending`` and ``other``, on every ``ots`` verdict."""
        return {
            "digest_matches": self.digest_matches,
            "bitcoin": [check.to_dict() for check in self.bitcoin],
            "pending": list(self.pending),
            "other": list(self.other),
        }


_NO_DETAIL = OtsDetail()


def _no_headers(height: int) -> bytes | None:
    return None


class OtsVerifier:
    """Checks ``.ots`` proofs; Bitcoin leaves against ``headers`` when there is a source."""

    def __init__(self, headers: HeaderLookup | None = None) -> None:
        self.headers: HeaderLookup = headers or _no_headers

    def verify(
        self, data: bytes, *, source: str, digest_of: DigestOf, prefer: str | None = None
    ) -> Verdict:
        """The verdict on the proof ``data``; ``prefer`` is unused (no providers' anchors).

        Never raises for a bad proof: an undecodable one is an ``invalid`` verdict with
        ``reason = "parse"``.
        """
        try:
            proof = decode(data)
        except OtsDecodeError as error:
            return Verdict(
                EvidenceKind.OTS, source, "invalid", error.error_class, error.message,
                detail=_NO_DETAIL,
            )  # fmt: skip
        try:
            digest: bytes | None = digest_of(proof.algorithm)
        except ValueError:
            digest = None  # an algorithm whose digest is not at hand (keccak256 files)
        except StampdError as error:  # the data could not be read again
            return Verdict(
                EvidenceKind.OTS, source, "invalid", error.error_class, error.message,
                algorithm=proof.algorithm, detail=_NO_DETAIL,
            )  # fmt: skip
        return check(proof, digest=digest, headers=self.headers, source=source)


def check(proof: OtsProof, *, digest: bytes | None, headers: HeaderLookup, source: str) -> Verdict:
    """The verdict on a decoded proof for data with ``digest`` (of ``proof.algorithm``).

    ValueError when ``headers`` gives something that is not an 80-byte header: that is a
    broken header source, not a bad proof. The verdict's ``commitments`` are the Pending
    leaves (calendar URI, message), each anchored when a Bitcoin leaf lies below it.
    """
    checks: list[BitcoinCheck] = []
    pending: list[str] = []
    waits: dict[Commitment, None] = {}
    other: list[str] = []
    for node, attestation in proof.timestamp.leaves():
        if isinstance(attestation, Pending):
            pending.append(attestation.uri)
            waits[Commitment(attestation.uri, node.message, _anchored(node))] = None
        elif isinstance(attestation, BlockHeader) and attestation.chain == "bitcoin":
            checks.append(_check_leaf(attestation.height, node.message, headers))
        elif isinstance(attestation, BlockHeader):
            other.append(f"{attestation.chain} block {attestation.height}")
        else:
            other.append(f"unknown attestation {attestation.tag.hex()}")
    checks.sort(key=lambda leaf: (leaf.height, leaf.merkle_root))
    matches = None if digest is None else digest == proof.digest
    detail = OtsDetail(matches, tuple(checks), tuple(pending), tuple(other))

    def verdict(status: Status, reason: str | None, message: str, **more: Any) -> Verdict:
        return Verdict(
            EvidenceKind.OTS, source, status, reason, message,
            algorithm=proof.algorithm, detail=detail, commitments=tuple(waits), **more,
        )  # fmt: skip

    if matches is False:
        assert digest is not None
        return verdict(
            "invalid",
            "digest_mismatch",
            f"the proof is for {proof.algorithm} {proof.digest.hex()}, the file's is"
            f" {digest.hex()}: it is another file's proof, or the file changed",
        )
    if matches is None:
        return verdict(
            "unverifiable",
            "digest_unavailable",
            f"the proof starts from the file's {proof.algorithm} digest, which stampd cannot"
            " compute here",
        )
    return _judge(detail, verdict)


_Make = Callable[..., Verdict]


def _judge(detail: OtsDetail, verdict: _Make) -> Verdict:
    """The verdict from the leaves of a proof whose digest matched (§5)."""
    good = [leaf for leaf in detail.bitcoin if leaf.outcome == "ok"]
    if good:
        # One matching leaf is enough; the earliest block is the strongest statement.
        first = min(good, key=lambda leaf: leaf.block_time or datetime.max.replace(tzinfo=UTC))
        return verdict(
            "valid",
            None,
            f"existed no later than {iso_time(first.block_time)}: Bitcoin block"
            f" {first.height} has the proof's merkle root {first.shown_root}",
            gen_time=first.block_time,
            authority=f"Bitcoin block {first.height}",
        )
    wrong = [leaf for leaf in detail.bitcoin if leaf.outcome == "mismatch"]
    if wrong:
        return verdict(
            "invalid", "merkle_root_mismatch", "; ".join(_mismatch(leaf) for leaf in wrong)
        )
    if detail.bitcoin:
        roots = ", ".join(
            f"block {leaf.height} has merkle root {leaf.shown_root}" for leaf in detail.bitcoin
        )
        return verdict(
            "unverifiable",
            "not_checked",
            "not checked against Bitcoin: no block header at hand (configure a header source"
            f" in [anchor.bitcoin] url); to check by hand, see that {roots}",
        )
    if detail.pending:
        # Well formed and committed to this data; an upgrade job completes it (store/verify.py).
        return verdict(
            "pending",
            "pending",
            f"not in Bitcoin yet: pending at {', '.join(detail.pending)} (upgraded once a"
            " calendar confirms it, usually within a day)",
        )
    return verdict(
        "unverifiable",
        "no_bitcoin_attestation",
        f"no Bitcoin attestation, only {', '.join(detail.other)}, which stampd cannot check",
    )


def _anchored(node: Timestamp) -> bool:
    """Whether the calendar's reply is in the proof: a Bitcoin attestation below the node of
    its Pending leaf, where the upgrade was merged (reference/opentimestamps.md §2)."""
    return any(
        isinstance(attestation, BlockHeader) and attestation.chain == "bitcoin"
        for _, attestation in node.leaves()
    )


def _check_leaf(height: int, message: bytes, headers: HeaderLookup) -> BitcoinCheck:
    header = headers(height)
    if header is None:
        return BitcoinCheck(height, message, "not_checked")
    if len(header) != HEADER_SIZE:
        raise ValueError(f"the header source gave {len(header)} bytes for block {height}, not 80")
    root = header[36:68]
    (ntime,) = struct.unpack("<I", header[68:72])
    block_time = datetime.fromtimestamp(ntime, UTC)
    # A merkle root is 32 bytes: a leaf with any other message can never match (§1.4).
    outcome: Outcome = "ok" if message == root else "mismatch"
    return BitcoinCheck(height, message, outcome, block_time, root)


def _mismatch(leaf: BitcoinCheck) -> str:
    assert leaf.header_root is not None
    return (
        f"the attestation does not match the block header: Bitcoin block {leaf.height} has"
        f" merkle root {leaf.header_root[::-1].hex()}, the proof's is {leaf.shown_root}"
    )
