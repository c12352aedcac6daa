"""The ``tsr`` strategy: RFC 3161 timestamps, one TSA request per file, failover between TSAs.

What is RFC 3161 about running ``tsr`` jobs lives here; the job runner (daemon/evidence/runner.py)
does the rest. A request goes to the TSAs of ``[[timestamp.tsa]]`` through the failover pool
(:meth:`~stampd.daemon.evidence.pool.ProviderPool.first`, DESIGN §6): the first verified token
wins. The HTTP client of one TSA is daemon/evidence/tsa.py; reading its trust and secret files
is daemon/evidence/tsa_setup.py; checking a token is the :class:`TsrVerifier` built from the
same roots (store/tsr_verifier.py), which adoption, reuse and sidecar repair use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from stampd.daemon.config.model import Config
from stampd.daemon.evidence.backoff import Backoff
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.roles import TimestampProvider
from stampd.daemon.evidence.strategy import NotObtained, Obtained, Outcome, ProofRequest, Strategy
from stampd.daemon.evidence.tsa_setup import configured_tsas
from stampd.daemon.service.logs import get_logger
from stampd.store.errors import ErrorClass
from stampd.store.index.jobs import Attempt
from stampd.store.kinds import EvidenceKind
from stampd.store.tsr_verifier import AnchorSet, TsrVerifier

log = get_logger("stampd.tsr")


class TsrStrategy:
    """Gets RFC 3161 tokens from a pool of TSAs, one request per file."""

    kind: str = EvidenceKind.TSR
    component: str = "stamping"
    done_event: str = "tsr_stamped"
    digest_setting: str = "timestamp.digest"
    batch: int = 1
    window: float = 0.0
    #: Never used: a token is complete when it is issued (renewal makes ``ers`` evidence).
    upgrade_after: float = 0.0

    def __init__(
        self,
        *,
        pool: ProviderPool[TimestampProvider],
        verifier: TsrVerifier,
        digest_alg: str,
        backoff: Backoff,
    ) -> None:
        self.pool = pool
        self._verifier = verifier
        self.digest_alg = digest_alg
        self.backoff = backoff

    @property
    def verifier(self) -> TsrVerifier:
        """Every configured TSA's roots, by TSA name."""
        return self._verifier

    async def obtain(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        """One token per request, each from the first TSA that delivers a verified one."""
        return [await self._one(request) for request in requests]

    async def _one(self, request: ProofRequest) -> Outcome:
        algorithm = self.digest_alg
        stamped, attempts = await self.pool.first(
            lambda tsa: tsa.timestamp(request.digest, algorithm)
        )
        if stamped is None:
            return NotObtained(*_failure_summary(attempts), attempts=attempts)
        return Obtained(stamped.response, stamped.verdict, attempts)

    async def extend(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        """Never called: ``tsr`` has only ``obtain`` jobs (its renewal makes ``ers`` evidence)."""
        raise ValueError("tsr jobs are never upgraded or renewed")

    def take_over(self, old: Strategy) -> None:
        """TSAs that did not change keep what the old pool learnt of them."""
        if not isinstance(old, TsrStrategy):
            return
        kept = self.pool.take_over(old.pool)
        reset = [p.name for p in self.pool.providers if p.name not in kept]
        log.info("tsa_state_kept", kept=list(kept), reset=reset)

    def report(self) -> list[dict[str, Any]]:
        """Each TSA's health."""
        return self.pool.report()

    def close(self) -> None:
        """Nothing of its own to release: the TSAs use the runners' shared HTTP client."""


def strategy_from_config(config: Config, *, http: httpx.AsyncClient) -> Strategy:
    """The ``tsr`` strategy of ``[timestamp]``: its TSAs (trust and secret files read: a bad
    one raises ``ConfigError`` naming the key), pool and retry settings."""
    timestamp = config.timestamp
    tsas = configured_tsas(timestamp, http)
    pool: ProviderPool[TimestampProvider] = ProviderPool(
        tsas.providers, selection=timestamp.selection, cooldown=timestamp.cooldown
    )
    verifier = TsrVerifier([AnchorSet(name, roots) for name, roots in tsas.anchors.items()])
    return TsrStrategy(
        pool=pool,
        verifier=verifier,
        digest_alg=timestamp.digest,
        backoff=Backoff(timestamp.retry, timestamp.retry_max),
    )


def _failure_summary(attempts: Sequence[Attempt]) -> tuple[str, str]:
    """The job-level error class and message of a round in which no TSA delivered."""
    if not attempts:
        return (
            ErrorClass.UNAVAILABLE,
            "every TSA is resting after failures or asked us to wait; see `stampd providers`",
        )
    tried = "; ".join(f"{a.provider}: {a.error_class} ({a.message})" for a in attempts)
    return str(attempts[-1].error_class), tried
