"""What a TSA chain failure says: which TSA, why in words, and room for what to do.

cryptography's validator says "candidates exhausted: signature does not match" and prints a
Python repr of the certificate; store/trust.py turns each reason it can identify into a
sentence that names the certificate (tests/tsa_pki.py builds each broken chain).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from stampd.store.trust import ChainError, display_name, validate_tsa_chain
from tests.tsa_pki import Pki, make_pki

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Msg")


def _failure(
    signer: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchors: list[x509.Certificate],
    at: dt.datetime = NOW,
) -> ChainError:
    with pytest.raises(ChainError) as caught:
        validate_tsa_chain(signer, intermediates, anchors, at)
    text = str(caught.value)
    for raw in ("candidates exhausted", "<Certificate(", "validation failed", "<Name("):
        assert raw not in text, text
    return caught.value


def test_an_untrusted_root_names_the_tsa_and_the_root_its_chain_needs(
    pki: Pki, tmp_path: Path
) -> None:
    other = make_pki(tmp_path, "Elsewhere")
    error = _failure(pki.tsa_cert, [], [other.root_cert])
    assert error.problem == "no_path" and error.missing_root
    assert str(error) == (
        'the TSA "CN=stampd Msg TSA 1, O=stampd tests" does not chain to a root in the trust'
        ' roots given; its chain leads up to "CN=stampd Msg TSA Root, O=stampd tests"'
    )
    assert error.describe(roots="--trust other.pem", remedy="give its root") == (
        'the TSA "CN=stampd Msg TSA 1, O=stampd tests" does not chain to a root in the trust'
        " roots given (--trust other.pem); its chain leads up to"
        ' "CN=stampd Msg TSA Root, O=stampd tests": give its root'
    )


def test_a_root_of_the_same_name_but_another_key_is_called_so(pki: Pki, tmp_path: Path) -> None:
    foreign = make_pki(tmp_path, pki.name)  # same names, other keys
    error = _failure(foreign.tsa_cert, [foreign.root_cert], [pki.root_cert])
    assert error.problem == "no_path"
    assert 'a root named "CN=stampd Msg TSA Root, O=stampd tests" is among them' in str(error)
    assert "same name, another key" in str(error)


def test_no_roots_at_all(pki: Pki) -> None:
    error = _failure(pki.tsa_cert, [], [])
    assert error.problem == "no_roots" and error.missing_root
    assert str(error) == (
        'there are no trust roots to check the TSA "CN=stampd Msg TSA 1, O=stampd tests" against'
    )


def test_expired_and_not_yet_valid_say_when(pki: Pki) -> None:
    later = pki.tsa_cert.not_valid_after_utc + dt.timedelta(days=1)
    expired = _failure(pki.tsa_cert, [], [pki.root_cert], later)
    assert expired.problem == "expired" and not expired.missing_root
    until = pki.tsa_cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert str(expired) == (
        f'the TSA certificate "CN=stampd Msg TSA 1, O=stampd tests" had expired at'
        f" {later.strftime('%Y-%m-%dT%H:%M:%SZ')} (valid until {until})"
    )
    # The remedy is for a missing root: an expired certificate is not fixed by trusting more.
    assert expired.describe(roots="x", remedy="add a root") == str(expired)
    earlier = pki.tsa_cert.not_valid_before_utc - dt.timedelta(hours=1)
    early = _failure(pki.tsa_cert, [], [pki.root_cert], earlier)
    assert early.problem == "not_yet_valid"
    assert "was not yet valid at" in str(early) and "(valid from " in str(early)


@pytest.mark.parametrize("broken", ["extra_eku", "tsa_eku_critical", "no_eku"])
def test_a_wrong_extended_key_usage_is_said_in_words(tmp_path: Path, broken: str) -> None:
    options = {"extra_eku": True, "no_eku": True, "tsa_eku_critical": False}
    wrong = make_pki(tmp_path, f"Eku{broken}", **{broken: options[broken]})  # type: ignore[arg-type]
    error = _failure(wrong.tsa_cert, [], [wrong.root_cert])
    assert error.problem == "eku"
    assert str(error).endswith(
        "is not a time-stamping certificate: its extended key usage must be"
        " id-kp-timeStamping alone, marked critical (RFC 3161 §2.3)"
    )


def test_names_are_shown_by_cn_ou_and_o_only() -> None:
    freetsa_like = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Free TSA"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "TSA"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "someone@example.org"),
            x509.NameAttribute(NameOID.COMMON_NAME, "www.freetsa.org"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Wuerzburg"),
        ]
    )
    assert display_name(freetsa_like) == "CN=www.freetsa.org, OU=TSA, O=Free TSA"
    only_country = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")])
    assert display_name(only_country) == "C=DE"
