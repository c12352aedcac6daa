"""The RFC 3161 provider and the failover pool against local TSAs over loopback.

For every way a TSA can misbehave (tests/fake_tsa.py): the provider raises the right
``error_class`` and returns nothing — so no sidecar can be written from it — and the pool
fails over to the next TSA, which succeeds. Tokens from `openssl ts -reply` pass, and what
the provider returns verifies with `openssl ts -verify` byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from stampd.daemon.config.model import TimestampConfig, TsaConfig
from stampd.daemon.evidence.pool import BREAKER_THRESHOLD, ProviderPool
from stampd.daemon.evidence.roles import ProviderFailure, Stamped, TimestampProvider
from stampd.daemon.evidence.tsa import Rfc3161Provider, retry_after_seconds
from stampd.daemon.evidence.tsa_setup import configured_tsas
from stampd.store.trust import SYSTEM_BUNDLE, load_anchors
from tests.conftest import require_tool
from tests.fake_tsa import FakeTsa, OpenSslTsa
from tests.tsa_pki import Pki, make_pki

DATA = b"the record to prove\n"
DIGEST = hashlib.sha256(DATA).digest()


def _ask(tsa: TimestampProvider) -> Awaitable[Stamped]:
    """The request the pool tests send: a token for DIGEST."""
    return tsa.timestamp(DIGEST, "sha256")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Provider")


@pytest.fixture(scope="module")
def tsa(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(tsa: FakeTsa) -> None:
    tsa.mode = "ok"
    tsa.gen_time = None


def _provider(
    url: str, pki: Pki, client: httpx.AsyncClient, name: str = "fake", timeout: float = 2.0
) -> Rfc3161Provider:
    return Rfc3161Provider(
        name=name, url=url, client=client, anchors=load_anchors(pki.root_pem), timeout=timeout
    )


async def _stamp(url: str, pki: Pki, algorithm: str = "sha256", timeout: float = 2.0) -> bytes:
    digest = hashlib.new(algorithm, DATA).digest()
    async with httpx.AsyncClient() as client:
        stamped = await _provider(url, pki, client, timeout=timeout).timestamp(digest, algorithm)
    return stamped.response


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_a_good_token_is_returned_verified(tsa: FakeTsa, pki: Pki, algorithm: str) -> None:
    response = asyncio.run(_stamp(tsa.url, pki, algorithm))
    assert response[:1] == b"\x30"
    assert tsa.last_nonce is not None


def test_ess_v1_tokens_are_accepted(tsa: FakeTsa, pki: Pki) -> None:
    tsa.mode = "ess_v1"
    asyncio.run(_stamp(tsa.url, pki))


MISBEHAVIOUR = {
    "hang": ("timeout", None),
    "status_500": ("http_status", 500),
    "status_503_retry_after": ("http_status", 503),
    "status_429_retry_after": ("rate_limited", 429),
    "status_429_retry_after_date": ("rate_limited", 429),
    "status_401": ("auth", 401),
    "garbage": ("parse", None),
    "html": ("parse", 200),
    "wrong_content_type": ("parse", 200),
    "oversized": ("parse", 200),
    "oversized_no_length": ("parse", 200),
    "reject": ("rejected", None),
    "granted_no_token": ("parse", None),
    "wrong_nonce": ("verify", None),
    "wrong_imprint": ("verify", None),
    "bad_signature": ("verify", None),
    "no_ess": ("verify", None),
    "wrong_ess": ("verify", None),
    "no_certs": ("verify", None),
}


@pytest.mark.parametrize("mode", sorted(MISBEHAVIOUR))
def test_each_misbehaviour_has_its_error_class(tsa: FakeTsa, pki: Pki, mode: str) -> None:
    tsa.mode = mode  # type: ignore[assignment]
    error_class, http_status = MISBEHAVIOUR[mode]
    with pytest.raises(ProviderFailure) as caught:
        asyncio.run(_stamp(tsa.url, pki, timeout=1.0))
    assert caught.value.error_class == error_class, caught.value.message
    if http_status is not None:
        assert caught.value.http_status == http_status
    if mode.startswith(("status_429", "status_503")):
        assert caught.value.retry_after is not None and 0 <= caught.value.retry_after <= 3


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("eku_not_critical", "eku"),
        ("extra_eku", "eku"),
        ("no_eku", "eku"),
        ("expired", "chain"),
        ("untrusted_root", "chain"),
        ("foreign_root_embedded", "chain"),
    ],
)
def test_tsa_certificates_that_must_not_be_trusted(
    tmp_path: Path, pki: Pki, case: str, reason: str
) -> None:
    past = datetime.now(UTC) - timedelta(days=800)
    other = {
        "eku_not_critical": lambda: make_pki(tmp_path, "Provider", tsa_eku_critical=False),
        "extra_eku": lambda: make_pki(tmp_path, "Provider", extra_eku=True),
        "no_eku": lambda: make_pki(tmp_path, "Provider", no_eku=True),
        "expired": lambda: make_pki(
            tmp_path, "Provider", tsa_not_before=past, tsa_not_after=past + timedelta(days=365)
        ),
        "untrusted_root": lambda: make_pki(tmp_path, "Other"),
        "foreign_root_embedded": lambda: make_pki(tmp_path, pki.name),
    }[case]()
    with FakeTsa(other) as server, pytest.raises(ProviderFailure) as caught:
        asyncio.run(_stamp(server.url, pki))  # stampd trusts only the first PKI's root
    assert caught.value.error_class == "verify"
    assert caught.value.message.startswith(f"{reason}:"), caught.value.message


def test_an_untrusted_root_names_the_configured_tsa_its_trust_file_and_what_to_do(
    tmp_path: Path, pki: Pki
) -> None:
    """What `stampd show` and the logs carry for the attempt: no validator jargon."""
    other = make_pki(tmp_path, "Stranger")
    config = TimestampConfig(
        selection="priority",
        timeout=2.0,
        digest="sha256",
        mode="per-file",
        tsa=(
            TsaConfig(name="first", url="http://127.0.0.1:9/", trust=pki.root_pem, min_interval=0),
            TsaConfig(name="second", url="http://127.0.0.1:9/", trust=pki.root_pem, min_interval=0),
        ),
    )

    async def stamp() -> None:
        async with httpx.AsyncClient() as client:
            provider = configured_tsas(config, client).providers[1]
            provider.url = server.url
            await provider.timestamp(DIGEST, "sha256")

    with FakeTsa(other) as server, pytest.raises(ProviderFailure) as caught:
        asyncio.run(stamp())
    assert caught.value.error_class == "verify"
    assert caught.value.message == (
        'chain: the TSA "CN=stampd Stranger TSA 1, O=stampd tests" does not chain to a root in'
        f' the trust roots given (timestamp.tsa[1] "second": trust = {pki.root_pem}); its chain'
        ' leads up to "CN=stampd Stranger TSA Root, O=stampd tests": add the TSA\'s root'
        f" certificate to {pki.root_pem}, or point timestamp.tsa[1].trust at a file that holds it"
    )


def test_without_trust_the_message_names_the_system_bundle(tmp_path: Path, pki: Pki) -> None:
    other = make_pki(tmp_path, "Stranger")

    async def stamp() -> None:
        async with httpx.AsyncClient() as client:
            provider = Rfc3161Provider(
                name="public",
                url=server.url,
                client=client,
                anchors=load_anchors(pki.root_pem),
                timeout=2.0,
                key="timestamp.tsa[0]",
            )
            await provider.timestamp(DIGEST, "sha256")

    with FakeTsa(other) as server, pytest.raises(ProviderFailure) as caught:
        asyncio.run(stamp())
    assert f'(timestamp.tsa[0] "public": trust unset, so {SYSTEM_BUNDLE})' in caught.value.message
    assert caught.value.message.endswith(
        "set timestamp.tsa[0].trust to a PEM file holding the TSA's root certificate"
    )


def test_a_tsa_that_leaves_its_certificate_out_is_reported_as_its_fault(
    tsa: FakeTsa, pki: Pki
) -> None:
    tsa.mode = "no_certs"
    with pytest.raises(ProviderFailure) as caught:
        asyncio.run(_stamp(tsa.url, pki))
    assert caught.value.message.startswith("signer_unavailable: ")
    assert "left it out although the request asked for it (certReq)" in caught.value.message


def test_nothing_listening_is_a_network_error(pki: Pki) -> None:
    with pytest.raises(ProviderFailure) as caught:
        asyncio.run(_stamp("http://127.0.0.1:9/tsa", pki))
    assert caught.value.error_class == "network"


def test_openssl_tokens_verify_with_openssl(tmp_path: Path, pki: Pki) -> None:
    """Interoperability: what the provider accepts from `openssl ts -reply`, stored as is,
    verifies with `openssl ts -verify -data FILE -in FILE.tsr -CAfile ROOT`."""
    openssl = require_tool("openssl")
    with OpenSslTsa(tmp_path / "tsa", pki) as server:
        response = asyncio.run(_stamp(server.url, pki))
    data = tmp_path / "record.txt"
    data.write_bytes(DATA)
    sidecar = tmp_path / "record.txt.tsr"
    sidecar.write_bytes(response)
    result = subprocess.run(
        [
            openssl,
            "ts",
            "-verify",
            "-data",
            str(data),
            "-in",
            str(sidecar),
            "-CAfile",
            str(pki.root_pem),
        ],
        capture_output=True,
        text=True,
    )
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Sun, 22 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Sun, 22 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


# --- the pool ------------------------------------------------------------------------------


async def _pool_run(pool: ProviderPool, times: int = 1) -> list[tuple[object, list[object]]]:
    return [await pool.first(_ask) for _ in range(times)]


def test_failover_through_a_hanging_and_a_failing_tsa(pki: Pki) -> None:
    with (
        FakeTsa(pki, mode="hang") as hanging,
        FakeTsa(pki, mode="status_503_retry_after") as busy,
        FakeTsa(pki) as good,
    ):

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                pool = ProviderPool(
                    [
                        _provider(hanging.url, pki, client, "hanging", timeout=0.5),
                        _provider(busy.url, pki, client, "busy"),
                        _provider(good.url, pki, client, "good"),
                    ],
                    selection="priority",
                )
                stamped, attempts = await pool.first(_ask)
                assert stamped is not None
                assert [(a.provider, a.error_class) for a in attempts] == [
                    ("hanging", "timeout"),
                    ("busy", "http_status"),
                    ("good", None),
                ]
                assert attempts[1].http_status == 503
                assert pool.health["good"].last_success_at is not None

        asyncio.run(run())


def test_round_robin_spreads_jobs(pki: Pki) -> None:
    with FakeTsa(pki) as first, FakeTsa(pki) as second:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                pool = ProviderPool(
                    [
                        _provider(first.url, pki, client, "a"),
                        _provider(second.url, pki, client, "b"),
                    ]
                )
                results = await _pool_run(pool, 4)
                assert all(stamped is not None for stamped, _ in results)

        asyncio.run(run())
        assert (first.requests, second.requests) == (2, 2)


def test_breaker_opens_after_repeated_failures_then_probes(pki: Pki) -> None:
    clock = [1000.0]
    with FakeTsa(pki, mode="status_500") as flaky, FakeTsa(pki) as good:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                pool = ProviderPool(
                    [
                        _provider(flaky.url, pki, client, "flaky"),
                        _provider(good.url, pki, client, "good"),
                    ],
                    selection="priority",
                    clock=lambda: clock[0],
                )
                await _pool_run(pool, BREAKER_THRESHOLD)
                assert flaky.requests == BREAKER_THRESHOLD
                assert pool.health["flaky"].breaker(clock[0]) == "open"
                stamped, attempts = await pool.first(_ask)
                assert stamped is not None and [a.provider for a in attempts] == ["good"]
                assert flaky.requests == BREAKER_THRESHOLD  # skipped while open
                clock[0] += 31  # the cool-down passed: one probe
                flaky.mode = "ok"
                stamped, attempts = await pool.first(_ask)
                assert [a.provider for a in attempts] == ["flaky"]
                assert pool.health["flaky"].breaker(clock[0]) == "closed"

        asyncio.run(run())


def test_auth_failure_is_not_retried_and_rate_limits_are_honoured(pki: Pki) -> None:
    clock = [1000.0]
    with (
        FakeTsa(pki, mode="status_401") as locked,
        FakeTsa(pki, mode="status_429_retry_after", retry_after=60) as limited,
        FakeTsa(pki) as good,
    ):

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                pool = ProviderPool(
                    [
                        _provider(locked.url, pki, client, "locked"),
                        _provider(limited.url, pki, client, "limited"),
                        _provider(good.url, pki, client, "good"),
                    ],
                    selection="priority",
                    clock=lambda: clock[0],
                )
                _, attempts = await pool.first(_ask)
                assert [a.error_class for a in attempts] == ["auth", "rate_limited", None]
                _, attempts = await pool.first(_ask)
                # 401: no retry; 429 with Retry-After 60: not asked again before then.
                assert [a.provider for a in attempts] == ["good"]
                assert (locked.requests, limited.requests) == (1, 1)

        asyncio.run(run())


def test_min_interval_spaces_requests(pki: Pki) -> None:
    with FakeTsa(pki) as server:

        async def run() -> float:
            async with httpx.AsyncClient() as client:
                provider = _provider(server.url, pki, client)
                provider.min_interval = 0.3
                pool = ProviderPool([provider])
                loop = asyncio.get_running_loop()
                start = loop.time()
                await _pool_run(pool, 3)
                return loop.time() - start

        elapsed = asyncio.run(run())
        assert elapsed >= 0.6  # two waits of min_interval between three requests
        assert server.requests == 3


def test_every_tsa_down_gives_no_token_and_all_attempts(pki: Pki) -> None:
    with FakeTsa(pki, mode="status_500") as one, FakeTsa(pki, mode="garbage") as two:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                pool = ProviderPool(
                    [
                        _provider(one.url, pki, client, "one"),
                        _provider(two.url, pki, client, "two"),
                    ],
                    selection="priority",
                )
                stamped, attempts = await pool.first(_ask)
                assert stamped is None
                assert [(a.provider, a.error_class) for a in attempts] == [
                    ("one", "http_status"),
                    ("two", "parse"),
                ]

        asyncio.run(run())
