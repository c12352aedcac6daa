"""The leaves of an ``.ots`` tree: who attests that a message existed (reference §1.4).

An attestation is ``00`` + an 8-byte tag + ``varbytes(payload)``, the payload at most 8192
bytes, and a known payload must be consumed exactly:

| tag | kind | payload |
|---|---|---|
| ``83dfe30d2ef90c8e`` | Pending | ``varbytes(uri)``, ≤ 1000 B of ``[A-Za-z0-9._/:-]`` |
| ``0588960d73d71901`` | Bitcoin block header | ``varuint(height)`` |
| ``06869a0d73d71b45`` | Litecoin block header | ``varuint(height)`` (known, not verifiable) |
| ``30fe8087b5c7ead7`` | Ethereum block header | ``varuint(height)`` (known, not verifiable) |
| anything else | Unknown | kept verbatim: tag and raw payload, re-emitted byte for byte |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from stampd.store.formats.ots_wire import MAX_PAYLOAD, OtsDecodeError, Reader, varbytes, varuint

PENDING_TAG = bytes.fromhex("83dfe30d2ef90c8e")
BITCOIN_TAG = bytes.fromhex("0588960d73d71901")
LITECOIN_TAG = bytes.fromhex("06869a0d73d71b45")
ETHEREUM_TAG = bytes.fromhex("30fe8087b5c7ead7")

Chain = Literal["bitcoin", "litecoin", "ethereum"]
_CHAIN_TAGS: dict[str, bytes] = {
    "bitcoin": BITCOIN_TAG,
    "litecoin": LITECOIN_TAG,
    "ethereum": ETHEREUM_TAG,
}
_TAG_CHAINS: dict[bytes, Chain] = {
    BITCOIN_TAG: "bitcoin",
    LITECOIN_TAG: "litecoin",
    ETHEREUM_TAG: "ethereum",
}
#: A pending URI's length and characters (§1.4): no spaces, quotes, query strings or escapes.
MAX_URI = 1000
_URI = re.compile(r"[A-Za-z0-9._/:-]+")


class AttestationError(ValueError):
    """An attestation built in code that could not be written or read back."""


@dataclass(frozen=True)
class Pending:
    """The calendar at ``uri`` will give the rest of the path once its transaction confirms."""

    uri: str

    def __post_init__(self) -> None:
        problem = uri_problem(self.uri.encode("utf-8", "replace"))
        if problem is not None:
            raise AttestationError(problem)

    @property
    def tag(self) -> bytes:
        return PENDING_TAG

    def payload(self) -> bytes:
        """The URI length-prefixed (and prefixed again as the payload when written)."""
        return varbytes(self.uri.encode("ascii"))

    def sort_key(self) -> tuple[bytes, bytes | int]:
        """Canonical order (§1.5): by tag, then Pending by URI."""
        return (PENDING_TAG, self.uri.encode("ascii"))


@dataclass(frozen=True)
class BlockHeader:
    """The node's message is the merkle root of block ``height`` of ``chain``.

    Only Bitcoin is verified; Litecoin and Ethereum are decoded and kept so the proof
    round-trips and the verifier can name them.
    """

    chain: Chain
    height: int

    def __post_init__(self) -> None:
        if self.chain not in _CHAIN_TAGS:
            raise AttestationError(f"unknown chain {self.chain!r}")
        if not 0 <= self.height < 1 << 63:
            raise AttestationError(f"block height out of range: {self.height}")

    @property
    def tag(self) -> bytes:
        return _CHAIN_TAGS[self.chain]

    def payload(self) -> bytes:
        return varuint(self.height)

    def sort_key(self) -> tuple[bytes, bytes | int]:
        """Canonical order (§1.5): by tag, then by height."""
        return (self.tag, self.height)


@dataclass(frozen=True)
class Unknown:
    """An attestation stampd does not know: tag and raw payload, kept and re-emitted verbatim."""

    tag: bytes
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.tag) != 8 or self.tag in _TAG_CHAINS or self.tag == PENDING_TAG:
            raise AttestationError(f"not an unknown attestation tag: {self.tag.hex()}")
        if len(self.raw) > MAX_PAYLOAD:
            raise AttestationError(f"payload of {len(self.raw)} bytes, more than {MAX_PAYLOAD}")

    def payload(self) -> bytes:
        return self.raw

    def sort_key(self) -> tuple[bytes, bytes | int]:
        """Canonical order (§1.5): by tag, then by payload."""
        return (self.tag, self.raw)


Attestation = Pending | BlockHeader | Unknown


def bitcoin(height: int) -> BlockHeader:
    """A Bitcoin block header attestation."""
    return BlockHeader("bitcoin", height)


def uri_problem(uri: bytes) -> str | None:
    """Why ``uri`` may not be a pending calendar URI, or None when it may."""
    if len(uri) > MAX_URI:
        return f"calendar URI is {len(uri)} bytes, more than {MAX_URI}"
    if not _URI.fullmatch(uri.decode("ascii", "replace")):
        return (
            f"calendar URI {uri[:80]!r} has characters outside A-Z a-z 0-9 . _ / : -"
            if uri
            else "calendar URI is empty"
        )
    return None


def encode_attestation(attestation: Attestation) -> bytes:
    """``tag ‖ varbytes(payload)`` (the ``00`` before it is the tree's)."""
    return attestation.tag + varbytes(attestation.payload())


def read_attestation(reader: Reader) -> Attestation:
    """The attestation after a ``00`` entry byte."""
    start = reader.offset
    tag = reader.take(8, "attestation tag")
    payload_at = reader.offset
    payload = reader.varbytes("attestation payload", low=0, high=MAX_PAYLOAD)
    try:
        return _known(tag, payload)
    except OtsDecodeError as error:
        # The payload's own reader counts from the payload: report where the payload starts.
        raise OtsDecodeError(error.reason, offset=payload_at) from None
    except AttestationError as error:
        raise OtsDecodeError(str(error), offset=start) from None


def _known(tag: bytes, payload: bytes) -> Attestation:
    attestation: Attestation
    if tag == PENDING_TAG:
        inner = Reader(payload, what="pending attestation")
        uri = inner.varbytes("calendar URI", low=0, high=MAX_URI)
        problem = uri_problem(uri)
        if problem is not None:
            raise AttestationError(problem)
        attestation = Pending(uri.decode("ascii"))
    elif tag in _TAG_CHAINS:
        chain = _TAG_CHAINS[tag]
        inner = Reader(payload, what=f"{chain} attestation")
        attestation = BlockHeader(chain, inner.varuint("block height"))
    else:
        return Unknown(tag, payload)
    if not inner.at_end():
        raise OtsDecodeError(
            f"{inner.what} has {len(inner.data) - inner.offset} bytes after its payload"
        )
    return attestation
