"""Trust anchors and the X.509 path validation of TSA signer certificates.

reference/rfc3161.md §2 items 11-12 and §2.1: the signer's certificate must carry exactly one
extended key usage, id-kp-timeStamping, marked critical (RFC 3161 §2.3), and chain — through
the certificates the token carries, used only as untrusted intermediates — to the roots the
operator configured for that TSA, at the time the token claims (genTime). The chain building
and signature checks are ``cryptography.x509.verification``; this module only says which
policy applies, because the web-PKI defaults refuse real TSA chains (DigiCert's intermediate
has a non-critical timeStamping EKU, FreeTSA's root a non-critical basicConstraints).
"""

from __future__ import annotations

import binascii
import os
import re
import stat
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from stampd.store.errors import ErrorClass, StampdError

#: Debian's bundle of the CAs ca-certificates ships: a TSA without ``trust`` chains to these.
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class TrustError(StampdError):
    """A trust file cannot be read or holds no usable root."""

    error_class = ErrorClass.TRUST


#: Why a TSA's chain failed, as :attr:`ChainError.problem` (what the caller can advise on).
ChainProblem = Literal["no_roots", "no_path", "expired", "not_yet_valid", "eku", "refused"]


def display_name(name: x509.Name) -> str:
    """A certificate name as people read it: CN, OU and O (RFC 4514 order reversed).

    The whole RFC 4514 string of a real TSA runs to hundreds of characters (FreeTSA's holds
    an e-mail address and a sentence of description); these three identify it. A name with
    none of them is shown whole.
    """
    labels = (
        ("CN", NameOID.COMMON_NAME),
        ("OU", NameOID.ORGANIZATIONAL_UNIT_NAME),
        ("O", NameOID.ORGANIZATION_NAME),
    )
    parts = [
        f"{label}={value}"
        for label, oid in labels
        for attribute in name.get_attributes_for_oid(oid)
        # Only a BitString-typed attribute (none of these) has bytes; shown escaped if so.
        for value in [
            attribute.value if isinstance(attribute.value, str) else repr(attribute.value)
        ]
    ]
    return ", ".join(parts) if parts else name.rfc4514_string()


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ChainError(Exception):
    """The signer certificate does not chain to the configured roots.

    ``problem`` says why in a word a caller can act on; :meth:`describe` says it in a sentence,
    into which the caller can put where the roots came from and what to do about it (only it
    knows: ``--trust ROOT.pem`` on the command line, ``timestamp.tsa[i].trust`` in the daemon).
    """

    def __init__(
        self,
        problem: ChainProblem,
        *,
        tsa: str,
        detail: str,
        leads_to: str | None = None,
        namesake: bool = False,
    ) -> None:
        self.problem: ChainProblem = problem
        #: The TSA certificate's name (:func:`display_name`).
        self.tsa = tsa
        #: For expiry, EKU and other refusals: the sentence that says what is wrong.
        self.detail = detail
        #: For ``no_path``: the name of the root the TSA's chain leads up to, when known.
        self.leads_to = leads_to
        #: For ``no_path``: a root of that name is among the roots, but another certificate
        #: (another key) than the one that signed the chain: a foreign chain or a reissued root.
        self.namesake = namesake
        super().__init__(self.describe())

    @property
    def missing_root(self) -> bool:
        """Whether adding the TSA's root certificate to the roots would fix this."""
        return self.problem in ("no_roots", "no_path")

    def describe(self, *, roots: str | None = None, remedy: str | None = None) -> str:
        """The sentence: ``roots`` names where the roots came from, ``remedy`` says what to
        do when the TSA's root is missing from them (it is left out for other problems)."""
        if not self.missing_root:
            return self.detail
        given = "the trust roots given" + (f" ({roots})" if roots else "")
        if self.problem == "no_roots":
            text = f'there are no trust roots to check the TSA "{self.tsa}" against'
        else:
            text = f'the TSA "{self.tsa}" does not chain to a root in {given}'
        if self.namesake:
            text += (
                f'; a root named "{self.leads_to}" is among them, but not the one that signed'
                " the TSA's chain (same name, another key)"
            )
        elif self.leads_to:
            text += f'; its chain leads up to "{self.leads_to}"'
        return f"{text}: {remedy}" if remedy else text


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)
# RFC 7468 §2: any PEM block's label; `-----BEGIN (RSA |EC |ENCRYPTED |OPENSSH )?PRIVATE KEY`
# is a key, whatever else the file holds.
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
#: A trust file is a few certificates; the whole Debian bundle is about 220 KB.
MAX_TRUST_FILE_BYTES = 8 << 20

_CERTIFICATES_HINT = "give the PEM file of the TSA's root certificate(s)"
_DAMAGED_HINT = "replace the file with an intact copy of the root certificate(s)"
_PRIVATE_KEY_HINT = (
    "a trust file must hold only the TSA's root certificate(s); remove the key, and rotate it"
    " if anyone else could read the file"
)


def load_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle, or the one certificate of a DER file.

    Raises :class:`TrustError` with a sentence of ours, never the parser's message: a file
    that cannot be read, is empty, holds a private key, holds no certificate, or holds a
    damaged one.
    """
    data = _read_trust_file(path)
    if not data.strip():
        raise TrustError(f"{path}: is empty", hint=_CERTIFICATES_HINT)
    labels = [label.decode("ascii") for label in _PEM_LABEL.findall(data)]
    if any(label.endswith("PRIVATE KEY") for label in labels) or _is_der_private_key(data):
        raise TrustError(f"{path}: holds a private key", hint=_PRIVATE_KEY_HINT)
    blocks = _PEM_CERTIFICATE.findall(data)
    if labels.count("CERTIFICATE") > len(blocks):
        raise TrustError(
            f"{path}: a certificate is cut off (-----BEGIN CERTIFICATE----- without its"
            " -----END CERTIFICATE----- line)",
            hint=_DAMAGED_HINT,
        )
    if not blocks and labels:
        found = ", ".join(sorted(set(labels)))
        raise TrustError(
            f"{path}: holds no certificate (it holds PEM {found})", hint=_CERTIFICATES_HINT
        )
    if not blocks:
        return (_der_certificate(path, data),)
    certificates = []
    for number, block in enumerate(blocks, start=1):
        try:
            certificates.append(_parse_der(binascii.a2b_base64(block)))
        except (ValueError, binascii.Error):
            raise TrustError(
                f"{path}: certificate {number} of {len(blocks)} is damaged"
                " (not a valid X.509 certificate)",
                hint=_DAMAGED_HINT,
            ) from None
    return tuple(certificates)


def _read_trust_file(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO named as trust must not hang the daemon's start.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            os.close(fd)
            raise
        if not regular:
            os.close(fd)
            raise TrustError(
                f"{path}: is not a regular file", hint="point it at a PEM certificate file"
            )
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_TRUST_FILE_BYTES + 1)
    except OSError as error:
        raise TrustError(
            f"{path}: cannot read: {error.strerror}",
            hint="check the path and that this user may read it",
        ) from error
    if len(data) > MAX_TRUST_FILE_BYTES:
        raise TrustError(
            f"{path}: larger than 8 MiB, which is not a file of root certificates",
            hint=_CERTIFICATES_HINT,
        )
    return data


def _parse_der(data: bytes) -> x509.Certificate:
    with warnings.catch_warnings():
        # Certificates in the system bundle with, e.g., a negative serial number make
        # cryptography warn on stderr; the operator can do nothing about it, so it stays quiet.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_der_x509_certificate(data)


def _der_certificate(path: Path, data: bytes) -> x509.Certificate:
    try:
        return _parse_der(data)
    except ValueError:
        pass
    # X.690 §8.9: every DER certificate starts with a SEQUENCE (0x30).
    if data[:1] == b"\x30":
        raise TrustError(
            f"{path}: holds DER data that is not an X.509 certificate", hint=_CERTIFICATES_HINT
        ) from None
    raise TrustError(
        f"{path}: not a PEM or DER certificate file (no -----BEGIN CERTIFICATE----- block)",
        hint=_CERTIFICATES_HINT,
    ) from None


def _is_der_private_key(data: bytes) -> bool:
    if data[:1] != b"\x30":
        return False
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:
        return True  # an encrypted PKCS#8 key: a key nonetheless
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def is_ca(certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` asserts basicConstraints cA."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def load_anchors(path: Path) -> tuple[x509.Certificate, ...]:
    """The CA certificates of a trust file: the roots a TSA's chain must reach.

    A leaf in the file is left out: the validator treats every entry of its store as an
    anchor, so a TSA leaf there would "validate" by itself, without its issuer (reference
    §2.1; ``sigstage_ts_chain.pem`` holds the leaf and its root).
    """
    certificates = load_certificates(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            anchors = tuple(cert for cert in certificates if is_ca(cert))
    except ValueError:  # extensions are parsed lazily, here: a malformed one raises
        raise TrustError(
            f"{path}: holds a certificate with malformed extensions", hint=_DAMAGED_HINT
        ) from None
    if not anchors:
        what = "a certificate" if len(certificates) == 1 else f"{len(certificates)} certificates"
        raise TrustError(
            f"{path}: holds no CA certificate to trust (only {what} that cannot sign others,"
            " like the TSA's own)",
            hint="point it at the root certificate of the TSA's chain",
        )
    return anchors


def _timestamping_only(
    _policy: object, _certificate: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    # RFC 3161 §2.3: "The corresponding certificate MUST contain only one instance of the
    # extended key usage field extension ... with KeyPurposeID having value id-kp-timeStamping."
    if eku is None or list(eku) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise ValueError("the extended key usage must be id-kp-timeStamping alone")


def _signer_policy() -> ExtensionPolicy:
    return ExtensionPolicy.permit_all().require_present(
        x509.ExtendedKeyUsage, Criticality.CRITICAL, _timestamping_only
    )


def _ca_policy() -> ExtensionPolicy:
    # A CA must assert cA (the builder refuses a CA policy that does not require it); its
    # criticality is not enforced, which real TSA roots need (FreeTSA).
    return ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None
    )


def validate_tsa_chain(
    signer: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: datetime,
) -> tuple[x509.Certificate, ...]:
    """The validated chain from ``signer`` to one of ``anchors`` at time ``at``.

    Raises :class:`ChainError` with the validator's reason in words: no path to a root, a
    certificate expired or not yet valid at ``at``, a wrong EKU on the signer, or another
    refusal (a weak key, a bad signature) in the validator's own words.
    """
    tsa = display_name(signer.subject)
    if not anchors:
        raise ChainError("no_roots", tsa=tsa, detail="no trust roots given")
    try:
        verifier = (
            PolicyBuilder()
            .store(Store(list(anchors)))
            .time(at)
            .extension_policies(ca_policy=_ca_policy(), ee_policy=_signer_policy())
            .build_client_verifier()
        )
        verified = verifier.verify(signer, list(intermediates))
    except (VerificationError, ValueError) as error:
        raise _explain(str(error), signer, intermediates, anchors, at) from error
    return tuple(verified.chain)


def _issuer_path(
    signer: x509.Certificate, pool: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """The certificates from ``signer`` upwards, each one's issuer found by name in ``pool``.

    Only to explain a failure (the validator does not say which certificate it meant); the
    validation itself is the validator's.
    """
    path = [signer]
    while len(path) <= len(pool) and path[-1].issuer != path[-1].subject:
        issuer = next((c for c in pool if c.subject == path[-1].issuer and c not in path), None)
        if issuer is None:
            break
        path.append(issuer)
    return path


# cryptography.x509.verification's reasons (cryptography 44-46, src/rust/.../verify):
# "candidates exhausted: ..." when no path reaches a root (no issuer, a signature that does
# not match, or the depth limit), "cert is not valid at validation time" for a validity
# period, "invalid extension: 2.5.29.37 ..." or our _timestamping_only for the EKU.
_NO_PATH = "candidates exhausted"
_VALIDITY = "not valid at validation time"
_EKU_MARKERS = ("2.5.29.37", "extended key usage")


def _explain(
    reason: str,
    signer: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: datetime,
) -> ChainError:
    """The validator's ``reason`` as a :class:`ChainError` with a sentence people can act on."""
    tsa = display_name(signer.subject)
    if _NO_PATH in reason:
        top = _issuer_path(signer, intermediates)[-1]
        return ChainError(
            "no_path",
            tsa=tsa,
            detail=reason,
            leads_to=display_name(top.issuer),
            namesake=any(anchor.subject == top.issuer for anchor in anchors),
        )
    if _VALIDITY in reason:
        for certificate in _issuer_path(signer, [*intermediates, *anchors]):
            which = (
                f'the TSA certificate "{tsa}"'
                if certificate is signer
                else f'the certificate "{display_name(certificate.subject)}" in the TSA\'s chain'
            )
            if at > certificate.not_valid_after_utc:
                return ChainError(
                    "expired",
                    tsa=tsa,
                    detail=f"{which} had expired at {_utc(at)}"
                    f" (valid until {_utc(certificate.not_valid_after_utc)})",
                )
            if at < certificate.not_valid_before_utc:
                return ChainError(
                    "not_yet_valid",
                    tsa=tsa,
                    detail=f"{which} was not yet valid at {_utc(at)}"
                    f" (valid from {_utc(certificate.not_valid_before_utc)})",
                )
    if any(marker in reason for marker in _EKU_MARKERS):
        return ChainError(
            "eku",
            tsa=tsa,
            detail=f'the TSA certificate "{tsa}" is not a time-stamping certificate: its'
            " extended key usage must be id-kp-timeStamping alone, marked critical"
            " (RFC 3161 §2.3)",
        )
    # Another refusal (weak key, bad signature on a certificate, basicConstraints): the
    # validator's words, without its Python repr of the certificate.
    words = reason.removeprefix("validation failed: ").split(" (encountered processing")[0]
    return ChainError(
        "refused",
        tsa=tsa,
        detail=f'the TSA certificate "{tsa}" fails X.509 path validation at {_utc(at)}: {words}',
    )
