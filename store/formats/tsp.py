"""RFC 3161 timestamps: the request stampd sends, the response it keeps, and their verification.

Everything here is pure: bytes in, values out (DESIGN §2). The verification follows the
checklist of reference/rfc3161.md §2, item by item; each failure raises :class:`TokenInvalid`
with a stable ``reason`` so the daemon can store it on the attempt and ``stampd verify`` can
print it. Items that need the request (nonce, requested imprint and policy, the time window)
are in :func:`check_reply`; the rest, which hold for a stored token years later, are in
:func:`verify_token`. The token's SignerInfo is checked by :mod:`.cms` (items 7-10, what a
CAdES seal shares); what is RFC 3161's own — status, TSTInfo, the timeStamping EKU and the
TSA name — is here.

Bytes are never re-encoded: the response is kept exactly as received (DESIGN rule 5), and the
signature is checked over the signed attributes exactly as received (RFC 5652 §5.4; the
DigiCert 2018 vector's attributes are not in DER order, so a re-encoding would not verify).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stampd.store.errors import ErrorClass, StampdError
from stampd.store.formats import cms as cms_checks
from stampd.store.formats.cms import HASHES, SignatureInvalid, SignedObject
from stampd.store.formats.der import present, short
from stampd.store.formats.tstinfo import TokenFacts, token_facts
from stampd.store.trust import ChainError, validate_tsa_chain

#: Imprint algorithms stampd requests and accepts (reference §1.1: never SHA-1).
IMPRINT_ALGORITHMS = ("sha256", "sha384", "sha512")

_STATUS_NAMES = {
    "granted": 0,
    "granted_with_mods": 1,
    "rejection": 2,
    "waiting": 3,
    "revocation_warning": 4,
    "revocation_notification": 5,
}


class TspParseError(StampdError):
    """Bytes that are not a timestamp response or token."""

    error_class = ErrorClass.PARSE


class TimestampRejected(StampdError):
    """The TSA answered with a PKIStatus of 2 or more and no token (RFC 3161 §2.4.2)."""

    error_class = ErrorClass.REJECTED

    def __init__(self, status: str, fail_info: tuple[str, ...], status_string: str | None) -> None:
        detail = status
        if fail_info:
            detail += f" ({', '.join(fail_info)})"
        if status_string:
            detail += f": {status_string}"
        super().__init__(f"the TSA refused the request: {detail}")
        self.status = status
        self.fail_info = fail_info
        self.status_string = status_string


class TokenInvalid(SignatureInvalid):
    """A timestamp token that does not prove what it claims; ``reason`` is a stable code."""

    error_class = ErrorClass.VERIFY

    def __init__(self, reason: str, message: str, *, chain: ChainError | None = None) -> None:
        super().__init__(reason, message)
        #: For ``reason == "chain"``: the path validation's failure, whose sentence a caller
        #: can complete with where the roots came from and what to do (ChainError.describe).
        self.chain = chain


#: A token as the SignerInfo checks (:mod:`.cms`) name it: §2 items 7-10 raise TokenInvalid.
_TOKEN = SignedObject(
    subject="the token",
    signer="the TSA",
    content_type="tst_info",
    content="TSTInfo",
    ess_rule="RFC 3161 §2.4.2",
    error=TokenInvalid,
)


# --- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimestampRequest:
    """A TimeStampReq as sent: its DER and what the reply must match (§1.1)."""

    der: bytes
    algorithm: str
    digest: bytes
    nonce: int
    policy: str | None


def build_request(
    digest: bytes, algorithm: str, *, policy: str | None = None, nonce: int | None = None
) -> TimestampRequest:
    """A v1 TimeStampReq for ``digest`` with a random 64-bit nonce and certReq TRUE.

    certReq is always TRUE: without it the TSA must leave its certificate out (RFC 3161
    §2.4.1) and the token could not be checked without fetching it elsewhere.
    """
    if algorithm not in IMPRINT_ALGORITHMS:
        raise ValueError(f"unsupported imprint algorithm {algorithm!r}")
    size = HASHES[algorithm]().digest_size
    if len(digest) != size:
        raise ValueError(f"a {algorithm} digest has {size} bytes")
    nonce = secrets.randbits(64) if nonce is None else nonce
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    }
    if policy is not None:
        fields["req_policy"] = policy
    der = tsp.TimeStampReq(fields).dump()
    return TimestampRequest(der=der, algorithm=algorithm, digest=digest, nonce=nonce, policy=policy)


# --- parsing -------------------------------------------------------------------------------


class _TimeStampResp(tsp.TimeStampResp):  # type: ignore[misc]  # asn1crypto is untyped
    # asn1crypto 1.5.1 declares the token mandatory, so every rejection reply fails to parse
    # (wbond/asn1crypto#286); RFC 3161 §2.4.2 makes it absent unless the status is 0 or 1.
    _fields = [  # noqa: RUF012 - asn1crypto's class-level schema
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass(frozen=True, eq=False)
class TimestampToken:
    """A parsed TimeStampToken (CMS SignedData around a TSTInfo) and its facts."""

    content_info: cms.ContentInfo
    facts: TokenFacts
    #: The certificates the token carries (certReq TRUE), in their received order.
    certificates: tuple[x509.Certificate, ...] = field(repr=False)


@dataclass(frozen=True, eq=False)
class TimestampResponse:
    """A granted TimeStampResp: its exact bytes and its token."""

    der: bytes
    status: int
    token: TimestampToken


def parse_response(data: bytes) -> TimestampResponse:
    """A TimeStampResp as received from a TSA (or read from ``FILE.tsr``).

    Raises :class:`TimestampRejected` for status 2-5, :class:`TspParseError` for anything
    that is not a well-formed response with a token (§2 item 1).
    """
    try:
        response = _TimeStampResp.load(data, strict=True)
        info = response["status"]
        status_name = info["status"].native
        token_value = response["time_stamp_token"]
        has_token = present(token_value)
    except (ValueError, TypeError, KeyError) as error:
        raise TspParseError(f"not a timestamp response: {short(error)}") from error
    status = _STATUS_NAMES.get(status_name) if isinstance(status_name, str) else None
    if status is None:
        raise TspParseError(f"not a timestamp response: unknown status {status_name!r}")
    if status >= 2:
        raise TimestampRejected(status_name, *_failure_details(info))
    if not has_token:
        raise TspParseError(f"the response is {status_name!r} but carries no token")
    return TimestampResponse(der=data, status=status, token=_parse_token(token_value))


def parse_token(data: bytes) -> TimestampToken:
    """A bare TimeStampToken (CMS ContentInfo), e.g. one embedded in a signature."""
    try:
        content_info = cms.ContentInfo.load(data, strict=True)
    except (ValueError, TypeError) as error:
        raise TspParseError(f"not a timestamp token: {short(error)}") from error
    return _parse_token(content_info)


def load_timestamp(data: bytes) -> TimestampToken:
    """The token in a TimeStampResp or a bare TimeStampToken, DER or base64 (or PEM-armoured):
    what ``stampd verify --tsr`` accepts from whoever handed the token over."""
    der = data
    if not data.startswith(b"\x30"):
        text = b"".join(line for line in data.split(b"\n") if not line.strip().startswith(b"-----"))
        try:
            der = base64.b64decode(b"".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as error:
            raise TspParseError("neither DER nor base64 timestamp data") from error
    try:
        # A TimeStampResp starts with the PKIStatusInfo SEQUENCE; a ContentInfo with an OID.
        first = core.Sequence.load(der, strict=True)
        first_child = first[0] if len(first) else None
    except (ValueError, TypeError) as error:
        raise TspParseError(f"not a timestamp response or token: {short(error)}") from error
    if isinstance(first_child, core.Sequence) or (
        first_child is not None and getattr(first_child, "tag", None) == 16
    ):
        return parse_response(der).token
    return parse_token(der)


def _failure_details(info: tsp.PKIStatusInfo) -> tuple[tuple[str, ...], str | None]:
    fail_info: tuple[str, ...] = ()
    status_string: str | None = None
    try:
        if present(info["fail_info"]):
            fail_info = tuple(sorted(str(name) for name in info["fail_info"].native))
        if present(info["status_string"]):
            status_string = "; ".join(str(text) for text in info["status_string"].native)
    except (ValueError, TypeError):
        pass  # a malformed detail does not hide the rejection itself
    return fail_info, status_string


def _parse_token(content_info: cms.ContentInfo) -> TimestampToken:
    """§2 item 2: id-signedData around id-ct-TSTInfo, one SignerInfo, TSTInfo v1."""
    try:
        if content_info["content_type"].native != "signed_data":
            raise TspParseError("the token is not CMS SignedData")
        signed = content_info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise TspParseError("the token's content is not a TSTInfo (id-ct-TSTInfo)")
        if len(signed["signer_infos"]) != 1:
            # §2.4.2: "MUST NOT contain any signatures other than the signature of the TSA"
            raise TspParseError(
                f"the token has {len(signed['signer_infos'])} signers; RFC 3161 allows one"
            )
        tst = tsp.TSTInfo.load(_econtent(encap), strict=True)
        if tst["version"].native != "v1":
            raise TspParseError(f"unsupported TSTInfo version {tst['version'].native!r}")
        facts = token_facts(tst)
        certificates = cms_checks.certificates(signed)
    except TspParseError:
        raise
    # InvalidVersion is not a ValueError: a damaged certificate version byte raised it as is.
    except (ValueError, TypeError, KeyError, AttributeError, x509.InvalidVersion) as error:
        raise TspParseError(f"malformed timestamp token: {short(error)}") from error
    return TimestampToken(content_info=content_info, facts=facts, certificates=certificates)


def _econtent(encap: cms.EncapsulatedContentInfo) -> bytes:
    """The eContent OCTET STRING's value octets (what messageDigest is computed over)."""
    content = encap["content"]
    if not present(content):
        raise TspParseError("the token carries no TSTInfo (detached content)")
    return bytes(content)


# --- verification --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VerifiedToken:
    """A token that passed every check of §2 (items 1-13 that apply without the request)."""

    token: TimestampToken
    signer: x509.Certificate
    #: The validated chain, signer first, trust anchor last.
    chain: tuple[x509.Certificate, ...]
    #: The earliest notAfter over the chain: after it, only renewed evidence (RFC 4998) keeps
    #: the token's proof standing (§5).
    chain_not_after: datetime

    @property
    def authority(self) -> str:
        """The TSA as people name it: the signer's common name, else its whole subject."""
        names = self.signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if names:
            return str(names[0].value)
        return self.signer.subject.rfc4514_string()


def verify_token(
    token: TimestampToken,
    *,
    digest: bytes | None,
    anchors: Sequence[x509.Certificate],
    extra_certificates: Sequence[x509.Certificate] = (),
    at: datetime | None = None,
) -> VerifiedToken:
    """Check ``token`` completely (§2 items 2-3, 7-13); raise :class:`TokenInvalid` if not.

    ``digest`` is the data's digest under the token's own imprint algorithm
    (``token.facts.algorithm``), or None to skip the imprint (the caller checked it).
    ``anchors`` are the roots configured for this TSA; roots the token embeds are never
    trusted. ``extra_certificates`` may supply the signer certificate of a token without
    certificates (certReq FALSE). The chain is validated at ``at``, by default genTime.
    """
    try:
        return _verify(token, digest, anchors, extra_certificates, at)
    except TokenInvalid:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        UnsupportedAlgorithm,
    ) as error:
        # Hostile or damaged bytes that parsed but fall apart on a closer look (a mangled key,
        # an attribute of the wrong shape): never valid, and never a crash.
        raise TokenInvalid("malformed", f"malformed timestamp token: {short(error)}") from error


def _verify(
    token: TimestampToken,
    digest: bytes | None,
    anchors: Sequence[x509.Certificate],
    extra_certificates: Sequence[x509.Certificate],
    at: datetime | None,
) -> VerifiedToken:
    facts = token.facts
    if facts.algorithm not in IMPRINT_ALGORITHMS:
        raise TokenInvalid(
            "imprint_algorithm",
            f"the token's imprint uses {facts.algorithm}, which stampd does not accept",
        )
    if digest is not None and digest != facts.hashed_message:
        raise TokenInvalid(
            "imprint_mismatch",
            f"the token's {facts.algorithm} imprint does not match the data (message imprint"
            " mismatch): it was made for other content",
        )
    signed = token.content_info["content"]
    signer_info = signed["signer_infos"][0]
    known = (*token.certificates, *extra_certificates)
    # §2 item 7: the certificate named by the SignerInfo ``sid``.
    signer = cms_checks.signer_certificate(signer_info, known)
    if signer is None:
        raise TokenInvalid(
            "signer_unavailable",
            "signer certificate not available: the token does not carry the TSA's certificate"
            " (it was requested without certReq), so its signature cannot be checked without it",
        )
    # §2 items 8-10: signed attributes, signature, ESSCertID(v2) (RFC 5652, RFC 5035).
    cms_checks.verify_signer_info(
        signer_info, signer, _econtent(signed["encap_content_info"]), _TOKEN
    )
    _check_eku(signer)
    moment = at or facts.gen_time
    intermediates = [cert for cert in known if cert != signer]
    try:
        chain = validate_tsa_chain(signer, intermediates, anchors, moment)
    except ChainError as error:
        raise TokenInvalid("chain", error.describe(), chain=error) from error
    _check_tsa_name(token, signer)
    not_after = min(cert.not_valid_after_utc for cert in chain)
    return VerifiedToken(token=token, signer=signer, chain=chain, chain_not_after=not_after)


def check_reply(
    token: TimestampToken,
    request: TimestampRequest,
    *,
    sent_at: datetime,
    received_at: datetime,
    skew: timedelta = timedelta(minutes=2),
) -> None:
    """§2 items 3-6, at receipt: the reply answers this request, and now.

    The nonce ties the reply to the request (a replayed old token cannot pass), and genTime
    must fall between sending and receiving, widened by the token's accuracy and ``skew``
    (the timeliness check of RFC 3161 §2.2).
    """
    facts = token.facts
    if facts.algorithm != request.algorithm or facts.hashed_message != request.digest:
        raise TokenInvalid(
            "imprint_mismatch", "the token's message imprint is not the one requested"
        )
    if facts.nonce is None:
        raise TokenInvalid("nonce_missing", "the token carries no nonce although one was sent")
    if facts.nonce != request.nonce:
        raise TokenInvalid("nonce_mismatch", "the token's nonce is not the one sent")
    if request.policy is not None and facts.policy != request.policy:
        raise TokenInvalid(
            "policy_mismatch",
            f"the token's policy {facts.policy} is not the requested {request.policy}",
        )
    slack = skew + (facts.accuracy or timedelta(0))
    if not sent_at - slack <= facts.gen_time <= received_at + slack:
        raise TokenInvalid(
            "time_window",
            f"the token's genTime {_when(facts.gen_time)} is outside the request's window"
            f" {_when(sent_at)} - {_when(received_at)} (± {slack.total_seconds():g} s)",
        )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_eku(signer: x509.Certificate) -> None:
    """§2 item 11 (RFC 3161 §2.3): one extended key usage, id-kp-timeStamping, critical.

    The chain validation enforces it too; checked here first for a message that says so."""
    try:
        extension = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        extension = None
    if extension is None or list(extension.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise TokenInvalid(
            "eku",
            "the TSA certificate's extended key usage is not id-kp-timeStamping alone"
            " (RFC 3161 §2.3): it is not a time-stamping certificate",
        )
    if not extension.critical:
        raise TokenInvalid(
            "eku",
            "the TSA certificate's extended key usage is not marked critical (RFC 3161 §2.3)",
        )


def _check_tsa_name(token: TimestampToken, signer: x509.Certificate) -> None:
    """§2 item 13: the ``tsa`` field, if present, names the signer."""
    tst = tsp.TSTInfo.load(_econtent(token.content_info["content"]["encap_content_info"]))
    tsa = tst["tsa"]
    if not present(tsa):
        return
    parsed = asn1_x509.Certificate.load(signer.public_bytes(Encoding.DER))
    if tsa.name == "directory_name":
        if tsa.chosen == parsed.subject:
            return
    else:
        alternatives = parsed.subject_alt_name_value
        if alternatives is not None and any(
            name.name == tsa.name and name.native == tsa.native for name in alternatives
        ):
            return
    raise TokenInvalid(
        "tsa_name",
        f"the token's TSA name {token.facts.tsa_name} is not the signer certificate's",
    )
