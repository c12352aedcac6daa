"""Detached OpenTimestamps proofs (``FILE.ots``) and calendar replies, read and written.

reference/opentimestamps.md §1: a detached file is the 31-byte magic, the major version
(varuint; only ``01`` exists and anything else is refused), the file hash op (sha1, ripemd160,
sha256 or keccak256: never another op), the raw digest of that op's length, and the
timestamp tree rooted at the digest (store/formats/ots_tree.py), then nothing: a trailing
byte is an error. A calendar's reply (§2) is a bare tree with no magic, rooted at the
commitment that was submitted or asked.

Every violation is an :class:`OtsDecodeError` (``error_class = "parse"``) that says what is
wrong and at which byte. Written from the format description only (the reference libraries
are LGPL and are not used or copied); stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass

from stampd.store.formats.ots_attestations import (
    Attestation,
    BlockHeader,
    Pending,
    Unknown,
    bitcoin,
)
from stampd.store.formats.ots_ops import HASH_NAMES, HASH_SIZES, Op
from stampd.store.formats.ots_tree import (
    OtsMergeError,
    Timestamp,
    bitcoin_leaves,
    chain,
    encode_tree,
    merge,
    pending_leaves,
    read_tree,
)
from stampd.store.formats.ots_wire import MAX_MESSAGE, OtsDecodeError, Reader, varuint

__all__ = [
    "MAGIC",
    "MAX_REPLY",
    "Attestation",
    "BlockHeader",
    "OtsDecodeError",
    "OtsMergeError",
    "OtsProof",
    "Pending",
    "Timestamp",
    "Unknown",
    "bitcoin",
    "bitcoin_leaves",
    "chain",
    "decode",
    "decode_reply",
    "encode",
    "encode_reply",
    "merge",
    "pending_leaves",
]

#: "\x00OpenTimestamps\x00\x00Proof\x00" and 8 bytes of magic (§1).
MAGIC = bytes.fromhex("004f70656e54696d657374616d7073000050726f6f6600bf89e2e884e89294")
#: The only major version there is.
VERSION = 1
#: The most a calendar reply may be: the reference client reads at most 10000 bytes (§2).
MAX_REPLY = 10_000


@dataclass(frozen=True)
class OtsProof:
    """A detached proof: which hash of the file it starts from, and the tree from that digest."""

    #: The file hash op (``Op(SHA256)``, ``Op(SHA1)``…).
    file_op: Op
    timestamp: Timestamp

    def __post_init__(self) -> None:
        if not self.file_op.is_hash:
            raise ValueError(f"a proof starts from a hash of the file, not {self.file_op.name}")
        if len(self.timestamp.message) != HASH_SIZES[self.file_op.tag]:
            raise ValueError(f"a {self.algorithm} digest is {HASH_SIZES[self.file_op.tag]} bytes")

    @property
    def algorithm(self) -> str:
        """The file digest's algorithm, as hashlib names it: ``sha256``, ``sha1``…"""
        return HASH_NAMES[self.file_op.tag]

    @property
    def digest(self) -> bytes:
        """The file's digest the tree is rooted at."""
        return self.timestamp.message


def decode(data: bytes) -> OtsProof:
    """The proof in a detached ``.ots`` file; OtsDecodeError for anything outside §1."""
    reader = Reader(data)
    if not data.startswith(MAGIC):
        # Compare only what is there, so a truncated magic is reported as truncated.
        if MAGIC.startswith(data):
            raise OtsDecodeError(
                f"file ends inside the magic ({len(data)} of {len(MAGIC)} bytes)",
                offset=len(data),
            )
        raise OtsDecodeError("not an OpenTimestamps proof (wrong magic)", offset=0)
    reader.take(len(MAGIC), "magic")
    at = reader.offset
    version = reader.varuint("major version")
    if version != VERSION or reader.offset != at + 1:
        # Only the byte 01 (§1: "reject anything but 01"), not a longer encoding of 1.
        raise OtsDecodeError(
            f"major version {version} as {data[at : reader.offset].hex()} is not supported"
            " (only version 1, written 01, exists)",
            offset=at,
        )
    at = reader.offset
    tag = reader.byte("file hash op")
    if tag not in HASH_NAMES:
        raise OtsDecodeError(
            f"file hash op 0x{tag:02x} is not a hash (sha1 02, ripemd160 03, sha256 08,"
            " keccak256 67)",
            offset=at,
        )
    file_op = Op(tag)
    digest = reader.take(HASH_SIZES[tag], f"{file_op.name} file digest")
    tree = read_tree(reader, digest)
    _check_end(reader)
    return OtsProof(file_op, tree)


def encode(proof: OtsProof) -> bytes:
    """The proof as a detached ``.ots`` file, in canonical order (§1.5)."""
    return (
        MAGIC
        + varuint(VERSION)
        + proof.file_op.encode()
        + proof.digest
        + encode_tree(proof.timestamp)
    )


def decode_reply(data: bytes, root_message: bytes) -> Timestamp:
    """A calendar's reply body (a tree, no magic) rooted at ``root_message``.

    Replies are untrusted (§2): capped at :data:`MAX_REPLY` bytes and decoded with every
    limit of a file; OtsDecodeError otherwise.
    """
    if len(data) > MAX_REPLY:
        raise OtsDecodeError(f"calendar reply is {len(data)} bytes, more than {MAX_REPLY}")
    if not 1 <= len(root_message) <= MAX_MESSAGE:
        raise OtsDecodeError(f"the asked message is {len(root_message)} bytes, outside 1..4096")
    reader = Reader(data, what="calendar reply")
    tree = read_tree(reader, root_message)
    _check_end(reader)
    return tree


def encode_reply(tree: Timestamp) -> bytes:
    """A tree as a calendar sends it (what the test calendars serve)."""
    return encode_tree(tree)


def _check_end(reader: Reader) -> None:
    if not reader.at_end():
        raise OtsDecodeError(
            f"{len(reader.data) - reader.offset} bytes of trailing garbage after the timestamp",
            offset=reader.offset,
        )
