"""Failover over the providers of one evidence kind (DESIGN §6).

For each job the pool tries every eligible provider in turn — round-robin (a cursor that
advances per job, spreading load) or priority (configuration order) — until one succeeds, and
returns the outcome with every attempt made, as a 502 with a ``failures`` list would.

A provider is skipped for this job when:

- its circuit breaker is open: after :data:`BREAKER_THRESHOLD` failures in a row it rests for a
  cool-down that doubles on each new failure (capped), then one probe decides;
- it asked us to wait (``Retry-After`` on 429/503) or its ``min_interval`` has not passed, and
  the wait is longer than :data:`MAX_WAIT_S` (a shorter wait is simply waited out);
- it answered 401/402/403: credentials or quota will not fix themselves, so the breaker opens
  at once for the longest cool-down and the operator is told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stampd.daemon.logs import get_logger
from stampd.daemon.providers.base import (
    NO_RETRY,
    Attempt,
    ProviderFailure,
    Stamped,
    TimestampProvider,
)
from stampd.store.index import utc_now

log = get_logger("stampd.pool")

BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 30.0
#: The longest rest is this many times the first one (30 s → 10 min by default).
COOLDOWN_GROWTH = 20
#: Longest wait for a provider's min_interval or Retry-After inside one job.
MAX_WAIT_S = 5.0


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

    def breaker(self, now: float) -> str:
        """``closed`` (in use), ``open`` (resting) or ``half-open`` (next try is a probe)."""
        if self.consecutive_failures < BREAKER_THRESHOLD and self.open_until == 0.0:
            return "closed"
        return "open" if now < self.open_until else "half-open"


class ProviderPool:
    """Failover over ``providers`` for one evidence kind."""

    def __init__(
        self,
        providers: Sequence[TimestampProvider],
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

    def _order(self) -> list[TimestampProvider]:
        if self.selection == "priority" or not self.providers:
            return list(self.providers)
        start = self._cursor % len(self.providers)
        self._cursor += 1
        return self.providers[start:] + self.providers[:start]

    async def timestamp(
        self, digest: bytes, algorithm: str
    ) -> tuple[Stamped | None, list[Attempt]]:
        """Try providers until one returns a verified token; every try is in the attempts."""
        attempts: list[Attempt] = []
        for provider in self._order():
            health = self.health[provider.name]
            if not await self._ready(provider, health):
                continue
            started_at = utc_now()
            start = time.monotonic()
            try:
                async with self._locks[provider.name]:
                    stamped = await provider.timestamp(digest, algorithm)
                    self._pace(provider, health)
            except ProviderFailure as failure:
                latency = (time.monotonic() - start) * 1000
                self._pace(provider, health)
                attempts.append(
                    Attempt(
                        provider.name,
                        started_at,
                        latency,
                        failure.error_class,
                        failure.http_status,
                        failure.message,
                    )
                )
                self._failed(provider, health, failure)
                continue
            latency = (time.monotonic() - start) * 1000
            attempts.append(Attempt(provider.name, started_at, latency, http_status=200))
            health.attempts += 1
            health.consecutive_failures = 0
            health.cooldown_s = 0.0
            health.open_until = 0.0
            health.last_success_at = started_at
            return stamped, attempts
        return None, attempts

    async def _ready(self, provider: TimestampProvider, health: ProviderHealth) -> bool:
        now = self._clock()
        if health.breaker(now) == "open":
            return False
        wait = health.not_before - now
        if wait > MAX_WAIT_S:
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    def _pace(self, provider: TimestampProvider, health: ProviderHealth) -> None:
        health.not_before = max(health.not_before, self._clock() + provider.min_interval)

    def _failed(
        self, provider: TimestampProvider, health: ProviderHealth, failure: ProviderFailure
    ) -> None:
        now = self._clock()
        health.attempts += 1
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error_class = failure.error_class
        if failure.retry_after is not None:
            health.not_before = max(health.not_before, now + failure.retry_after)
        longest = self.cooldown * COOLDOWN_GROWTH
        if failure.error_class in NO_RETRY:
            cooldown: float | None = longest
        elif health.consecutive_failures >= BREAKER_THRESHOLD:
            cooldown = min(longest, max(self.cooldown, health.cooldown_s * 2))
        else:
            cooldown = None
        fields = {
            "provider": provider.name,
            "error_class": failure.error_class,
            "http_status": failure.http_status,
            "message": failure.message,
        }
        if cooldown is None:
            log.info("provider_attempt_failed", **fields)
            return
        health.cooldown_s = cooldown
        health.open_until = now + cooldown
        log.warning("provider_breaker_open", cooldown_s=cooldown, **fields)
