"""RFC 5652 SignerInfo checks, shared by every CMS signature stampd verifies.

A timestamp token (``.tsr``, RFC 3161) and a CAdES seal (``.p7s``) are both CMS SignedData;
what makes a SignerInfo hold is the same for both, so it is checked here once: the signer
certificate named by ``sid`` (§5.3), the digest algorithm, the signed attributes (§5.3: each
type once, one value), contentType and messageDigest (§11.1, §11.2), CMS algorithm protection
(RFC 6211), the signature over the signed attributes exactly as received (§5.4; RSA PKCS #1
v1.5, RSASSA-PSS, ECDSA, DSA, EdDSA), and the signing-certificate attribute (ESSCertID,
RFC 2634 §5.4; ESSCertIDv2, RFC 5035). What is particular to one format (RFC 3161's EKU and
TSA name, CAdES' signing time) stays in that format's module.

Each failure raises the caller's error type — :class:`SignatureInvalid` or a subclass such as
:class:`stampd.store.formats.tsp.TokenInvalid` — with a stable ``reason``, worded with the
names :class:`SignedObject` gives the signed object and its signer ("the TSA's signature does
not verify …").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import algos, cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from stampd.store.errors import ErrorClass, StampdError
from stampd.store.formats.der import present, short

#: Digest algorithms by asn1crypto's name.
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,  # only where a standard fixes it: ESSCertID v1 (RFC 2634 §5.4.1)
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
#: Digest algorithms accepted for a signature (SignerInfo digestAlgorithm).
_SIGNATURE_DIGESTS = ("sha224", "sha256", "sha384", "sha512")


class SignatureInvalid(StampdError):
    """A CMS signature that does not prove what it claims; ``reason`` is a stable code."""

    error_class = ErrorClass.VERIFY

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "reason": self.reason}


@dataclass(frozen=True)
class SignedObject:
    """What a SignerInfo signs, as the checks name it in their messages and errors."""

    #: The signed object: "the token".
    subject: str
    #: Its signer: "the TSA".
    signer: str
    #: The eContentType the signed contentType attribute must name (asn1crypto's name).
    content_type: str
    #: That content as messages name it: "TSTInfo".
    content: str
    #: The rule that makes the signing-certificate attribute mandatory: "RFC 3161 §2.4.2".
    ess_rule: str
    #: What the checks raise: :class:`SignatureInvalid` or a subclass of the format's own.
    error: type[SignatureInvalid] = SignatureInvalid


def signer_certificate(
    signer_info: cms.SignerInfo, certificates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The certificate the SignerInfo's ``sid`` names (RFC 5652 §5.3), or None when absent."""
    sid = signer_info["sid"]
    for certificate in certificates:
        parsed = asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            if (
                parsed.serial_number == wanted["serial_number"].native
                and parsed.issuer == wanted["issuer"]
            ):
                return certificate
        elif sid.name == "subject_key_identifier" and parsed.key_identifier == sid.chosen.native:
            return certificate
    return None


def certificates(signed_data: cms.SignedData) -> tuple[x509.Certificate, ...]:
    """The certificates SignedData carries (RFC 5652 §5.1), in their received order."""
    found = []
    if not present(signed_data["certificates"]):
        return ()
    for choice in signed_data["certificates"]:
        if choice.name == "certificate":
            # dump() of an unmodified value is the received bytes: the certificate as signed.
            found.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    return tuple(found)


def verify_signer_info(
    signer_info: cms.SignerInfo,
    signer: x509.Certificate,
    content: bytes,
    signed: SignedObject,
) -> Mapping[str, Any]:
    """Every check of the module docstring but the certificate lookup, in that order; the
    signed attributes by name. ``content`` is what messageDigest covers: the eContent value
    octets, or the detached data of a seal."""
    digest_name = signature_digest(signer_info, signed)
    attributes = signed_attributes(signer_info, signed)
    check_content_type(attributes, signed)
    check_message_digest(attributes, content, digest_name, signed)
    check_algorithm_protection(attributes, signer_info, signed)
    check_signature(signer_info, signer, digest_name, signed)
    check_ess(attributes, signer, signed)
    return attributes


def signature_digest(signer_info: cms.SignerInfo, signed: SignedObject) -> str:
    """The SignerInfo's digest algorithm, if it is one stampd accepts."""
    name = signer_info["digest_algorithm"]["algorithm"].native
    if name not in _SIGNATURE_DIGESTS:
        raise signed.error(
            "unsupported_algorithm",
            f"{signed.signer} signed with digest {name}, which is not accepted",
        )
    return str(name)


def signed_attributes(signer_info: cms.SignerInfo, signed: SignedObject) -> Mapping[str, Any]:
    """Signed attributes present; each type once, by name (or dotted OID)."""
    attributes = signer_info["signed_attrs"]
    if not present(attributes) or len(attributes) == 0:
        raise signed.error("signed_attributes", f"{signed.subject} has no signed attributes")
    found: dict[str, Any] = {}
    for attribute in attributes:
        name = attribute["type"].native
        values = attribute["values"]
        if name in found or len(values) != 1:
            # RFC 5652 §5.3: each of these attributes has exactly one value, once.
            raise signed.error(
                "signed_attributes", f"the signed attribute {name} is repeated or multi-valued"
            )
        found[name] = values[0]
    return found


def check_content_type(attributes: Mapping[str, Any], signed: SignedObject) -> None:
    """RFC 5652 §11.1: the signed contentType names the content that was signed."""
    value = attributes.get("content_type")
    if value is None or value.native != signed.content_type:
        raise signed.error(
            "signed_attributes",
            f"the signed contentType attribute is missing or not {signed.content}",
        )


def check_message_digest(
    attributes: Mapping[str, Any], content: bytes, digest_name: str, signed: SignedObject
) -> None:
    """RFC 5652 §11.2: messageDigest is the digest of the content under the SignerInfo's
    digest algorithm."""
    # RFC 5652 §5.4: messageDigest is the SignerInfo digest of the eContent value octets —
    # not the imprint algorithm (the sigstage SHA-384/512 tokens are signed with SHA-256).
    value = attributes.get("message_digest")
    if value is None:
        raise signed.error("signed_attributes", "the signed messageDigest attribute is missing")
    if hashlib.new(digest_name, content).digest() != value.native:
        raise signed.error(
            "message_digest",
            f"the signed messageDigest does not match {signed.subject}'s {signed.content}",
        )


def check_algorithm_protection(
    attributes: Mapping[str, Any], signer_info: cms.SignerInfo, signed: SignedObject
) -> None:
    """RFC 6211 §2: if present, its algorithms must be the SignerInfo's."""
    protection = attributes.get("cms_algorithm_protection")
    if protection is None:
        return
    digest_ok = (
        protection["digest_algorithm"]["algorithm"].dotted
        == signer_info["digest_algorithm"]["algorithm"].dotted
    )
    signature = protection["signature_algorithm"]
    signature_ok = (
        not present(signature)
        or signature["algorithm"].dotted == signer_info["signature_algorithm"]["algorithm"].dotted
    )
    if not (digest_ok and signature_ok):
        raise signed.error(
            "algorithm_protection",
            "the CMSAlgorithmProtection attribute names other algorithms than the signature",
        )


def check_signature(
    signer_info: cms.SignerInfo, signer: x509.Certificate, digest: str, signed: SignedObject
) -> None:
    """The signature over the signed attributes exactly as received (RFC 5652 §5.4)."""
    received = signer_info["signed_attrs"].dump()
    # RFC 5652 §5.4: the signature covers the DER of "SET OF", not the [0] IMPLICIT tag.
    signed_bytes = b"\x31" + received[1:]
    signature = signer_info["signature"].native
    algorithm = signer_info["signature_algorithm"]
    hash_algorithm = HASHES[digest]()
    key = signer.public_key()
    try:
        kind = algorithm.signature_algo
    except ValueError as error:
        raise signed.error(
            "unsupported_algorithm", f"unsupported signature algorithm: {short(error)}"
        ) from error
    try:
        if kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_bytes, padding.PKCS1v15(), hash_algorithm)
        elif kind == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_bytes, _pss_padding(algorithm, signed), hash_algorithm)
        elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed_bytes, ec.ECDSA(hash_algorithm))
        elif kind == "dsa" and isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, signed_bytes, hash_algorithm)
        elif kind in ("ed25519", "ed448") and isinstance(
            key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
        ):
            key.verify(signature, signed_bytes)
        else:
            raise signed.error(
                "unsupported_algorithm",
                f"signature algorithm {kind} does not fit {signed.signer} certificate's key",
            )
    except InvalidSignature as error:
        raise signed.error(
            "signature", f"{signed.signer}'s signature does not verify with its certificate"
        ) from error


def _pss_padding(algorithm: algos.SignedDigestAlgorithm, signed: SignedObject) -> padding.PSS:
    params = algorithm["parameters"]
    mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
    if mgf_hash not in HASHES:
        raise signed.error("unsupported_algorithm", f"unsupported PSS mask hash {mgf_hash}")
    return padding.PSS(
        mgf=padding.MGF1(HASHES[mgf_hash]()), salt_length=int(params["salt_length"].native)
    )


def check_ess(
    attributes: Mapping[str, Any], signer: x509.Certificate, signed: SignedObject
) -> None:
    """The signing-certificate attribute names the signer (RFC 2634 §5.4, RFC 5035)."""
    der = signer.public_bytes(Encoding.DER)
    if "signing_certificate_v2" in attributes:
        first = attributes["signing_certificate_v2"]["certs"][0]
        algorithm = first["hash_algorithm"]["algorithm"].native  # DEFAULT sha256
        if algorithm not in HASHES or algorithm == "sha1":
            raise signed.error(
                "ess_mismatch", f"ESSCertIDv2 uses {algorithm}, which is not accepted"
            )
        expected = hashlib.new(algorithm, der).digest()
    elif "signing_certificate" in attributes:
        first = attributes["signing_certificate"]["certs"][0]
        # ESSCertID v1 is SHA-1 by definition (RFC 2634 §5.4.1); it identifies, not secures.
        expected = hashlib.sha1(der, usedforsecurity=False).digest()
    else:
        raise signed.error(
            "ess_missing",
            f"{signed.subject} has no signing-certificate attribute (ESSCertID), which"
            f" {signed.ess_rule} requires: the signer certificate is not bound to the signature",
        )
    if first["cert_hash"].native != expected:
        raise signed.error(
            "ess_mismatch",
            "the signing-certificate attribute (ESSCertID) names another certificate than"
            " the signer's",
        )
    issuer_serial = first["issuer_serial"]
    if not present(issuer_serial):
        return
    parsed = asn1_x509.Certificate.load(der)
    names = [name.chosen for name in issuer_serial["issuer"] if name.name == "directory_name"]
    if issuer_serial["serial_number"].native != parsed.serial_number or not any(
        name == parsed.issuer for name in names
    ):
        raise signed.error(
            "ess_mismatch", "the ESSCertID issuerSerial does not name the signer certificate"
        )
