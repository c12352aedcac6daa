"""The operations of an ``.ots`` timestamp tree: what each tag does to a message.

reference/opentimestamps.md §1.2 (tag numbers follow the RFC 4880 hash ids):

| tag | op | argument | result |
|---|---|---|---|
| ``02`` ``03`` ``08`` ``67`` | sha1, ripemd160, sha256, keccak256 | none | 20/20/32/32 B |
| ``f0`` ``f1`` | append, prepend | varbytes, 1..4096 B | msg ‖ arg, arg ‖ msg |
| ``f2`` ``f3`` | reverse (deprecated), hexlify (lower-case ASCII) | none | input ≤ 2048 B |

Every input and result is 1..4096 bytes; a violation is a decode error in a file and a
:class:`OpError` (a ValueError) for a tree built in code.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from stampd.store.formats import hashes
from stampd.store.formats.ots_wire import MAX_MESSAGE, OtsDecodeError, Reader, varbytes

SHA1 = 0x02
RIPEMD160 = 0x03
SHA256 = 0x08
KECCAK256 = 0x67
APPEND = 0xF0
PREPEND = 0xF1
REVERSE = 0xF2
HEXLIFY = 0xF3

#: The hash ops, by tag: their names and output sizes.
HASH_NAMES = {SHA1: "sha1", RIPEMD160: "ripemd160", SHA256: "sha256", KECCAK256: "keccak256"}
HASH_SIZES = {SHA1: 20, RIPEMD160: 20, SHA256: 32, KECCAK256: 32}
_NAMES = HASH_NAMES | {APPEND: "append", PREPEND: "prepend", REVERSE: "reverse", HEXLIFY: "hexlify"}
_BINARY = frozenset({APPEND, PREPEND})


class OpError(ValueError):
    """An op applied to a message it cannot take, or whose result breaks the limits."""


@dataclass(frozen=True, order=True)
class Op:
    """One operation; ``arg`` is empty except for append and prepend.

    Ordered by (tag, arg): the canonical order of a node's ops (§1.5).
    """

    tag: int
    arg: bytes = b""

    def __post_init__(self) -> None:
        if self.tag not in _NAMES:
            raise OpError(f"unknown op tag 0x{self.tag:02x}")
        if self.tag in _BINARY:
            if not 1 <= len(self.arg) <= MAX_MESSAGE:
                raise OpError(f"{self.name} argument is {len(self.arg)} bytes, outside 1..4096")
        elif self.arg:
            raise OpError(f"{self.name} takes no argument")

    @property
    def name(self) -> str:
        """The op's name as ``ots info`` spells it, lower case: ``sha256``, ``append``."""
        return _NAMES[self.tag]

    @property
    def is_hash(self) -> bool:
        """Whether it is one of the four hash ops (the only ones a file may start with)."""
        return self.tag in HASH_NAMES

    def apply(self, message: bytes) -> bytes:
        """The op's result on ``message``; OpError when input or result breaks the limits."""
        if not 1 <= len(message) <= MAX_MESSAGE:
            raise OpError(f"{self.name} input is {len(message)} bytes, outside 1..4096")
        result = _evaluate(self.tag, self.arg, message)
        if len(result) > MAX_MESSAGE:
            raise OpError(f"result of {self.name} is {len(result)} bytes, more than 4096")
        return result

    def encode(self) -> bytes:
        """The op as it is serialised: the tag, then the argument for append and prepend."""
        return bytes([self.tag]) + (varbytes(self.arg) if self.tag in _BINARY else b"")

    def __str__(self) -> str:
        return f"{self.name} {self.arg.hex()}" if self.arg else self.name


def _sha1(message: bytes) -> bytes:
    # SHA-1 is broken for collisions (the SHAttered pair shares one proof, vectors sha1/), but
    # it is what old proofs commit to: computing it is needed to read them.
    return hashlib.sha1(message, usedforsecurity=False).digest()


def _hexlify(message: bytes) -> bytes:
    # Its output may not pass 4096 bytes, so its input is at most 2048 (§1.2).
    if len(message) > MAX_MESSAGE // 2:
        raise OpError(f"hexlify input is {len(message)} bytes, more than 2048")
    return message.hex().encode("ascii")


_UNARY: dict[int, Callable[[bytes], bytes]] = {
    SHA1: _sha1,
    RIPEMD160: hashes.ripemd160,
    SHA256: lambda message: hashlib.sha256(message).digest(),
    KECCAK256: hashes.keccak256,
    REVERSE: lambda message: message[::-1],
    HEXLIFY: _hexlify,
}


def _evaluate(tag: int, arg: bytes, message: bytes) -> bytes:
    if tag == APPEND:
        return message + arg
    if tag == PREPEND:
        return arg + message
    return _unary(tag, message)


@functools.lru_cache(maxsize=1024)
def _unary(tag: int, message: bytes) -> bytes:
    # Memoised: the decoder evaluates an op and the node built from it checks the same op
    # again, and a file may repeat one op in many forks; pure-Python Keccak-256 costs ~0.5 ms,
    # so without the memo a crafted 260 kB file of keccak forks took 22 s to decode.
    return _UNARY[tag](message)


def sha256() -> Op:
    """The sha256 op."""
    return Op(SHA256)


def append(arg: bytes) -> Op:
    """An append op (``msg ‖ arg``)."""
    return Op(APPEND, arg)


def prepend(arg: bytes) -> Op:
    """A prepend op (``arg ‖ msg``)."""
    return Op(PREPEND, arg)


def read_op(reader: Reader, tag: int) -> Op:
    """The op whose tag was just read at ``reader.offset - 1``, with its argument."""
    at = reader.offset - 1
    if tag not in _NAMES:
        raise OtsDecodeError(f"unknown op tag 0x{tag:02x}", offset=at)
    if tag in _BINARY:
        arg = reader.varbytes(f"{_NAMES[tag]} argument", low=1, high=MAX_MESSAGE)
        return Op(tag, arg)
    return Op(tag)


def apply_at(op: Op, message: bytes, offset: int) -> bytes:
    """``op.apply(message)`` for the decoder: a failure names the op's byte offset."""
    try:
        return op.apply(message)
    except OpError as error:
        raise OtsDecodeError(str(error), offset=offset) from None
