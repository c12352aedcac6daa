"""The bytes under an ``.ots`` proof: varuint, varbytes, the limits, and the one decode error.

reference/opentimestamps.md §1.1: a ``varuint`` is unsigned LEB128 (7 bits per byte, least
significant group first, high bit set while more follow); ``varbytes`` is a varuint length and
that many bytes, each field with its own bounds. The reference reader has no cap on a varuint;
stampd caps it at 63 bits so that no length or height is unbounded.
"""

from __future__ import annotations

from stampd.store.errors import ErrorClass, StampdError

#: Every op input and result is 1..4096 bytes (§1.2, ``MAX_MSG_LENGTH``/``MAX_RESULT_LENGTH``).
MAX_MESSAGE = 4096
#: An attestation's payload is at most 8192 bytes (§1.4).
MAX_PAYLOAD = 8192
#: The decoder stops at this nesting of ops below the root (§1.3).
MAX_DEPTH = 256
#: A varuint is at most 63 bits (stampd's cap, §1.1).
MAX_VARUINT_BITS = 63


class OtsDecodeError(StampdError):
    """An ``.ots`` proof or calendar reply that breaks the format: what is wrong, and where."""

    error_class = ErrorClass.PARSE

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        where = "" if offset is None else f" at byte {offset}"
        super().__init__(f"invalid OpenTimestamps proof: {message}{where}")
        #: What is wrong, without the prefix and the offset.
        self.reason = message
        #: The byte offset where the problem starts (None when it is about the whole input).
        self.offset = offset


class Reader:
    """A cursor over the input that raises :class:`OtsDecodeError` for every short read."""

    def __init__(self, data: bytes, *, what: str = "proof") -> None:
        self.data = data
        self.offset = 0
        #: What the input is, for the truncation message ("proof", "calendar reply").
        self.what = what

    def byte(self, field: str) -> int:
        """One byte; ``field`` names what was being read, for the error."""
        if self.offset >= len(self.data):
            raise OtsDecodeError(f"{self.what} ends inside the {field}", offset=self.offset)
        value = self.data[self.offset]
        self.offset += 1
        return value

    def take(self, count: int, field: str) -> bytes:
        """Exactly ``count`` bytes."""
        end = self.offset + count
        if end > len(self.data):
            raise OtsDecodeError(
                f"{self.what} ends inside the {field} ({count} bytes wanted,"
                f" {len(self.data) - self.offset} left)",
                offset=self.offset,
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def varuint(self, field: str) -> int:
        """An unsigned LEB128 integer of at most 63 bits."""
        start = self.offset
        value = 0
        shift = 0
        while True:
            byte = self.byte(field)
            value |= (byte & 0x7F) << shift
            if value >> MAX_VARUINT_BITS:
                raise OtsDecodeError(f"{field} is larger than 63 bits", offset=start)
            if not byte & 0x80:
                return value
            shift += 7
            if shift > MAX_VARUINT_BITS:
                # Only zero groups can follow without overflowing: still too long an encoding.
                raise OtsDecodeError(f"{field} is longer than 63 bits", offset=start)

    def varbytes(self, field: str, *, low: int, high: int) -> bytes:
        """A length-prefixed byte string of ``low``..``high`` bytes."""
        start = self.offset
        length = self.varuint(f"length of the {field}")
        if not low <= length <= high:
            raise OtsDecodeError(f"{field} is {length} bytes, outside {low}..{high}", offset=start)
        return self.take(length, field)

    def at_end(self) -> bool:
        """Whether every byte has been read."""
        return self.offset == len(self.data)


def varuint(value: int) -> bytes:
    """``value`` as unsigned LEB128; ValueError outside 0..2^63-1."""
    if not 0 <= value < 1 << MAX_VARUINT_BITS:
        raise ValueError(f"varuint out of range: {value}")
    out = bytearray()
    while True:
        group = value & 0x7F
        value >>= 7
        if value:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


def varbytes(data: bytes) -> bytes:
    """``data`` prefixed with its length as a varuint."""
    return varuint(len(data)) + data
