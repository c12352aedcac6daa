"""What a timestamp token says: its TSTInfo (RFC 3161 §2.4.2), decoded into plain values.

The facts the index records (genTime, serial, policy), ``show`` prints and ``verify`` and the
reply checks compare (imprint, nonce, accuracy, the TSA's name). Decoding only: whether the
token may be believed is :func:`stampd.store.formats.tsp.verify_token`'s question.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509

from stampd.store.formats.der import present


@dataclass(frozen=True)
class TokenFacts:
    """What a token says (TSTInfo), for the index, ``show`` and ``verify`` (§1.3, §2 item 14)."""

    gen_time: datetime
    serial: int
    policy: str
    algorithm: str
    hashed_message: bytes
    nonce: int | None
    accuracy: timedelta | None
    ordering: bool
    #: The ``tsa`` field as text (RFC 4514 for a directory name), if present.
    tsa_name: str | None


def token_facts(tst: tsp.TSTInfo) -> TokenFacts:
    """The facts of a parsed TSTInfo (asn1crypto raises ValueError on a malformed field)."""
    imprint = tst["message_imprint"]
    accuracy = tst["accuracy"]
    accuracy_delta: timedelta | None = None
    if present(accuracy):
        parts = accuracy.native
        accuracy_delta = timedelta(
            seconds=parts.get("seconds") or 0,
            milliseconds=parts.get("millis") or 0,
            microseconds=parts.get("micros") or 0,
        )
    nonce = tst["nonce"].native if present(tst["nonce"]) else None
    tsa = tst["tsa"]
    return TokenFacts(
        gen_time=tst["gen_time"].native.astimezone(UTC),
        serial=int(tst["serial_number"].native),
        policy=tst["policy"].dotted,
        algorithm=imprint["hash_algorithm"]["algorithm"].native,
        hashed_message=imprint["hashed_message"].native,
        nonce=nonce,
        accuracy=accuracy_delta,
        ordering=bool(tst["ordering"].native),
        tsa_name=_general_name_text(tsa) if present(tsa) else None,
    )


def _general_name_text(name: asn1_x509.GeneralName) -> str:
    if name.name == "directory_name":
        return str(name.chosen.human_friendly)
    return f"{name.name}:{name.native}"
