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
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from stampd.store.errors import StampdError

#: Debian's bundle of the CAs ca-certificates ships: a TSA without ``trust`` chains to these.
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class TrustError(StampdError):
    """A trust file cannot be read or holds no usable root."""

    error_class = "trust"


class ChainError(Exception):
    """The signer certificate does not chain to the configured roots (message says why)."""


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

    Raises :class:`ChainError` with the validator's reason: no path, an expired or not yet
    valid certificate at ``at``, a wrong EKU on the signer, a weak key, a bad signature.
    """
    if not anchors:
        raise ChainError("no trust anchors configured")
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
        raise ChainError(str(error)) from error
    return tuple(verified.chain)
