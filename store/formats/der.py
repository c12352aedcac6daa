"""Reading DER through asn1crypto, as every DER format here does (tsp, cms; later cades, ers).

Two things each parser needs the same way: whether an OPTIONAL field is there (asn1crypto
gives an absent one as ``Void``, not None), and a parser's complaint about damaged bytes
turned into a sentence a person can read.
"""

from __future__ import annotations

import re

from asn1crypto import core


def present(value: object) -> bool:
    """Whether an OPTIONAL field is there (asn1crypto gives an absent one as ``Void``)."""
    return not isinstance(value, core.Void)


#: A run of digits this long in a parser's message is a length or an integer decoded from
#: damaged bytes ("Insufficient data - 1768…(172 digits) bytes requested"): noise to a reader.
_LONG_NUMBER = re.compile(r"\d{16,}")


def short(error: BaseException) -> str:
    """The first line of ``error``'s message, long numbers cut, at most 200 characters."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = _LONG_NUMBER.sub(lambda m: f"{m.group()[:4]}…({len(m.group())} digits)", text)
    return text[:200]
