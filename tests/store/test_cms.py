"""store/formats/cms.py: the RFC 5652 SignerInfo checks, as another format than RFC 3161 uses them.

The checks take their wording and their error type from the caller (a timestamp token's are in
tests/store/test_tsp.py and tests/evidence/test_fake_tsa.py); here a "seal" with its own error
class goes through them, on SignerInfos a local fake TSA signs with a throwaway PKI.
"""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import cms as asn1_cms

from stampd.store.formats import cms, tsp
from stampd.store.formats.cms import SignatureInvalid, SignedObject
from tests.fake_tsa import FakeTsa, Mode
from tests.tsa_pki import Pki, make_pki


class SealInvalid(SignatureInvalid):
    """What a second CMS format would raise."""


SEAL = SignedObject(
    subject="the seal",
    signer="the signer",
    # The fake TSA's SignerInfos sign a TSTInfo; a CAdES seal's would name id-data.
    content_type="tst_info",
    content="signed content",
    ess_rule="CAdES (ETSI EN 319 122-1)",
    error=SealInvalid,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), name="cms")


def _signed(pki: Pki, mode: Mode = "ok") -> tuple[asn1_cms.SignedData, bytes]:
    """SignedData from the fake TSA, and the eContent its messageDigest covers."""
    request = tsp.build_request(hashlib.sha256(b"data").digest(), "sha256")
    token = tsp.parse_response(FakeTsa(pki).build_reply(request.der, mode)).token
    signed = token.content_info["content"]
    return signed, bytes(signed["encap_content_info"]["content"])


def test_a_good_signer_info_passes_and_gives_its_attributes(pki: Pki) -> None:
    signed, content = _signed(pki)
    certificates = cms.certificates(signed)
    assert set(certificates) == {pki.tsa_cert, pki.root_cert}
    signer_info = signed["signer_infos"][0]
    signer = cms.signer_certificate(signer_info, certificates)
    assert signer == pki.tsa_cert
    attributes = cms.verify_signer_info(signer_info, signer, content, SEAL)
    assert {"content_type", "message_digest", "signing_certificate_v2"} <= set(attributes)


def test_the_signer_is_found_by_sid_or_not_at_all(pki: Pki) -> None:
    signed, _content = _signed(pki)
    signer_info = signed["signer_infos"][0]
    assert cms.signer_certificate(signer_info, [pki.root_cert]) is None
    assert cms.signer_certificate(signer_info, []) is None


@pytest.mark.parametrize(
    ("mode", "reason", "message"),
    [
        (
            "bad_signature",
            "signature",
            "the signer's signature does not verify with its certificate",
        ),
        ("no_ess", "ess_missing", "the seal has no signing-certificate attribute (ESSCertID)"),
        ("wrong_ess", "ess_mismatch", "names another certificate than the signer's"),
    ],
)
def test_failures_use_the_callers_error_and_words(
    pki: Pki, mode: Mode, reason: str, message: str
) -> None:
    signed, content = _signed(pki, mode)
    with pytest.raises(SealInvalid) as caught:
        cms.verify_signer_info(signed["signer_infos"][0], pki.tsa_cert, content, SEAL)
    assert caught.value.reason == reason
    assert message in caught.value.message
    assert caught.value.error_class == "verify"
    assert caught.value.to_dict()["reason"] == reason
    if mode == "no_ess":
        assert "which CAdES (ETSI EN 319 122-1) requires" in caught.value.message


def test_other_content_than_the_signed_one_is_a_message_digest_mismatch(pki: Pki) -> None:
    signed, content = _signed(pki)
    with pytest.raises(SealInvalid) as caught:
        cms.verify_signer_info(signed["signer_infos"][0], pki.tsa_cert, content + b"x", SEAL)
    assert caught.value.reason == "message_digest"
    assert (
        caught.value.message == "the signed messageDigest does not match the seal's signed content"
    )


def test_a_content_type_other_than_the_expected_one_is_refused(pki: Pki) -> None:
    signed, content = _signed(pki)
    expecting_data = SignedObject("the seal", "the signer", "data", "id-data", "CAdES", SealInvalid)
    with pytest.raises(SealInvalid, match="missing or not id-data") as caught:
        cms.verify_signer_info(signed["signer_infos"][0], pki.tsa_cert, content, expecting_data)
    assert caught.value.reason == "signed_attributes"


def test_without_an_error_type_the_checks_raise_signature_invalid(pki: Pki) -> None:
    signed, content = _signed(pki, "bad_signature")
    plain = SignedObject("the seal", "the signer", "tst_info", "TSTInfo", "CAdES")
    with pytest.raises(SignatureInvalid) as caught:
        cms.verify_signer_info(signed["signer_infos"][0], pki.tsa_cert, content, plain)
    assert type(caught.value) is SignatureInvalid


def test_a_token_error_is_a_signature_error() -> None:
    """One ``except SignatureInvalid`` covers every CMS format; tokens keep their own class."""
    assert issubclass(tsp.TokenInvalid, SignatureInvalid)
    assert tsp.TokenInvalid("x", "y").error_class == "verify"
