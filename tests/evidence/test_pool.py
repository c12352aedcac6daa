"""The failover pool's circuit breaker under concurrency, and its state across a reload.

TSAs are the loopback fakes of tests/fake_tsa.py. Where a test must hold one request in
flight (the probe of a half-open breaker), the real provider is wrapped in :class:`Gated`,
which waits for the test's go before sending the request over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Hashable, Iterator
from typing import Any

import httpx
import pytest

from stampd.daemon.evidence.pool import BREAKER_THRESHOLD, COOLDOWN_GROWTH, ProviderPool
from stampd.daemon.evidence.roles import ProviderFailure, Stamped, TimestampProvider
from stampd.daemon.evidence.tsa import Rfc3161Provider
from stampd.store.errors import ErrorClass
from stampd.store.index.jobs import Attempt
from stampd.store.trust import load_anchors
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki

DIGEST = hashlib.sha256(b"a record\n").digest()
IN_FLIGHT = 10


def _stamp(tsa: TimestampProvider) -> Awaitable[Stamped]:
    """The request every test sends: a token for DIGEST."""
    return tsa.timestamp(DIGEST, "sha256")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Pool")


@pytest.fixture
def good(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as tsa:
        yield tsa


def _provider(tsa: FakeTsa, pki: Pki, client: httpx.AsyncClient, name: str) -> Rfc3161Provider:
    return Rfc3161Provider(
        name=name, url=tsa.url, client=client, anchors=load_anchors(pki.root_pem), timeout=5.0
    )


class Gated:
    """A real provider that, while ``gate`` is clear, waits for it before each request."""

    def __init__(self, inner: Rfc3161Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.min_interval = inner.min_interval
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    @property
    def identity(self) -> Hashable:
        return self.inner.identity

    async def timestamp(self, digest: bytes, algorithm: str) -> Stamped:
        self.waiting.set()
        await self.gate.wait()
        return await self.inner.timestamp(digest, algorithm)


#: Only so that a request wrongly queued behind a held probe fails the test instead of
#: hanging it; nothing is timed.
STUCK_S = 20


async def _together(pool: ProviderPool, count: int) -> list[tuple[Stamped | None, list[Attempt]]]:
    async with asyncio.timeout(STUCK_S):
        return list(await asyncio.gather(*(pool.first(_stamp) for _ in range(count))))


def _tried(results: list[tuple[Any, list[Attempt]]]) -> list[list[str]]:
    return [[attempt.provider for attempt in attempts] for _, attempts in results]


def test_requests_in_flight_to_a_failing_tsa_open_its_breaker_once(pki: Pki, good: FakeTsa) -> None:
    with FakeTsa(pki, mode="status_503_retry_after", retry_after=0) as busy:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                pool = ProviderPool(
                    [_provider(busy, pki, client, "busy"), _provider(good, pki, client, "good")],
                    selection="priority",
                )
                results = await _together(pool, IN_FLIGHT)
                assert all(stamped is not None for stamped, _ in results)
                # The first three fail at busy then go to good; the others were queued
                # behind them and pass the resting TSA by, with no attempt recorded for it.
                tried = _tried(results)
                assert tried.count(["busy", "good"]) == BREAKER_THRESHOLD
                assert tried.count(["good"]) == IN_FLIGHT - BREAKER_THRESHOLD
                health = pool.health["busy"]
                assert health.cooldown_s == pool.cooldown  # doubled zero times, not seven
                [report] = [p for p in pool.report() if p["name"] == "busy"]
                assert report["breaker"] == "open"
                assert 0 < report["resting_s"] <= pool.cooldown
                assert report["attempts"] == BREAKER_THRESHOLD

        asyncio.run(run())
        assert busy.requests == BREAKER_THRESHOLD
        assert good.requests == IN_FLIGHT


def test_an_auth_failure_rests_the_tsa_for_the_longest_rest_after_one_request(
    pki: Pki, good: FakeTsa
) -> None:
    with FakeTsa(pki, mode="status_401") as locked:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                pool = ProviderPool(
                    [
                        _provider(locked, pki, client, "locked"),
                        _provider(good, pki, client, "good"),
                    ],
                    selection="priority",
                )
                results = await _together(pool, IN_FLIGHT)
                assert _tried(results).count(["good"]) == IN_FLIGHT - 1
                assert pool.health["locked"].cooldown_s == pool.cooldown * COOLDOWN_GROWTH

        asyncio.run(run())
        assert locked.requests == 1


async def _open(pool: ProviderPool) -> None:
    for _ in range(BREAKER_THRESHOLD):
        await pool.first(_stamp)


def test_half_open_lets_one_probe_through_and_its_success_closes_the_breaker(
    pki: Pki, good: FakeTsa
) -> None:
    clock = [1000.0]
    with FakeTsa(pki, mode="status_500") as flaky:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                gated = Gated(_provider(flaky, pki, client, "flaky"))
                pool = ProviderPool(
                    [gated, _provider(good, pki, client, "good")],
                    selection="priority",
                    clock=lambda: clock[0],
                )
                await _open(pool)
                assert pool.health["flaky"].breaker(clock[0]) == "open"
                clock[0] += pool.cooldown + 1
                assert pool.health["flaky"].breaker(clock[0]) == "half-open"
                flaky.mode = "ok"
                gated.gate.clear()
                gated.waiting.clear()
                probe = asyncio.create_task(pool.first(_stamp))
                await gated.waiting.wait()
                # While the probe is out, every other request fails over at once.
                others = await _together(pool, IN_FLIGHT)
                assert _tried(others) == [["good"]] * IN_FLIGHT
                gated.gate.set()
                stamped, attempts = await probe
                assert stamped is not None and [a.provider for a in attempts] == ["flaky"]
                health = pool.health["flaky"]
                assert health.breaker(clock[0]) == "closed"
                assert (health.cooldown_s, health.consecutive_failures) == (0.0, 0)
                _, attempts = await pool.first(_stamp)
                assert [a.provider for a in attempts] == ["flaky"]  # in use again

        asyncio.run(run())
        assert flaky.requests == BREAKER_THRESHOLD + 2


def test_a_failed_probe_doubles_the_rest_once(pki: Pki, good: FakeTsa) -> None:
    clock = [1000.0]
    with FakeTsa(pki, mode="status_503_retry_after", retry_after=0) as down:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                gated = Gated(_provider(down, pki, client, "down"))
                pool = ProviderPool(
                    [gated, _provider(good, pki, client, "good")],
                    selection="priority",
                    cooldown=10.0,
                    clock=lambda: clock[0],
                )
                await _open(pool)
                health = pool.health["down"]
                assert health.cooldown_s == 10.0
                for rest in (20.0, 40.0, 80.0):
                    clock[0] = health.open_until + 1
                    gated.gate.clear()
                    gated.waiting.clear()
                    probe = asyncio.create_task(pool.first(_stamp))
                    await gated.waiting.wait()
                    others = asyncio.gather(*(pool.first(_stamp) for _ in range(IN_FLIGHT)))
                    await asyncio.sleep(0.05)  # the others are under way, queued or done
                    gated.gate.set()
                    async with asyncio.timeout(STUCK_S):
                        _, attempts = await probe
                    assert [(a.provider, a.http_status) for a in attempts] == [
                        ("down", 503),
                        ("good", 200),
                    ]
                    async with asyncio.timeout(STUCK_S):
                        assert _tried(list(await others)) == [["good"]] * IN_FLIGHT
                    assert health.cooldown_s == rest  # once per failed probe
                    assert health.open_until == clock[0] + rest
                # Capped at cooldown * COOLDOWN_GROWTH.
                for _ in range(6):
                    clock[0] = health.open_until + 1
                    await pool.first(_stamp)
                assert health.cooldown_s == 10.0 * COOLDOWN_GROWTH

        asyncio.run(run())
        assert down.requests == BREAKER_THRESHOLD + 3 + 6


# --- a reload: the new pool takes over -------------------------------------------------------


def test_a_new_pool_takes_over_the_state_of_unchanged_tsas_only(pki: Pki, good: FakeTsa) -> None:
    with FakeTsa(pki, mode="status_500") as bad:

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                old = ProviderPool(
                    [_provider(bad, pki, client, "bad"), _provider(good, pki, client, "good")],
                    selection="priority",
                )
                await _open(old)
                new = ProviderPool(
                    [_provider(bad, pki, client, "bad"), _provider(good, pki, client, "good")],
                    selection="priority",
                )
                assert new.take_over(old) == ("bad", "good")
                assert new.report() == old.report()
                assert new.report()[0]["breaker"] == "open"
                _, attempts = await new.first(_stamp)
                assert [a.provider for a in attempts] == ["good"]
                # A round still running on the old pool counts in the new one.
                await old.first(_stamp)
                assert new.health["good"].attempts == BREAKER_THRESHOLD + 2

                moved = Rfc3161Provider(
                    name="bad",
                    url=bad.url + "/elsewhere",
                    client=client,
                    anchors=load_anchors(pki.root_pem),
                    timeout=5.0,
                )
                third = ProviderPool(
                    [moved, _provider(good, pki, client, "good")], selection="priority"
                )
                assert third.take_over(new) == ("good",)
                assert third.health["bad"].breaker(0) == "closed"
                assert third.health["bad"].attempts == 0
                assert third.health["good"].attempts == BREAKER_THRESHOLD + 2

        asyncio.run(run())


def test_the_round_robin_cursor_carries_over_when_the_tsas_are_the_same(pki: Pki) -> None:
    with FakeTsa(pki) as first, FakeTsa(pki) as second:

        async def run() -> None:
            async with httpx.AsyncClient() as client:

                def pool() -> ProviderPool:
                    return ProviderPool(
                        [_provider(first, pki, client, "a"), _provider(second, pki, client, "b")]
                    )

                old = pool()
                _, attempts = await old.first(_stamp)
                assert [a.provider for a in attempts] == ["a"]
                new = pool()
                new.take_over(old)
                _, attempts = await new.first(_stamp)
                assert [a.provider for a in attempts] == ["b"]
                # Another list (here: the order changed) starts at its first TSA again.
                swapped = ProviderPool(
                    [_provider(second, pki, client, "b"), _provider(first, pki, client, "a")]
                )
                swapped.take_over(new)
                _, attempts = await swapped.first(_stamp)
                assert [a.provider for a in attempts] == ["b"]

        asyncio.run(run())


# --- quorum: every provider at once, under one deadline --------------------------------------


class Notary:
    """A provider of the tests' own role: answers, fails, or never answers in time."""

    def __init__(self, name: str, behaviour: str) -> None:
        self.name = name
        self.min_interval = 0.0
        self.behaviour = behaviour
        self.cancelled = False

    @property
    def identity(self) -> Hashable:
        return self.name

    async def attest(self) -> str:
        if self.behaviour == "fail":
            raise ProviderFailure(ErrorClass.HTTP_STATUS, "HTTP 500", http_status=500)
        if self.behaviour == "slow":
            try:
                await asyncio.Event().wait()  # past any deadline
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return f"receipt from {self.name}"


def _notaries() -> tuple[ProviderPool[Notary], Notary]:
    """Two that answer, one that fails, one that is still busy when the deadline passes."""
    slow = Notary("slow", "slow")
    notaries = [Notary("alpha", "ok"), Notary("broken", "fail"), slow, Notary("beta", "ok")]
    return ProviderPool(notaries, selection="priority"), slow


def test_a_quorum_of_two_is_met_despite_a_failing_and_a_slow_provider() -> None:
    async def run() -> None:
        pool, slow = _notaries()
        async with asyncio.timeout(STUCK_S):
            quorum = await pool.quorum(2, Notary.attest, timeout=0.3)
        assert quorum.met
        assert [(r.provider, r.value) for r in quorum.replies] == [
            ("alpha", "receipt from alpha"),
            ("beta", "receipt from beta"),
        ]
        # Every provider was asked at once, and every attempt is there, in the pool's order.
        assert [(a.provider, a.error_class) for a in quorum.attempts] == [
            ("alpha", None),
            ("broken", "http_status"),
            ("slow", "timeout"),
            ("beta", None),
        ]
        assert slow.cancelled

    asyncio.run(run())


def test_a_quorum_of_three_fails_with_every_attempt_and_the_slow_one_timed_out() -> None:
    async def run() -> None:
        pool, slow = _notaries()
        async with asyncio.timeout(STUCK_S):
            quorum = await pool.quorum(3, Notary.attest, timeout=0.3)
        assert not quorum.met
        assert [r.provider for r in quorum.replies] == ["alpha", "beta"]
        assert [(a.provider, a.error_class, a.http_status) for a in quorum.attempts] == [
            ("alpha", None, 200),
            ("broken", "http_status", 500),
            ("slow", "timeout", None),
            ("beta", None, 200),
        ]
        assert slow.cancelled  # nothing is left running after the deadline
        # A provider too slow for the round is a failure like any other for its breaker.
        assert pool.health["slow"].consecutive_failures == 1
        assert pool.health["broken"].consecutive_failures == 1
        assert pool.health["alpha"].consecutive_failures == 0

    asyncio.run(run())


def test_a_quorum_skips_resting_providers_without_an_attempt() -> None:
    async def run() -> None:
        pool = ProviderPool([Notary("good", "ok"), Notary("broken", "fail")])
        for _ in range(BREAKER_THRESHOLD):
            await pool.quorum(1, Notary.attest, timeout=5)
        assert pool.health["broken"].breaker(time.monotonic()) == "open"
        quorum = await pool.quorum(2, Notary.attest, timeout=5)
        assert not quorum.met
        assert [a.provider for a in quorum.attempts] == ["good"]
        with pytest.raises(ValueError, match="at least one reply"):
            await pool.quorum(0, Notary.attest, timeout=5)

    asyncio.run(run())
