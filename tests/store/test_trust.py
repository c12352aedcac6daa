"""Trust files: every way one can be wrong is one sentence of ours, never the parser's text."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from stampd.store.trust import SYSTEM_BUNDLE, TrustError, load_anchors, load_certificates
from tests.tsa_pki import Pki, make_pki

# What cryptography's parsers say when they fail.
RAW_LIBRARY_TEXT = ("ParseError", "asn1", "UnexpectedTag", "ShortData", "InvalidLength", "Tag {")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Trust files")


def _key(pki: Pki, encoding: serialization.Encoding, *, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return pki.tsa_key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, encryption)


def _refused(path: Path, data: bytes) -> TrustError:
    path.write_bytes(data)
    with pytest.raises(TrustError) as caught:
        load_anchors(path)
    error = caught.value
    assert not any(text in str(error) for text in RAW_LIBRARY_TEXT), str(error)
    assert error.message.startswith(f"{path}: ")
    return error


def test_a_private_key_is_refused_and_never_parsed_as_roots(tmp_path: Path, pki: Pki) -> None:
    pem = serialization.Encoding.PEM
    der = serialization.Encoding.DER
    for data in (
        _key(pki, pem),
        pki.root_pem.read_bytes() + _key(pki, pem),  # a root with a key appended
        _key(pki, pem, password=b"secret"),  # -----BEGIN ENCRYPTED PRIVATE KEY-----
        pki.tsa_key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),  # -----BEGIN RSA PRIVATE KEY-----
        _key(pki, der),
        _key(pki, der, password=b"secret"),
    ):
        error = _refused(tmp_path / "trust.pem", data)
        assert error.message == f"{tmp_path / 'trust.pem'}: holds a private key"
        assert error.hint is not None
        assert "must hold only the TSA's root certificate(s)" in error.hint
        assert "remove the key" in error.hint and "rotate it" in error.hint


def test_a_leaf_alone_is_no_anchor(tmp_path: Path, pki: Pki) -> None:
    error = _refused(tmp_path / "leaf.pem", pki.tsa_pem.read_bytes())
    assert error.message == (
        f"{tmp_path / 'leaf.pem'}: holds no CA certificate to trust (only a certificate that"
        " cannot sign others, like the TSA's own)"
    )
    error = _refused(tmp_path / "leaf.der", pki.tsa_der)  # the same in DER
    assert "holds no CA certificate" in error.message


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    path = tmp_path / "trust.pem"
    assert _refused(path, b"").message == f"{path}: is empty"
    assert _refused(path, b"\n\n").message == f"{path}: is empty"
    assert _refused(path, b"\x01" + os.urandom(300)).message == (
        f"{path}: not a PEM or DER certificate file (no -----BEGIN CERTIFICATE----- block)"
    )
    assert _refused(path, b"hello\n").message.startswith(f"{path}: not a PEM or DER")


def test_a_damaged_or_cut_off_certificate(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "trust.pem"
    root = pki.root_pem.read_bytes()
    damaged = root.replace(root.splitlines()[3], b"A" * 64)
    assert _refused(path, root + damaged).message == (
        f"{path}: certificate 2 of 2 is damaged (not a valid X.509 certificate)"
    )
    assert _refused(path, root[: len(root) // 2]).message == (
        f"{path}: a certificate is cut off (-----BEGIN CERTIFICATE----- without its"
        " -----END CERTIFICATE----- line)"
    )


def test_der_that_is_not_a_certificate(tmp_path: Path, pki: Pki) -> None:
    public = pki.root_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert _refused(tmp_path / "x.der", public).message == (
        f"{tmp_path / 'x.der'}: holds DER data that is not an X.509 certificate"
    )


def test_pem_without_a_certificate_says_what_it_holds(tmp_path: Path, pki: Pki) -> None:
    public = pki.root_cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert _refused(tmp_path / "x.pem", public).message == (
        f"{tmp_path / 'x.pem'}: holds no certificate (it holds PEM PUBLIC KEY)"
    )


def test_a_directory_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match=r": is not a regular file \("):
        load_certificates(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TrustError, match=r": is not a regular file \("):
        load_certificates(fifo)  # without O_NONBLOCK this would wait for a writer forever


def test_roots_load_from_pem_and_der(tmp_path: Path, pki: Pki) -> None:
    assert load_anchors(pki.root_pem) == (pki.root_cert,)
    assert load_anchors(pki.chain_pem) == (pki.root_cert,)  # the leaf is left out
    der = tmp_path / "root.der"
    der.write_bytes(pki.root_der)
    assert load_anchors(der) == (pki.root_cert,)


@pytest.mark.skipif(not SYSTEM_BUNDLE.exists(), reason="the system CA bundle is not installed")
def test_the_system_bundle_loads_without_library_warnings() -> None:
    # Debian's bundle holds roots with negative serial numbers, on which cryptography warns;
    # such a warning on stderr is a library message the operator can do nothing about.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_anchors(SYSTEM_BUNDLE)) > 10
