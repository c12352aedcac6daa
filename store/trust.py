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

import base64
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
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


def load_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle, or the one certificate of a DER file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TrustError(
            f"{path}: cannot read: {error.strerror}",
            hint="check the path and that this user may read it",
        ) from error
    try:
        blocks = _PEM_CERTIFICATE.findall(data)
        if blocks:
            return tuple(x509.load_der_x509_certificate(base64.b64decode(b)) for b in blocks)
        return (x509.load_der_x509_certificate(data),)
    except ValueError as error:
        raise TrustError(
            f"{path}: not a PEM or DER certificate file ({error})",
            hint="give a file of PEM certificates (-----BEGIN CERTIFICATE-----)",
        ) from error


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
    anchors = tuple(cert for cert in load_certificates(path) if is_ca(cert))
    if not anchors:
        raise TrustError(
            f"{path}: holds no CA certificate to trust",
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
