"""File names as Linux has them (bytes), written as text the way coreutils writes them.

A Linux file name is any sequence of bytes without ``/`` and NUL; Python hands one that is not
UTF-8 over as a ``str`` with surrogate escapes (PEP 383: byte 0xE9 becomes U+DCE9). Such a
string cannot be encoded as UTF-8, so it can go neither into SQLite text, nor into JSON a
script can parse, nor onto a terminal. An old Samba share's Latin-1 names are real records
all the same, so stampd stores and shows every name losslessly, in ONE escaped form:

- printable characters (any valid, non-control UTF-8) are themselves;
- a backslash is ``\\\\``;
- the controls that C names are ``\\a \\b \\t \\n \\v \\f \\r``;
- every other byte that is a control character (C0, DEL, the UTF-8 of a C1 control) or not
  part of valid UTF-8 is ``\\ooo``, three octal digits.

That is what ``ls -b`` (GNU quoting style "escape") prints, except that a space stays a space:
the form is for JSON, logs and arguments, not for a shell. The same form is the index's
``path`` column, the CLI's output, and the control socket's paths, so an escaped name read
anywhere can be fed back to ``stampd``.

The codes form a prefix code in which ``/`` stands for itself, so ``escape`` commutes with
joining and splitting paths: ``escape(a / b) == escape(a) + "/" + escape(b)``. Directory
and subtree queries on the escaped column therefore work as on the names themselves
(:func:`stampd.store.index.scan_rows.subtree_bounds`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Characters that are written as an escape (surrogates U+DC80..U+DCFF stand for bytes that
#: are not UTF-8, PEP 383). Anything else is printed as it is.
_NEEDS_ESCAPE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\udc80-\udcff]")
_NAMED = {"\a": "a", "\b": "b", "\t": "t", "\n": "n", "\v": "v", "\f": "f", "\r": "r"}
_NAMED_BYTES = {ord(letter): ord(char) for char, letter in _NAMED.items()}
_OCTAL = frozenset(b"01234567")


def escape(name: str | os.PathLike[str]) -> str:
    """``name`` (a path or a single name, surrogate-escaped as Python gives it) as text that
    is valid UTF-8 and shows every byte; :func:`unescape` gives ``name`` back exactly."""
    text = os.fspath(name)
    if _NEEDS_ESCAPE.search(text) is None:
        return text  # nearly every name: one regex scan, no copy
    return _NEEDS_ESCAPE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    if char in _NAMED:
        return "\\" + _NAMED[char]
    raw = char.encode("utf-8", "surrogateescape")  # a C1 control is two bytes in UTF-8
    return "".join(f"\\{byte:03o}" for byte in raw)


class EscapeError(ValueError):
    """Text that is not in the escaped form (a lone or unknown backslash escape)."""


def unescape(text: str) -> str:
    """The name that :func:`escape` wrote as ``text`` (surrogate-escaped where not UTF-8).

    Also accepts ``\\\\ `` for a space, as ``ls -b`` writes it. Raises :class:`EscapeError`
    for a backslash that starts no escape.
    """
    if "\\" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    position, end = 0, len(raw)
    while position < end:
        byte = raw[position]
        if byte != 0x5C:  # not a backslash
            out.append(byte)
            position += 1
            continue
        code = raw[position + 1 : position + 2]
        if code == b"\\":
            out.append(0x5C)
            position += 2
        elif code == b" ":
            out.append(0x20)
            position += 2
        elif code and code[0] in _NAMED_BYTES:
            out.append(_NAMED_BYTES[code[0]])
            position += 2
        elif _is_octal(digits := raw[position + 1 : position + 4]):
            value = int(digits, 8)
            if value > 0xFF:
                raise EscapeError(f"\\{digits.decode()} is not a byte (at most \\377)")
            out.append(value)
            position += 4
        else:
            raise EscapeError(
                f"a backslash at position {position} starts no escape"
                " (write \\\\ for a backslash, \\ooo for a byte)"
            )
    return out.decode("utf-8", "surrogateescape")


def _is_octal(digits: bytes) -> bool:
    return len(digits) == 3 and all(digit in _OCTAL for digit in digits)


def unescape_path(text: str) -> Path:
    """:func:`unescape` as a :class:`~pathlib.Path`."""
    return Path(unescape(text))
