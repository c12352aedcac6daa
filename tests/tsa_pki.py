"""A throwaway two-level PKI (root CA -> TSA signer) for local RFC 3161 test peers.

Tests need TSA certificates that are right (to prove a token verifies) and certificates that are
wrong in exactly one way (EKU not critical, an extra purpose, no EKU, expired), so that each
RFC 3161 §2.3 / reference §2 check can be shown to bite. Building them with `cryptography` keeps
the fakes independent of the product code under test and avoids an `openssl ca` database per test.

A "foreign" PKI (same subject names, other keys; the "foreign root embedded" case) is
``make_pki(other_directory, same_name)``: PKIs with one name in different directories never share a
key, so the foreign TSA certificate does not verify under the genuine root.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# 2048 bits: the smallest size cryptography's verifier accepts (`minimum_rsa_modulus`), and about
# five times faster to generate than 3072, which matters when a test module builds several PKIs.
RSA_BITS = 2048
VALIDITY_MARGIN = dt.timedelta(days=1)

_keys: dict[tuple[KeyKind, int], PrivateKey] = {}
# name -> directories already given a PKI of that name, in order; the position picks the key slot.
_slots: dict[str, list[Path]] = {}
_lock = threading.Lock()


def private_key(kind: KeyKind, index: int) -> PrivateKey:
    """The process-wide private key number `index` of a kind, generated on first use.

    RSA key generation costs ~40 ms per key; PKIs of different names reuse the same keys, which is
    harmless because chains are matched by subject name and each PKI has its own names.
    """
    with _lock:
        key = _keys.get((kind, index))
        if key is None:
            if kind == "rsa":
                key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
            else:
                key = ec.generate_private_key(ec.SECP256R1())
            _keys[(kind, index)] = key
        return key


def _slot(name: str, directory: Path) -> int:
    """Key slot for a PKI: distinct for each directory holding a PKI of this name.

    Guarantees the foreign-PKI property (same names, different keys) while letting a rebuild in
    the same directory, or a PKI of another name, reuse keys that were already generated.
    """
    resolved = directory.resolve()
    with _lock:
        seen = _slots.setdefault(name, [])
        if resolved not in seen:
            seen.append(resolved)
        return seen.index(resolved)


@dataclass(frozen=True)
class Pki:
    """A root CA and the TSA certificate it issued, with their PEM files on disk."""

    name: str
    directory: Path
    root_cert: x509.Certificate
    root_key: PrivateKey
    tsa_cert: x509.Certificate
    tsa_key: PrivateKey
    root_pem: Path  # root.pem: the trust anchor to configure
    tsa_pem: Path  # tsa.pem: the signer certificate (e.g. `-untrusted` when a token has none)
    tsa_key_pem: Path  # tsa.key: unencrypted PKCS#8, for `openssl ts -reply`
    chain_pem: Path  # chain.pem: TSA certificate then root

    @property
    def root_der(self) -> bytes:
        """DER of the root certificate (what an embedded `certificates` entry holds)."""
        return self.root_cert.public_bytes(serialization.Encoding.DER)

    @property
    def tsa_der(self) -> bytes:
        """DER of the TSA certificate (what ESSCertID(v2) hashes)."""
        return self.tsa_cert.public_bytes(serialization.Encoding.DER)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stampd tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _serial() -> int:
    return x509.random_serial_number()


def make_pki(
    directory: Path,
    name: str = "Test",
    *,
    tsa_eku_critical: bool = True,
    extra_eku: bool = False,
    no_eku: bool = False,
    tsa_not_before: dt.datetime | None = None,
    tsa_not_after: dt.datetime | None = None,
    key: KeyKind = "rsa",
) -> Pki:
    """Build a root and a TSA certificate and write root.pem, tsa.pem, tsa.key, chain.pem.

    Defaults follow the reference §7 `v3_ca` / `v3_tsa` profiles (a TSA certificate OpenSSL's
    `ts -reply` and `ts -verify` accept). The options each break one RFC 3161 §2.3 requirement:
    `tsa_eku_critical=False`, `extra_eku=True` (adds serverAuth), `no_eku=True`; the validity
    bounds make expired or not-yet-valid signers. The root always covers the TSA validity and
    now, so only the leaf is at fault.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    leaf_from = tsa_not_before or now - VALIDITY_MARGIN
    leaf_to = tsa_not_after or now + dt.timedelta(days=730)
    slot = _slot(name, directory)
    root_key = private_key(key, 2 * slot)
    tsa_key = private_key(key, 2 * slot + 1)
    root_name = _name(f"stampd {name} TSA Root")
    tsa_name = _name(f"stampd {name} TSA 1")

    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_cert = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(_serial())
        .not_valid_before(min(leaf_from, now) - VALIDITY_MARGIN)
        .not_valid_after(max(leaf_to, now) + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(root_ski, critical=False)
        .sign(root_key, hashes.SHA256())
    )

    builder = (
        x509.CertificateBuilder()
        .subject_name(tsa_name)
        .issuer_name(root_name)
        .public_key(tsa_key.public_key())
        .serial_number(_serial())
        .not_valid_before(leaf_from)
        .not_valid_after(leaf_to)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
    )
    if not no_eku:
        purposes = [ExtendedKeyUsageOID.TIME_STAMPING]
        if extra_eku:
            purposes.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=tsa_eku_critical)
    tsa_cert = builder.sign(root_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    root_pem = directory / "root.pem"
    tsa_pem = directory / "tsa.pem"
    tsa_key_pem = directory / "tsa.key"
    chain_pem = directory / "chain.pem"
    root_pem.write_bytes(root_cert.public_bytes(pem))
    tsa_pem.write_bytes(tsa_cert.public_bytes(pem))
    chain_pem.write_bytes(tsa_cert.public_bytes(pem) + root_cert.public_bytes(pem))
    tsa_key_pem.write_bytes(
        tsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Pki(
        name=name,
        directory=directory,
        root_cert=root_cert,
        root_key=root_key,
        tsa_cert=tsa_cert,
        tsa_key=tsa_key,
        root_pem=root_pem,
        tsa_pem=tsa_pem,
        tsa_key_pem=tsa_key_pem,
        chain_pem=chain_pem,
    )
