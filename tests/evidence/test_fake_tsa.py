"""Self-tests of the local TSAs: OpenSSL's `ts -verify` is the independent judge of their tokens.

The fakes are only worth something if a token they call good is good and a token they break is
broken in the intended way (reference rfc3161.md §7 table), so every mode is checked with a
verifier that shares no code with them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import cms, core, tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import require_tool
from tests.fake_tsa import (
    MODES,
    OTHER_POLICY,
    OVERSIZED,
    QUERY_TYPE,
    REPLY_TYPE,
    FakeTsa,
    OpenSslTsa,
)
from tests.tsa_pki import Pki, make_pki

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def openssl() -> str:
    """The openssl binary; everything here needs `openssl ts`."""
    return require_tool("openssl")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tsa")


@pytest.fixture(scope="module")
def data(workdir: Path) -> Path:
    path = workdir / "data.txt"
    path.write_bytes(b"stampd fake TSA self-test\n")
    return path


@pytest.fixture(scope="module")
def pki(workdir: Path) -> Pki:
    return make_pki(workdir / "pki")


@pytest.fixture(scope="module")
def ec_pki(workdir: Path) -> Pki:
    return make_pki(workdir / "ec-pki", "EC", key="ec")


@pytest.fixture(scope="module")
def fake_server(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeTsa) -> FakeTsa:
    """The shared RSA FakeTsa, back in mode "ok" with the real clock for each test."""
    fake_server.mode = "ok"
    fake_server.gen_time = None
    return fake_server


@pytest.fixture(scope="module")
def ec_fake(ec_pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(ec_pki) as server:
        yield server


@pytest.fixture(scope="module")
def openssl_tsa(workdir: Path, pki: Pki, openssl: str) -> Iterator[OpenSslTsa]:
    with OpenSslTsa(workdir / "openssl-tsa", pki, openssl=openssl) as server:
        yield server


def run_openssl(openssl: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [openssl, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def make_query(openssl: str, directory: Path, data: Path, digest: str = "sha256") -> Path:
    """A TimeStampReq from `openssl ts -query` (nonce, certReq TRUE), not from our own code."""
    query = directory / f"{digest}.tsq"
    done = run_openssl(openssl, "ts", "-query", "-data", data, f"-{digest}", "-cert", "-out", query)
    assert done.returncode == 0, done.stderr
    return query


def query_nonce(openssl: str, query: Path) -> int:
    text = run_openssl(openssl, "ts", "-query", "-in", query, "-text").stdout
    match = re.search(r"Nonce: 0x([0-9A-F]+)", text)
    assert match, text
    return int(match.group(1), 16)


def post(url: str, body: bytes, content_type: str = QUERY_TYPE) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": content_type}, timeout=TIMEOUT)


def stamp(url: str, query: Path, directory: Path, name: str = "reply.tsr") -> Path:
    """POST the query and store the body verbatim, as stampd stores FILE.tsr (reference §4)."""
    response = post(url, query.read_bytes())
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == REPLY_TYPE
    reply = directory / name
    reply.write_bytes(response.content)
    return reply


def verify(
    openssl: str, reply: Path, root: Path, *, data: Path | None = None, query: Path | None = None
) -> subprocess.CompletedProcess[str]:
    source = ["-data", data] if data is not None else ["-queryfile", query]
    return run_openssl(openssl, "ts", "-verify", *source, "-in", reply, "-CAfile", root)


def assert_ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stdout + done.stderr


def assert_fails(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "Verification: FAILED" in done.stdout
    assert message in done.stderr, done.stderr


def reply_text(openssl: str, reply: Path) -> str:
    done = run_openssl(openssl, "ts", "-reply", "-in", reply, "-text")
    assert done.returncode == 0, done.stderr
    return done.stdout


def serial_number(text: str) -> int:
    """TSTInfo serialNumber from `openssl ts -reply -text` output."""
    match = re.search(r"Serial number: 0x([0-9A-F]+)", text)
    assert match, text
    return int(match.group(1), 16)


def signer_info(reply: bytes) -> cms.SignerInfo:
    """The single SignerInfo of a granted reply, read generically (not with the fake's class)."""
    response = core.Sequence.load(reply)
    token = cms.ContentInfo.load(response[1].dump())
    infos = token["content"]["signer_infos"]
    assert len(infos) == 1
    return infos[0]


# --- OpenSslTsa ------------------------------------------------------------------------------


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_openssl_tsa_token_verifies(
    openssl: str, openssl_tsa: OpenSslTsa, pki: Pki, data: Path, tmp_path: Path, digest: str
) -> None:
    before = openssl_tsa.requests
    query = make_query(openssl, tmp_path, data, digest)
    reply = stamp(openssl_tsa.url, query, tmp_path)
    assert_ok(verify(openssl, reply, pki.root_pem, data=data))
    assert_ok(verify(openssl, reply, pki.root_pem, query=query))
    assert openssl_tsa.requests == before + 1
    assert openssl_tsa.last_nonce == query_nonce(openssl, query)
    assert f"Hash Algorithm: {digest}" in reply_text(openssl, reply)


def test_openssl_tsa_serializes_concurrent_requests(
    openssl: str, openssl_tsa: OpenSslTsa, data: Path, tmp_path: Path
) -> None:
    """Parallel POSTs each get a token with its own serial: the shared serial file survives."""
    query = make_query(openssl, tmp_path, data).read_bytes()
    bodies: list[bytes] = []

    def one() -> None:
        bodies.append(post(openssl_tsa.url, query).content)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    serials = set()
    for index, body in enumerate(bodies):
        path = tmp_path / f"r{index}.tsr"
        path.write_bytes(body)
        serials.add(serial_number(reply_text(openssl, path)))
    assert len(serials) == 4


def test_openssl_tsa_checks_content_type(
    openssl: str, openssl_tsa: OpenSslTsa, data: Path, tmp_path: Path
) -> None:
    response = post(openssl_tsa.url, make_query(openssl, tmp_path, data).read_bytes(), "text/plain")
    assert response.status_code == 415


def test_openssl_tsa_refuses_pki_without_critical_eku(
    openssl: str, data: Path, tmp_path: Path
) -> None:
    """Why the non-critical EKU case needs FakeTsa: `ts -reply` will not sign (reference §3)."""
    weak = make_pki(tmp_path / "pki", "NonCritical", tsa_eku_critical=False)
    with OpenSslTsa(tmp_path / "tsa", weak, openssl=openssl) as server:
        response = post(server.url, make_query(openssl, tmp_path, data).read_bytes())
    assert response.status_code == 500
    assert b"invalid signer certificate purpose" in response.content


# --- FakeTsa: good tokens ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "digest", "mode"),
    [
        ("rsa", "sha256", "ok"),
        ("rsa", "sha512", "ok"),
        ("ec", "sha256", "ok"),
        ("ec", "sha384", "ok"),
        ("rsa", "sha256", "ess_v1"),
        ("ec", "sha512", "ess_v1"),
    ],
)
def test_fake_token_verifies(
    openssl: str,
    pki: Pki,
    ec_pki: Pki,
    fake: FakeTsa,
    ec_fake: FakeTsa,
    data: Path,
    tmp_path: Path,
    key: str,
    digest: str,
    mode: str,
) -> None:
    signer_pki, server = (ec_pki, ec_fake) if key == "ec" else (pki, fake)
    server.mode = mode
    query = make_query(openssl, tmp_path, data, digest)
    before = server.requests
    reply = stamp(server.url, query, tmp_path)
    assert server.requests == before + 1
    assert server.last_nonce == query_nonce(openssl, query)
    assert_ok(verify(openssl, reply, signer_pki.root_pem, data=data))
    assert_ok(verify(openssl, reply, signer_pki.root_pem, query=query))

    info = signer_info(reply.read_bytes())
    kinds = [attribute["type"].native for attribute in info["signed_attrs"]]
    expected_ess = "signing_certificate" if mode == "ess_v1" else "signing_certificate_v2"
    assert sorted(kinds) == sorted(["content_type", "message_digest", "signing_time", expected_ess])
    # Signed as DER (SET OF sorted, RFC 5652 §5.3): a DER re-encoding changes no byte.
    as_set = b"\x31" + info["signed_attrs"].dump()[1:]
    assert cms.CMSAttributes.load(as_set).dump(force=True) == as_set
    text = reply_text(openssl, reply)
    assert "Status: Granted." in text
    assert "Accuracy: 0x01 seconds" in text
    assert "TSA: DirName:/O=stampd tests/CN=stampd " in text


def test_fake_reply_without_http(openssl: str, pki: Pki, data: Path, tmp_path: Path) -> None:
    """`build_reply` makes the same tokens directly, for tests that need a token but no server."""
    query = make_query(openssl, tmp_path, data)
    reply = tmp_path / "direct.tsr"
    reply.write_bytes(FakeTsa(pki).build_reply(query.read_bytes()))
    assert_ok(verify(openssl, reply, pki.root_pem, query=query))


def test_fake_gen_time_override(
    openssl: str, fake: FakeTsa, pki: Pki, data: Path, tmp_path: Path
) -> None:
    """A fixed genTime (an hour ago, inside the certificate's validity), fraction kept."""
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=250000)
    fake.gen_time = when
    reply = stamp(fake.url, make_query(openssl, tmp_path, data), tmp_path)
    # DER GeneralizedTime drops trailing zeros of the fraction (X.690 §11.7.3): ".25".
    expected = f"Time stamp: {when:%b} {when.day:2d} {when:%H:%M:%S}.25 {when.year} GMT"
    assert expected in reply_text(openssl, reply)
    assert_ok(verify(openssl, reply, pki.root_pem, data=data))


def test_fake_serials_differ(openssl: str, fake: FakeTsa, data: Path, tmp_path: Path) -> None:
    query = make_query(openssl, tmp_path, data)
    serials = [
        serial_number(reply_text(openssl, stamp(fake.url, query, tmp_path, name)))
        for name in ("a.tsr", "b.tsr")
    ]
    assert serials[0] != serials[1]
    assert serials[0] > 2**64  # long serials, as real TSAs use (reference §1.3)


def test_fake_echoes_accepted_policy(
    openssl: str, fake: FakeTsa, data: Path, tmp_path: Path
) -> None:
    query = tmp_path / "policy.tsq"
    run_openssl(
        openssl, "ts", "-query", "-data", data, "-cert", "-tspolicy", OTHER_POLICY, "-out", query
    )
    reply = stamp(fake.url, query, tmp_path)
    assert f"Policy OID: {OTHER_POLICY}" in reply_text(openssl, reply)


# --- FakeTsa: broken tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "with_data", "message"),
    [
        ("wrong_nonce", False, "nonce mismatch"),
        ("wrong_imprint", True, "message imprint mismatch"),
        ("wrong_imprint", False, "message imprint mismatch"),
        ("bad_signature", True, "signature failure"),
        ("no_ess", True, "missing signing certificate attribute"),
        # The reference §7 lists "ess cert id wrong order"; OpenSSL 3.0.19 reports a hash of
        # the (embedded) root as not found.
        ("wrong_ess", True, "ess cert id not found"),
        ("no_certs", True, "signer certificate not found"),
    ],
)
def test_fake_broken_token_fails(
    openssl: str,
    fake: FakeTsa,
    pki: Pki,
    data: Path,
    tmp_path: Path,
    mode: str,
    with_data: bool,
    message: str,
) -> None:
    fake.mode = mode
    query = make_query(openssl, tmp_path, data)
    reply = stamp(fake.url, query, tmp_path)
    if with_data:
        assert_fails(verify(openssl, reply, pki.root_pem, data=data), message)
    else:
        assert_fails(verify(openssl, reply, pki.root_pem, query=query), message)


def test_fake_wrong_nonce_still_matches_data(
    openssl: str, fake: FakeTsa, pki: Pki, data: Path, tmp_path: Path
) -> None:
    """Only the nonce is off: a check without the request cannot see it (reference §2 item 4)."""
    fake.mode = "wrong_nonce"
    query = make_query(openssl, tmp_path, data)
    reply = stamp(fake.url, query, tmp_path)
    assert_ok(verify(openssl, reply, pki.root_pem, data=data))
    text = reply_text(openssl, reply)
    # Compared as numbers: openssl prints the nonce's bytes, with a leading zero whenever the
    # value's top bit or an odd digit count makes one (a textual match failed 1 run in ~20).
    printed = re.search(r"Nonce: 0x([0-9A-F]+)", text)
    assert printed is not None, text
    assert int(printed.group(1), 16) == query_nonce(openssl, query) + 1


def test_fake_no_certs_verifies_with_untrusted(
    openssl: str, fake: FakeTsa, pki: Pki, data: Path, tmp_path: Path
) -> None:
    fake.mode = "no_certs"
    reply = stamp(fake.url, make_query(openssl, tmp_path, data), tmp_path)
    done = run_openssl(
        openssl, "ts", "-verify", "-data", data, "-in", reply, "-CAfile", pki.root_pem,
        "-untrusted", pki.tsa_pem,
    )  # fmt: skip
    assert_ok(done)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "NonCritical", "tsa_eku_critical": False}, "unsuitable certificate purpose"),
        ({"name": "ExtraEku", "extra_eku": True}, "unsuitable certificate purpose"),
        ({"name": "NoEku", "no_eku": True}, "unsuitable certificate purpose"),
        (
            {
                "name": "Expired",
                "tsa_not_before": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                "tsa_not_after": dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
            },
            "certificate has expired",
        ),
    ],
)
def test_fake_with_bad_tsa_certificate_fails(
    openssl: str, data: Path, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    bad = make_pki(tmp_path / "pki", **options)
    query = make_query(openssl, tmp_path, data)
    with FakeTsa(bad) as server:
        reply = stamp(server.url, query, tmp_path)
    assert_fails(verify(openssl, reply, bad.root_pem, data=data), message)


def test_fake_expired_now_valid_at_gen_time(openssl: str, data: Path, tmp_path: Path) -> None:
    """genTime inside the expired certificate's validity: OK only with -attime (reference §7)."""
    old = make_pki(
        tmp_path / "pki",
        "Expired",
        tsa_not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        tsa_not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
    )
    gen_time = dt.datetime(2020, 6, 1, 12, 0, tzinfo=dt.UTC)
    with FakeTsa(old, gen_time=gen_time) as server:
        reply = stamp(server.url, make_query(openssl, tmp_path, data), tmp_path)
    assert_fails(verify(openssl, reply, old.root_pem, data=data), "certificate has expired")
    done = run_openssl(
        openssl, "ts", "-verify", "-data", data, "-in", reply, "-CAfile", old.root_pem,
        "-attime", str(int(gen_time.timestamp())),
    )  # fmt: skip
    assert_ok(done)


@pytest.mark.parametrize("name", ["same", "Other"])
def test_fake_from_foreign_or_untrusted_pki_fails(
    openssl: str, pki: Pki, data: Path, tmp_path: Path, name: str
) -> None:
    """A foreign PKI with the same names (its root embedded), or another PKI, against our root."""
    other = make_pki(tmp_path / "foreign", pki.name if name == "same" else name)
    if name == "same":
        assert other.root_cert.subject == pki.root_cert.subject
        assert other.tsa_cert.subject == pki.tsa_cert.subject
        assert other.root_cert.public_key() != pki.root_cert.public_key()
    with FakeTsa(other) as server:
        reply = stamp(server.url, make_query(openssl, tmp_path, data), tmp_path)
    assert_ok(verify(openssl, reply, other.root_pem, data=data))
    assert_fails(
        verify(openssl, reply, pki.root_pem, data=data),
        "self-signed certificate in certificate chain",
    )


# --- FakeTsa: rejections ------------------------------------------------------------------------


def test_fake_reject(openssl: str, fake: FakeTsa, data: Path, tmp_path: Path) -> None:
    fake.mode = "reject"
    reply = stamp(fake.url, make_query(openssl, tmp_path, data), tmp_path)
    text = reply_text(openssl, reply)
    assert "Status: Rejected." in text
    assert "Failure info: unrecognized or unsupported algorithm identifier" in text
    assert "Status description: fake TSA rejects this request on purpose" in text
    assert "TST info:\nNot included." in text


def test_fake_granted_without_token(
    openssl: str, fake: FakeTsa, data: Path, tmp_path: Path
) -> None:
    fake.mode = "granted_no_token"
    response = post(fake.url, make_query(openssl, tmp_path, data).read_bytes())
    body = core.Sequence.load(response.content)
    assert len(body) == 1  # PKIStatusInfo only
    assert body[0].dump() == tsp.PKIStatusInfo({"status": "granted"}).dump()
    path = tmp_path / "r.tsr"
    path.write_bytes(response.content)
    done = run_openssl(openssl, "ts", "-reply", "-in", path, "-text")
    assert done.returncode != 0 and "token not present" in done.stderr


@pytest.mark.parametrize(
    ("query_args", "failure"),
    [
        (["-sha1"], "unrecognized or unsupported algorithm identifier"),
        (["-tspolicy", "1.2.3.4.5"], "the requested TSA policy is not supported by the TSA"),
    ],
)
def test_fake_refuses_like_a_real_tsa(
    openssl: str, fake: FakeTsa, data: Path, tmp_path: Path, query_args: list[str], failure: str
) -> None:
    query = tmp_path / "q.tsq"
    run_openssl(openssl, "ts", "-query", "-data", data, "-cert", *query_args, "-out", query)
    reply = stamp(fake.url, query, tmp_path)
    text = reply_text(openssl, reply)
    assert "Status: Rejected." in text
    assert f"Failure info: {failure}" in text


def test_fake_refuses_unparsable_query(openssl: str, fake: FakeTsa, tmp_path: Path) -> None:
    response = post(fake.url, b"\x30\x03\x02\x01")
    assert response.status_code == 200
    reply = tmp_path / "r.tsr"
    reply.write_bytes(response.content)
    assert "Failure info: the data submitted has the wrong format" in reply_text(openssl, reply)


# --- FakeTsa: HTTP behaviour --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "header", "value"),
    [
        ("status_500", 500, None, None),
        ("status_503_retry_after", 503, "Retry-After", "2"),
        ("status_429_retry_after", 429, "Retry-After", "2"),
        ("status_401", 401, "WWW-Authenticate", 'Basic realm="tsa"'),
    ],
)
def test_fake_http_errors(
    fake: FakeTsa, mode: str, status: int, header: str | None, value: str | None
) -> None:
    fake.mode = mode
    response = post(fake.url, b"\x30\x00")
    assert response.status_code == status
    if header is not None:
        assert response.headers[header] == value


def test_fake_429_http_date(fake: FakeTsa) -> None:
    fake.mode = "status_429_retry_after_date"
    response = post(fake.url, b"\x30\x00")
    assert response.status_code == 429
    when = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
    wait = (when - dt.datetime.now(dt.UTC)).total_seconds()
    assert 1.0 < wait <= 3.0
    assert response.headers["Retry-After"].endswith(" GMT")


def test_fake_bodies_that_are_not_replies(
    openssl: str, fake: FakeTsa, tmp_path: Path, data: Path
) -> None:
    fake.mode = "garbage"
    response = post(fake.url, b"\x30\x00")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == REPLY_TYPE
    assert response.content[0] != 0x30
    path = tmp_path / "garbage.tsr"
    path.write_bytes(response.content)
    assert run_openssl(openssl, "ts", "-reply", "-in", path, "-text").returncode != 0

    fake.mode = "html"
    response = post(fake.url, b"\x30\x00")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.content.startswith(b"<!DOCTYPE html>")


def test_fake_wrong_content_type_with_valid_body(
    openssl: str, fake: FakeTsa, pki: Pki, tmp_path: Path, data: Path
) -> None:
    fake.mode = "wrong_content_type"
    response = post(fake.url, make_query(openssl, tmp_path, data).read_bytes())
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain"
    reply = tmp_path / "r.tsr"
    reply.write_bytes(response.content)
    assert_ok(verify(openssl, reply, pki.root_pem, data=data))


@pytest.mark.parametrize("mode", ["oversized", "oversized_no_length"])
def test_fake_oversized(fake: FakeTsa, mode: str) -> None:
    fake.mode = mode
    response = post(fake.url, b"\x30\x00")
    assert response.status_code == 200
    assert len(response.content) == OVERSIZED
    if mode == "oversized":
        assert response.headers["Content-Length"] == str(OVERSIZED)
    else:
        assert "Content-Length" not in response.headers


def test_fake_oversized_client_gives_up(fake: FakeTsa) -> None:
    """A client that stops reading early must not break the server for the next request."""
    fake.mode = "oversized_no_length"
    with (
        httpx.Client(timeout=TIMEOUT) as client,
        client.stream(
            "POST", fake.url, content=b"\x30\x00", headers={"Content-Type": QUERY_TYPE}
        ) as response,
    ):
        next(response.iter_bytes(1024))
    fake.mode = "status_500"
    assert post(fake.url, b"\x30\x00").status_code == 500


def test_fake_hang_times_out_and_stops_promptly(pki: Pki) -> None:
    with FakeTsa(pki, mode="hang") as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                server.url,
                content=b"\x30\x00",
                headers={"Content-Type": QUERY_TYPE},
                timeout=0.3,
            )
        assert server.requests == 1
        started = time.monotonic()
    assert time.monotonic() - started < 2.0


def test_fake_checks_request_shape(fake: FakeTsa) -> None:
    before = fake.requests
    assert post(fake.url, b"\x30\x00", "text/plain").status_code == 415
    assert httpx.get(fake.url, timeout=TIMEOUT).status_code == 405
    assert fake.requests == before + 1  # POSTs are counted, whatever they carry


def test_fake_mode_is_validated(fake: FakeTsa) -> None:
    assert "ok" in MODES and "ess_v1" in MODES
    with pytest.raises(ValueError, match="unknown FakeTsa mode"):
        fake.mode = "nonsense"
    assert fake.mode == "ok"


def test_pki_shape(pki: Pki, ec_pki: Pki) -> None:
    """The PEM files tests configure, and the §7 `v3_ca` / `v3_tsa` extension profiles."""
    for each in (pki, ec_pki):
        assert {p.name for p in each.directory.iterdir()} >= {
            "root.pem",
            "tsa.pem",
            "tsa.key",
            "chain.pem",
        }
        eku = each.tsa_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
        basic = each.root_cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical and basic.value.ca
        assert len(x509.load_pem_x509_certificates(each.chain_pem.read_bytes())) == 2
