"""store/formats/tsp.py against real TSAs' tokens (../shared/vectors/tsr, read in place).

Each vector must reach the outcome its README gives; the checks that need a misbehaving TSA
(bad signature, missing or wrong ESSCertID, EKU, expired or foreign certificates) are in
tests/evidence/test_fake_tsa.py, against tokens a local fake TSA makes on demand.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import tsp as asn1_tsp
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from stampd.store.errors import StampdError
from stampd.store.formats import tsp
from stampd.store.formats.tsp import TimestampRejected, TokenInvalid, TspParseError
from stampd.store.trust import TrustError, is_ca, load_anchors
from tests.conftest import require_tool, shared_vector_names, shared_vectors

DIGICERT_ROOT = Path("/etc/ssl/certs/DigiCert_Assured_ID_Root_CA.pem")
#: The FreeTSA vector's imprint: SHA-512 of these 4 bytes (vectors README).
FREETSA_DATA = b"test"


def _vector(name: str) -> Path:
    """A real TSA's file, read in place; the test skips in a lone clone (tests/conftest.py)."""
    return shared_vectors("tsr") / name


def _anchor(name: str) -> Path:
    if name == "digicert":
        if not DIGICERT_ROOT.exists():
            if os.environ.get("STAMPD_REQUIRE_INTEROP") == "1":
                pytest.fail(f"{DIGICERT_ROOT} missing: .ci/run must install ca-certificates")
            pytest.skip(f"{DIGICERT_ROOT} missing (Debian ca-certificates)")
        return DIGICERT_ROOT
    return _vector(name)


def _data(name: str | None) -> bytes:
    return FREETSA_DATA if name is None else _vector(name).read_bytes()


# vector, data, anchor, genTime, earliest notAfter in the chain, authority
VALID = [
    (
        "globalsign-g4_2021_notation.resp.tsr",
        "data_notation.txt",
        "globalsign-root-r3.crt.pem",
        "2021-09-18T11:54:34",
        "2029-03-18",
        "Globalsign TSA for Advanced - G4",
    ),
    (
        "globalsign-g4_2021_notation.token.p7s",
        "data_notation.txt",
        "globalsign-root-r3.crt.pem",
        "2021-09-17T14:09:10",
        "2029-03-18",
        "Globalsign TSA for Advanced - G4",
    ),
    (
        "digicert_2018_hello-nl.resp.tsr",
        "data_hello-nl.txt",
        "digicert",
        "2018-05-09T18:48:18",
        "2028-01-18",
        "DigiCert SHA2 Timestamp Responder",
    ),
    (
        "freetsa_2024_sha512.resp.tsr",
        None,
        "freetsa_cacert.pem",
        "2024-04-09T05:29:39",
        "2026-03-11",
        "www.freetsa.org",
    ),
    *[
        (
            f"sigstage_2025_hello_{alg}.resp.tsr",
            "data_hello.txt",
            "sigstage_ts_chain.pem",
            f"2025-05-09T11:58:5{5 if alg != 'sha512' else 6}",
            "2035-03-26",
            "sigstore-tsa",
        )
        for alg in ("sha256", "sha384", "sha512")
    ],
]


@pytest.mark.parametrize(("vector", "data", "anchor", "gen_time", "until", "authority"), VALID)
def test_real_tokens_are_valid_at_gen_time(
    vector: str, data: str | None, anchor: str, gen_time: str, until: str, authority: str
) -> None:
    token = tsp.load_timestamp(_vector(vector).read_bytes())
    digest = hashlib.new(token.facts.algorithm, _data(data)).digest()
    verified = tsp.verify_token(token, digest=digest, anchors=load_anchors(_anchor(anchor)))
    assert token.facts.gen_time.strftime("%Y-%m-%dT%H:%M:%S") == gen_time
    assert verified.chain_not_after.date().isoformat() == until
    assert verified.authority == authority
    assert is_ca(verified.chain[-1]) and verified.chain[0] == verified.signer


@pytest.mark.parametrize(("vector", "data", "anchor", "gen_time", "until", "authority"), VALID)
def test_real_tokens_fail_for_other_data(
    vector: str, data: str | None, anchor: str, gen_time: str, until: str, authority: str
) -> None:
    token = tsp.load_timestamp(_vector(vector).read_bytes())
    digest = hashlib.new(token.facts.algorithm, _data(data) + b"!").digest()
    with pytest.raises(TokenInvalid) as caught:
        tsp.verify_token(token, digest=digest, anchors=load_anchors(_anchor(anchor)))
    assert caught.value.reason == "imprint_mismatch"


def test_freetsa_token_is_invalid_now_its_tsa_certificate_expired() -> None:
    token = tsp.load_timestamp(_vector("freetsa_2024_sha512.resp.tsr").read_bytes())
    anchors = load_anchors(_vector("freetsa_cacert.pem"))
    now = datetime(2026, 11, 22, tzinfo=UTC)
    with pytest.raises(TokenInvalid) as caught:
        tsp.verify_token(token, digest=None, anchors=anchors, at=now)
    assert caught.value.reason == "chain"
    assert "expired" in str(caught.value) or "not valid" in str(caught.value).lower()


def test_a_token_never_trusts_a_root_it_embeds() -> None:
    # GlobalSign embeds its own root R3; with another TSA's root configured it must fail.
    token = tsp.load_timestamp(_vector("globalsign-g4_2021_notation.resp.tsr").read_bytes())
    with pytest.raises(TokenInvalid) as caught:
        tsp.verify_token(token, digest=None, anchors=load_anchors(_vector("freetsa_cacert.pem")))
    assert caught.value.reason == "chain"


def test_token_without_certificates_is_not_valid_but_signer_unavailable() -> None:
    vector = _vector("comodo-sectigo_2018_hello-nl_nocerts.resp.tsr")
    token = tsp.load_timestamp(vector.read_bytes())
    assert token.certificates == ()
    digest = hashlib.sha256(_data("data_hello-nl.txt")).digest()
    assert token.facts.hashed_message == digest  # the imprint matches...
    with pytest.raises(TokenInvalid) as caught:  # ...but nothing else can be checked
        tsp.verify_token(
            token, digest=digest, anchors=load_anchors(_vector("globalsign-root-r3.crt.pem"))
        )
    assert caught.value.reason == "signer_unavailable"
    assert "signer certificate not available" in str(caught.value)


def test_a_signer_certificate_can_come_from_outside_the_token() -> None:
    # The FreeTSA token with its certificates removed verifies again with freetsa_tsa.crt.
    token = tsp.load_timestamp(_vector("freetsa_2024_sha512.resp.tsr").read_bytes())
    stripped = tsp.TimestampToken(token.content_info, token.facts, certificates=())
    anchors = load_anchors(_vector("freetsa_cacert.pem"))
    with pytest.raises(TokenInvalid):
        tsp.verify_token(stripped, digest=None, anchors=anchors)
    tsa = x509.load_pem_x509_certificate(_vector("freetsa_tsa.crt").read_bytes())
    verified = tsp.verify_token(stripped, digest=None, anchors=anchors, extra_certificates=[tsa])
    assert verified.signer == tsa


def test_rejection_reply_is_parsed_with_its_reason() -> None:
    data = _vector("globalsign_rejection.resp.tsr").read_bytes()
    with pytest.raises(TimestampRejected) as caught:
        tsp.parse_response(data)
    assert caught.value.error_class == "rejected"
    assert caught.value.status == "rejection"
    assert caught.value.fail_info == ("bad_alg",)
    assert caught.value.status_string == "request contains unknown algorithm"


def test_signed_attributes_are_verified_as_received_not_re_encoded() -> None:
    """DigiCert's attributes are not in DER order: verifying over a re-encoding would fail.

    The vector verifying at all shows the bytes were used as received; this checks the
    premise, that a DER re-encoding really is different."""
    token = tsp.load_timestamp(_vector("digicert_2018_hello-nl.resp.tsr").read_bytes())
    signer_info = token.content_info["content"]["signer_infos"][0]
    received = signer_info["signed_attrs"].dump()
    re_encoded = cms.CMSAttributes.load(b"\x31" + received[1:]).dump(force=True)
    assert received[1:] != re_encoded[1:]


def test_facts_of_a_token() -> None:
    token = tsp.load_timestamp(_vector("freetsa_2024_sha512.resp.tsr").read_bytes())
    facts = token.facts
    assert facts.algorithm == "sha512"
    assert facts.policy == "1.2.3.4.1"
    assert facts.ordering is True
    assert facts.nonce is None
    assert facts.hashed_message == hashlib.sha512(FREETSA_DATA).digest()
    assert facts.gen_time.tzinfo is not None
    sigstage = tsp.load_timestamp(_vector("sigstage_2025_hello_sha256.resp.tsr").read_bytes())
    assert sigstage.facts.nonce is not None and sigstage.facts.nonce > 2**64  # ~160 bits


def test_response_bytes_are_kept_exactly() -> None:
    data = _vector("globalsign-g4_2021_notation.resp.tsr").read_bytes()
    assert tsp.parse_response(data).der is data


@pytest.mark.parametrize("armour", ["der", "base64", "pem", "token"])
def test_load_timestamp_accepts_what_people_hand_over(armour: str) -> None:
    response = _vector("globalsign-g4_2021_notation.resp.tsr").read_bytes()
    bare = _vector("globalsign-g4_2021_notation.token.p7s").read_bytes()
    encoded = base64.encodebytes(response)
    data = {
        "der": response,
        "base64": encoded,
        "pem": b"-----BEGIN TIMESTAMP-----\n" + encoded + b"-----END TIMESTAMP-----\n",
        "token": bare,
    }[armour]
    token = tsp.load_timestamp(data)
    assert token.facts.policy == "1.3.6.1.4.1.4146.2.3"


def test_trust_file_anchors_only_its_ca_certificates(tmp_path: Path) -> None:
    anchors = load_anchors(_vector("sigstage_ts_chain.pem"))  # leaf + root
    assert len(anchors) == 1 and is_ca(anchors[0])
    leaf_only = tmp_path / "leaf.pem"
    leaf_only.write_bytes(_vector("freetsa_tsa.crt").read_bytes())
    with pytest.raises(TrustError, match="no CA certificate"):
        load_anchors(leaf_only)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(TrustError, match="not a PEM or DER"):
        load_anchors(garbage)
    with pytest.raises(TrustError, match="cannot read"):
        load_anchors(tmp_path / "missing.pem")


# --- the request and the reply ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", tsp.IMPRINT_ALGORITHMS)
def test_request_is_what_openssl_reads(algorithm: str, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    digest = hashlib.new(algorithm, b"data").digest()
    request = tsp.build_request(digest, algorithm)
    query = tmp_path / "q.tsq"
    query.write_bytes(request.der)
    text = subprocess.run(
        [openssl, "ts", "-query", "-in", str(query), "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Hash Algorithm: {algorithm}" in text
    assert "Certificate required: yes" in text
    # Compared as numbers: openssl prints the nonce's bytes, so an odd digit count gets a
    # leading zero ("0x0BD9…"), and a textual match failed about one run in sixteen.
    printed = re.search(r"Nonce: 0x([0-9A-F]+)", text)
    assert printed is not None, text
    assert int(printed.group(1), 16) == request.nonce
    assert digest.hex(" ").upper().split()[0] in text.upper()


def test_requests_get_fresh_64_bit_nonces() -> None:
    digest = hashlib.sha256(b"x").digest()
    nonces = {tsp.build_request(digest, "sha256").nonce for _ in range(50)}
    assert len(nonces) == 50 and all(0 <= nonce < 2**64 for nonce in nonces)
    parsed = asn1_tsp.TimeStampReq.load(tsp.build_request(digest, "sha256", policy="1.2.3").der)
    assert parsed["req_policy"].dotted == "1.2.3" and parsed["cert_req"].native is True


def test_request_refuses_sha1_and_wrong_lengths() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        tsp.build_request(hashlib.sha1(b"x").digest(), "sha1")
    with pytest.raises(ValueError, match="32 bytes"):
        tsp.build_request(b"short", "sha256")


def _sigstage() -> tsp.TimestampToken:
    return tsp.load_timestamp(_vector("sigstage_2025_hello_sha256.resp.tsr").read_bytes())


def _request_for(token: tsp.TimestampToken, **changes: object) -> tsp.TimestampRequest:
    facts = token.facts
    fields: dict[str, object] = {
        "der": b"",
        "algorithm": facts.algorithm,
        "digest": facts.hashed_message,
        "nonce": facts.nonce,
        "policy": None,
    }
    fields.update(changes)
    return tsp.TimestampRequest(**fields)  # type: ignore[arg-type]


def test_check_reply_accepts_the_answer_to_its_request() -> None:
    token = _sigstage()
    at = token.facts.gen_time
    tsp.check_reply(token, _request_for(token), sent_at=at, received_at=at)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"nonce": 12345}, "nonce_mismatch"),
        ({"digest": bytes(32)}, "imprint_mismatch"),
        ({"algorithm": "sha512"}, "imprint_mismatch"),
        ({"policy": "1.2.3.4"}, "policy_mismatch"),
    ],
)
def test_check_reply_refuses_an_answer_to_another_request(
    change: dict[str, object], reason: str
) -> None:
    token = _sigstage()
    at = token.facts.gen_time
    with pytest.raises(TokenInvalid) as caught:
        tsp.check_reply(token, _request_for(token, **change), sent_at=at, received_at=at)
    assert caught.value.reason == reason


def test_check_reply_refuses_a_token_without_nonce_and_an_old_token() -> None:
    freetsa = tsp.load_timestamp(_vector("freetsa_2024_sha512.resp.tsr").read_bytes())
    at = freetsa.facts.gen_time
    with pytest.raises(TokenInvalid) as caught:
        tsp.check_reply(freetsa, _request_for(freetsa, nonce=1), sent_at=at, received_at=at)
    assert caught.value.reason == "nonce_missing"
    token = _sigstage()
    later = token.facts.gen_time + timedelta(hours=1)  # a replayed token from an hour ago
    with pytest.raises(TokenInvalid) as caught:
        tsp.check_reply(token, _request_for(token), sent_at=later, received_at=later)
    assert caught.value.reason == "time_window"


# --- hostile bytes -------------------------------------------------------------------------


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_garbage_raises_only_our_errors(data: bytes) -> None:
    for parse in (tsp.parse_response, tsp.parse_token, tsp.load_timestamp):
        with contextlib.suppress(TspParseError, TimestampRejected):
            parse(data)


@pytest.mark.parametrize(
    "vector",
    # Read at collection time: without the folder the list is one placeholder, and the
    # test skips with the reason when it asks for the file.
    [*shared_vector_names("tsr", "*.tsr"), "globalsign-g4_2021_notation.token.p7s"],
)
def test_damaged_vectors_raise_only_our_errors(vector: str) -> None:
    """Truncations and single flipped bytes of every real reply: a clear error or, where a
    byte inside a certificate or signature changed, a verdict; never a crash."""
    data = _vector(vector).read_bytes()
    anchors = load_anchors(_vector("globalsign-root-r3.crt.pem"))
    damaged = [data[:cut] for cut in range(0, len(data), max(1, len(data) // 40))]
    damaged += [
        data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :] for at in range(0, len(data), 37)
    ]
    for sample in damaged:
        try:
            token = tsp.load_timestamp(sample)
            tsp.verify_token(token, digest=None, anchors=anchors)
        except StampdError:
            pass


def test_a_damaged_certificate_version_is_a_parse_error_not_a_crash() -> None:
    # cryptography raises InvalidVersion, which is not a ValueError, for a version out of range.
    data = _vector("globalsign-g4_2021_notation.resp.tsr").read_bytes()
    version = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2 (v3) of the first certificate
    at = data.index(version) + len(version) - 1
    with pytest.raises(TspParseError, match="malformed timestamp token"):
        tsp.load_timestamp(data[:at] + b"\x58" + data[at + 1 :])


def test_parse_errors_never_carry_huge_numbers() -> None:
    """A damaged length decodes to a number of 100+ digits, which asn1crypto prints
    ("Insufficient data - 1768… bytes requested"); the message shortens it."""
    data = _vector("comodo-sectigo_2018_hello-nl_nocerts.resp.tsr").read_bytes()
    messages = []
    for at in range(len(data)):
        for mask in (0x5A, 0xFF):
            try:
                tsp.load_timestamp(data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :])
            except StampdError as error:
                messages.append(str(error))
    assert any("digits)" in message for message in messages)  # the case did occur
    assert not [message for message in messages if re.search(r"\d{16,}", message)]
