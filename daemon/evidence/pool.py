"""The providers of one evidence kind, whatever their role: failover and quorum (DESIGN §6).

A request is a call the caller makes of one provider (``lambda tsa: tsa.timestamp(...)``); the
pool decides which providers it goes to, and returns the outcome with every attempt made, as a
502 with a ``failures`` list would:

- :meth:`ProviderPool.first` tries every eligible provider in turn — round-robin (a cursor that
  advances per request, spreading load) or priority (configuration order) — until one
  succeeds (a TSA: one token is enough);
- :meth:`ProviderPool.quorum` asks every eligible provider at once under one deadline and
  succeeds when at least ``n`` of them answer (OpenTimestamps: at least ``min_replies``
  calendars, reference/opentimestamps.md §3).

One request at a time goes to each provider (a lock per provider). A provider is skipped for
this job, and no attempt is recorded for it, when:

- its circuit breaker is open: after :data:`BREAKER_THRESHOLD` failures in a row it rests for
  ``cooldown``; when the rest is over it is half-open and exactly one request probes it while
  the others pass it by. A successful probe closes the breaker; a failed one rests it again
  for twice as long (capped at ``cooldown`` * :data:`COOLDOWN_GROWTH`);
- it asked us to wait (``Retry-After`` on 429/503) or its ``min_interval`` has not passed, and
  the wait is longer than :data:`MAX_WAIT_S` (a shorter wait is simply waited out);
- it answered 401/402/403: credentials or quota will not fix themselves, so the breaker opens
  at once for the longest cool-down and the operator is told.

Eligibility is checked before a request queues for a provider and again when its turn comes,
so requests queued behind the one that opened the breaker fail over at once instead of asking
a resting provider. Each opening is one episode: a request remembers the breaker's *epoch* when
it is sent, and only a failure of the current epoch counts towards the breaker, so requests
that were already under way when it opened neither re-open it nor double the rest again.

The pool's knowledge of a provider outlives the pool: a reload builds a new pool, which
:meth:`ProviderPool.take_over` gives the state of every provider that is still the same party.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from stampd.daemon.evidence.roles import Provider, ProviderFailure
from stampd.daemon.service.logs import get_logger
from stampd.store.errors import NO_RETRY, ErrorClass
from stampd.store.index.jobs import Attempt
from stampd.store.index.times import utc_now

log = get_logger("stampd.pool")

BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 30.0
#: The longest rest is this many times the first one (30 s → 10 min by default).
COOLDOWN_GROWTH = 20
#: Longest wait for a provider's min_interval or Retry-After inside one job.
MAX_WAIT_S = 5.0

Admission = Literal["send", "probe"]

P = TypeVar("P", bound=Provider)
R = TypeVar("R")
#: One call to one provider: what a request asks of each provider it goes to.
Request = Callable[[P], Awaitable[R]]


@dataclass(frozen=True)
class Reply(Generic[R]):
    """One provider's successful answer in a quorum."""

    provider: str
    value: R


@dataclass(frozen=True)
class Quorum(Generic[R]):
    """What :meth:`ProviderPool.quorum` got: every success and every attempt."""

    needed: int
    replies: tuple[Reply[R], ...]
    attempts: tuple[Attempt, ...]

    @property
    def met(self) -> bool:
        """Whether at least ``needed`` providers answered."""
        return len(self.replies) >= self.needed


@dataclass
class ProviderHealth:
    """What the pool knows of one provider (shown by ``stampd providers`` / status)."""

    name: str
    attempts: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    cooldown_s: float = 0.0
    open_until: float = 0.0
    not_before: float = 0.0
    last_error_class: str | None = None
    last_success_at: str | None = None
    #: Advances each time the breaker opens or closes; a request sent in an earlier epoch
    #: belongs to an episode that has already been decided.
    epoch: int = 0
    #: True while the one probe of a half-open breaker is under way.
    probing: bool = False

    def breaker(self, now: float) -> str:
        """``closed`` (in use), ``open`` (resting) or ``half-open`` (next try is a probe)."""
        if self.open_until == 0.0:
            return "closed"
        return "open" if now < self.open_until else "half-open"


class ProviderPool(Generic[P]):
    """The providers of one evidence kind: failover (:meth:`first`), quorum (:meth:`quorum`)."""

    def __init__(
        self,
        providers: Sequence[P],
        *,
        selection: str = "round-robin",
        cooldown: float = BREAKER_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = list(providers)
        self.selection = selection
        #: The first rest after repeated failures; it doubles up to :data:`COOLDOWN_GROWTH` x.
        self.cooldown = cooldown
        self._clock = clock
        self._cursor = 0
        self.health = {provider.name: ProviderHealth(provider.name) for provider in providers}
        self._locks = {provider.name: asyncio.Lock() for provider in providers}

    def take_over(self, old: ProviderPool[P]) -> tuple[str, ...]:
        """Continue where ``old`` (the pool before a reload) left off; the names kept.

        Every provider whose :attr:`~stampd.daemon.evidence.roles.Provider.identity` is
        unchanged shares the old pool's health record and request lock — shares, not copies,
        so a round still in flight on the old pool updates the breaker this pool uses, and the
        two pools never send two requests at once to one provider. A provider that changed
        (another URL, credentials, trust roots, policy or timeout) starts afresh: what its
        breaker learnt was about another party, or about the mistake the reload fixed. The
        round-robin cursor carries over when the providers are the same names in the same
        order.
        """
        before = {provider.name: provider for provider in old.providers}
        kept = []
        for provider in self.providers:
            previous = before.get(provider.name)
            if previous is None or previous.identity != provider.identity:
                continue
            self.health[provider.name] = old.health[provider.name]
            self._locks[provider.name] = old._locks[provider.name]
            kept.append(provider.name)
        if [p.name for p in self.providers] == [p.name for p in old.providers]:
            self._cursor = old._cursor
        return tuple(kept)

    def report(self) -> list[dict[str, Any]]:
        """Each provider's health as JSON-ready data (control ``status``, ``stampd providers``)."""
        now = self._clock()
        return [
            {
                "name": health.name,
                "breaker": health.breaker(now),
                "resting_s": round(max(0.0, health.open_until - now), 1),
                "attempts": health.attempts,
                "failures": health.failures,
                "consecutive_failures": health.consecutive_failures,
                "last_error_class": health.last_error_class,
                "last_success_at": health.last_success_at,
            }
            for health in self.health.values()
        ]

    def _order(self) -> list[P]:
        if self.selection == "priority" or not self.providers:
            return list(self.providers)
        start = self._cursor % len(self.providers)
        self._cursor += 1
        return self.providers[start:] + self.providers[:start]

    async def first(self, request: Request[P, R]) -> tuple[R | None, list[Attempt]]:
        """Try providers in turn until one answers; the answer and every attempt made."""
        attempts: list[Attempt] = []
        for provider in self._order():
            # Checked before queueing: no point waiting for a provider that would be skipped.
            if self._admit(self.health[provider.name]) is None:
                continue
            outcome = await self._try(provider, request)
            if outcome is None:
                continue
            attempt, reply = outcome
            attempts.append(attempt)
            if reply is not None:
                return reply.value, attempts
        return None, attempts

    async def quorum(self, needed: int, request: Request[P, R], *, timeout: float) -> Quorum[R]:
        """Ask every eligible provider at once; met when ``needed`` answer within ``timeout``.

        One deadline holds for all of them together (``ots stamp --timeout``, reference/
        opentimestamps.md §3): a provider still busy when it passes is an attempt with
        ``error_class`` ``timeout`` and counts towards its breaker like any failure; one still
        waiting for its turn (pacing, a request ahead of it) is skipped without an attempt.
        """
        if needed < 1:
            raise ValueError(f"a quorum needs at least one reply, not {needed}")
        deadline = asyncio.get_running_loop().time() + timeout
        eligible = [p for p in self._order() if self._admit(self.health[p.name]) is not None]
        outcomes = await asyncio.gather(
            *(self._try(provider, request, deadline=deadline) for provider in eligible)
        )
        replies: list[Reply[R]] = []
        attempts: list[Attempt] = []
        for outcome in outcomes:
            if outcome is None:
                continue
            attempt, reply = outcome
            attempts.append(attempt)
            if reply is not None:
                replies.append(reply)
        return Quorum(needed, tuple(replies), tuple(attempts))

    def _admit(self, health: ProviderHealth) -> Admission | None:
        """Whether a request may go to this provider now: as usual, as the probe, or not."""
        now = self._clock()
        state = health.breaker(now)
        if state == "open" or (state == "half-open" and health.probing):
            return None
        if health.not_before - now > MAX_WAIT_S:
            return None
        return "probe" if state == "half-open" else "send"

    async def _try(
        self, provider: P, request: Request[P, R], *, deadline: float | None = None
    ) -> tuple[Attempt, Reply[R] | None] | None:
        """One request to ``provider`` when its turn comes: the attempt and the answer (None:
        it failed); None when it was skipped (or its turn did not come by ``deadline``)."""
        health = self.health[provider.name]
        lock = self._locks[provider.name]
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError:
            return None
        try:
            # Checked again now that it is our turn: the request ahead of us may have opened
            # the breaker, asked us to wait, or be the probe.
            admission = self._admit(health)
            if admission is None:
                return None
            wait = health.not_before - self._clock()
            if deadline is not None and wait > deadline - asyncio.get_running_loop().time():
                return None  # its pacing outlasts the round
            probe = admission == "probe"
            if probe:
                health.probing = True  # the others pass it by until the probe is done
            try:
                if wait > 0:
                    await asyncio.sleep(wait)  # under the lock: min_interval holds per provider
                return await self._send(provider, health, request, probe=probe, deadline=deadline)
            finally:
                if probe:
                    health.probing = False  # also when cancelled: the next request probes
        finally:
            lock.release()

    async def _send(
        self,
        provider: P,
        health: ProviderHealth,
        request: Request[P, R],
        *,
        probe: bool,
        deadline: float | None,
    ) -> tuple[Attempt, Reply[R] | None]:
        epoch = health.epoch
        started_at = utc_now()
        start = time.monotonic()
        try:
            async with asyncio.timeout_at(deadline):
                value = await request(provider)
        except ProviderFailure as failure:
            latency = (time.monotonic() - start) * 1000
            self._pace(provider, health)
            self._failed(provider, health, failure, current=epoch == health.epoch, probe=probe)
            attempt = Attempt(
                provider.name,
                started_at,
                latency,
                failure.error_class,
                failure.http_status,
                failure.message,
            )
            return attempt, None
        except TimeoutError:
            latency = (time.monotonic() - start) * 1000
            late = ProviderFailure(
                ErrorClass.TIMEOUT, f"no answer within the round's deadline ({latency:.0f} ms)"
            )
            self._pace(provider, health)
            self._failed(provider, health, late, current=epoch == health.epoch, probe=probe)
            return Attempt(provider.name, started_at, latency, late.error_class), None
        latency = (time.monotonic() - start) * 1000
        self._pace(provider, health)
        self._succeeded(provider, health, started_at, current=epoch == health.epoch)
        attempt = Attempt(provider.name, started_at, latency, http_status=200)
        return attempt, Reply(provider.name, value)

    def _pace(self, provider: P, health: ProviderHealth) -> None:
        health.not_before = max(health.not_before, self._clock() + provider.min_interval)

    def _succeeded(
        self, provider: P, health: ProviderHealth, started_at: str, *, current: bool
    ) -> None:
        health.attempts += 1
        health.last_success_at = started_at
        if not current:
            return  # the breaker changed while this was under way; what it decided stands
        health.consecutive_failures = 0
        if health.open_until != 0.0:
            health.epoch += 1
            log.info("provider_breaker_closed", provider=provider.name)
        health.cooldown_s = 0.0
        health.open_until = 0.0

    def _failed(
        self,
        provider: P,
        health: ProviderHealth,
        failure: ProviderFailure,
        *,
        current: bool,
        probe: bool,
    ) -> None:
        now = self._clock()
        health.attempts += 1
        health.failures += 1
        health.last_error_class = failure.error_class
        if failure.retry_after is not None:
            health.not_before = max(health.not_before, now + failure.retry_after)
        fields = {
            "provider": provider.name,
            "error_class": failure.error_class,
            "http_status": failure.http_status,
            "message": failure.message,
        }
        if not current:
            # Sent before the breaker last opened or closed: the same episode, already counted.
            log.info("provider_attempt_failed", breaker="already decided", **fields)
            return
        health.consecutive_failures += 1
        longest = self.cooldown * COOLDOWN_GROWTH
        if failure.error_class in NO_RETRY:
            cooldown: float | None = longest
        elif probe or health.consecutive_failures >= BREAKER_THRESHOLD:
            # cooldown_s is 0 while the breaker is closed: the first rest is `cooldown`, and
            # each failed probe doubles the last rest once.
            cooldown = min(longest, max(self.cooldown, health.cooldown_s * 2))
        else:
            cooldown = None
        if cooldown is None:
            log.info("provider_attempt_failed", **fields)
            return
        health.cooldown_s = cooldown
        health.open_until = now + cooldown
        health.epoch += 1
        log.warning("provider_breaker_open", cooldown_s=cooldown, probe=probe, **fields)
