"""The two hash functions ``.ots`` proofs use that ``hashlib`` may not give: RIPEMD-160, Keccak-256.

- RIPEMD-160 (op ``03``) is in older complete proofs (reference/opentimestamps.md §1.7).
  ``hashlib`` takes it from OpenSSL, and OpenSSL 3.0.0-3.0.6 ship it only in the legacy
  provider, so :func:`ripemd160` uses ``hashlib`` when it can and a small pure-Python
  implementation (Dobbertin, Bosselaers, Preneel, "RIPEMD-160", 1996) otherwise.
- Keccak-256 (op ``67``) is the original Keccak submission's padding (``01 … 80``), not
  FIPS 202 SHA3-256 (``06 … 80``), so ``hashlib.sha3_256`` gives other output; only Ethereum
  proofs use it. :func:`keccak256` implements Keccak-f[1600] (Keccak reference 3.0).

Both are slow (pure Python) but the inputs are proof messages of at most 4096 bytes.
"""

from __future__ import annotations

import hashlib
import struct

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _hashlib_has_ripemd160() -> bool:
    try:
        hashlib.new("ripemd160", b"")
    except ValueError:  # "unsupported hash type" under OpenSSL 3.0.0-3.0.6 without legacy
        return False
    return True


#: Whether ``hashlib`` gives RIPEMD-160 on this machine (decided once; tests switch it off).
HASHLIB_RIPEMD160 = _hashlib_has_ripemd160()


def ripemd160(data: bytes) -> bytes:
    """RIPEMD-160 of ``data``: ``hashlib``'s when OpenSSL provides it, else the pure fallback."""
    if HASHLIB_RIPEMD160:
        return hashlib.new("ripemd160", data).digest()
    return pure_ripemd160(data)


# RIPEMD-160 tables (the 1996 paper, "Description of RIPEMD-160"): message word selection
# r and r', rotation amounts s and s', and the round constants of the left and right lines.
_R = (
    *range(16),
    *(7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8),
    *(3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12),
    *(1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2),
    *(4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13),
)
_R2 = (
    *(5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12),
    *(6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2),
    *(15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13),
    *(8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14),
    *(12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11),
)
_S = (
    *(11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8),
    *(7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12),
    *(11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5),
    *(11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12),
    *(9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6),
)
_S2 = (
    *(8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6),
    *(9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11),
    *(9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5),
    *(15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8),
    *(8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11),
)
_K = (0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E)
_K2 = (0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000)


def _rol32(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _MASK32


def _f(round_: int, x: int, y: int, z: int) -> int:
    """The five nonlinear functions, one per group of 16 steps."""
    if round_ == 0:
        return x ^ y ^ z
    if round_ == 1:
        return (x & y) | (~x & z)
    if round_ == 2:
        return (x | ~y) ^ z
    if round_ == 3:
        return (x & z) | (y & ~z)
    return x ^ (y | ~z)


def pure_ripemd160(data: bytes) -> bytes:
    """RIPEMD-160 in pure Python, for machines whose OpenSSL hides it (legacy provider)."""
    # MD4-style padding: 0x80, zeros to 56 mod 64, the bit length as 64-bit little-endian.
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", len(data) * 8)
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    for start in range(0, len(padded), 64):
        words = struct.unpack("<16I", padded[start : start + 64])
        a, b, c, d, e = h
        a2, b2, c2, d2, e2 = h
        for j in range(80):
            group = j // 16
            t = _rol32((a + _f(group, b, c, d) + words[_R[j]] + _K[group]) & _MASK32, _S[j])
            a, e, d, c, b = e, d, _rol32(c, 10), b, (t + e) & _MASK32
            t = _rol32(
                (a2 + _f(4 - group, b2, c2, d2) + words[_R2[j]] + _K2[group]) & _MASK32, _S2[j]
            )
            a2, e2, d2, c2, b2 = e2, d2, _rol32(c2, 10), b2, (t + e2) & _MASK32
        h = [
            (h[1] + c + d2) & _MASK32,
            (h[2] + d + e2) & _MASK32,
            (h[3] + e + a2) & _MASK32,
            (h[4] + a + b2) & _MASK32,
            (h[0] + b + c2) & _MASK32,
        ]
    return struct.pack("<5I", *h)


def _round_constants() -> tuple[int, ...]:
    """Keccak's 24 iota constants, from the LFSR x^8 + x^6 + x^5 + x^4 + 1 (reference §1.2)."""
    constants = []
    state = 1
    for _ in range(24):
        constant = 0
        for j in range(7):
            if state & 1:
                constant |= 1 << ((1 << j) - 1)
            state <<= 1
            if state & 0x100:
                state ^= 0x171
        constants.append(constant)
    return tuple(constants)


def _rotations() -> tuple[int, ...]:
    """The rho offsets of lane x + 5y: (t+1)(t+2)/2 along the (x, y) -> (y, 2x+3y) walk."""
    offsets = [0] * 25
    x, y = 1, 0
    for t in range(24):
        offsets[x + 5 * y] = ((t + 1) * (t + 2) // 2) % 64
        x, y = y, (2 * x + 3 * y) % 5
    return tuple(offsets)


_RC = _round_constants()
_ROT = _rotations()


def _rol64(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & _MASK64 if shift else value


def _keccak_f(lanes: list[int]) -> None:
    """Keccak-f[1600] on 25 lanes (index x + 5y), in place."""
    for constant in _RC:
        # theta
        column = [
            lanes[x] ^ lanes[x + 5] ^ lanes[x + 10] ^ lanes[x + 15] ^ lanes[x + 20]
            for x in range(5)
        ]
        for x in range(5):
            d = column[(x - 1) % 5] ^ _rol64(column[(x + 1) % 5], 1)
            for y in range(0, 25, 5):
                lanes[x + y] ^= d
        # rho and pi: B[y, 2x+3y] = rot(A[x, y])
        moved = [0] * 25
        for x in range(5):
            for y in range(5):
                moved[y + 5 * ((2 * x + 3 * y) % 5)] = _rol64(lanes[x + 5 * y], _ROT[x + 5 * y])
        # chi
        for y in range(0, 25, 5):
            for x in range(5):
                lanes[x + y] = moved[x + y] ^ (~moved[(x + 1) % 5 + y] & moved[(x + 2) % 5 + y])
        # iota
        lanes[0] ^= constant


def keccak(data: bytes, *, rate: int, pad: int, size: int) -> bytes:
    """The Keccak sponge: ``rate`` bytes per block, domain byte ``pad``, ``size`` bytes out.

    ``pad = 0x01`` is Keccak as Ethereum uses it; ``0x06`` is FIPS 202 SHA-3 (which the tests
    compare with ``hashlib.sha3_256`` to check the permutation).
    """
    padded = bytearray(data)
    padded.append(pad)
    padded.extend(b"\x00" * (-len(padded) % rate))
    padded[-1] |= 0x80
    lanes = [0] * 25
    for start in range(0, len(padded), rate):
        block = struct.unpack(f"<{rate // 8}Q", padded[start : start + rate])
        for index, word in enumerate(block):
            lanes[index] ^= word
        _keccak_f(lanes)
    return struct.pack("<25Q", *lanes)[:size]


def keccak256(data: bytes) -> bytes:
    """Keccak-256 with the original padding (Ethereum's ``keccak256``, ``.ots`` op ``67``)."""
    return keccak(data, rate=136, pad=0x01, size=32)
