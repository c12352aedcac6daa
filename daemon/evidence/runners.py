"""The evidence runners of the configured kinds: the service's one door into this wing.

The daemon builds an :class:`EvidenceRunners` once and hands it what a configuration asks for;
it starts, reconfigures and stops the job runners to match (DESIGN §3: "job runner"). Building
(:meth:`EvidenceRunners.prepare`) is separate from applying (:meth:`EvidenceRunners.apply`) so
that a reload checks everything — trust files, secrets — before anything changes, and a refused
reload leaves the running configuration untouched.

Stopping a runner loses nothing: its pending jobs stay in the index and run when a watch asks
for the kind again, and the providers' breakers, rests and counters carry over to the pool of
the next configuration (:meth:`~stampd.daemon.evidence.pool.ProviderPool.take_over`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from stampd.daemon.config.model import Config
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.stamping import TsrStamper
from stampd.daemon.evidence.tsa_setup import configured_tsas
from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.recorder import Recorder
from stampd.store.index.jobs import Attempt, NewProof
from stampd.store.kinds import EvidenceKind

log = get_logger("stampd.evidence")

#: Called with the kind and the attempts of each request round (the daemon's metrics).
AttemptsHook = Callable[[str, Sequence[Attempt]], None]


@dataclass(frozen=True)
class RunnerSetup:
    """What :meth:`EvidenceRunners.prepare` built from one configuration, not yet in use."""

    config: Config
    #: The TSAs as a failover pool and each TSA's trust roots, when a watch asks for ``tsr``.
    tsas: _TsaSetup | None


@dataclass(frozen=True)
class _TsaSetup:
    pool: ProviderPool
    anchors: Mapping[str, Sequence[x509.Certificate]]


class EvidenceRunners:
    """Starts, reconfigures and stops one job runner per evidence kind the watches ask for."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        state_dir: Path,
        locks: PathLocks,
        on_attempts: AttemptsHook | None = None,
    ) -> None:
        self._recorder = recorder
        self._state_dir = state_dir
        self._locks = locks
        self._on_attempts = on_attempts
        self._http: httpx.AsyncClient | None = None
        self._stamper: TsrStamper | None = None
        self._task: asyncio.Task[None] | None = None
        #: The last TSA pool applied; a reload's new pool takes over its providers' state.
        self._tsa_pool: ProviderPool | None = None
        self._paused = False

    # --- configuration --------------------------------------------------------------------

    def prepare(self, config: Config) -> RunnerSetup:
        """Build what ``config`` asks for, without using it yet.

        A trust file without roots or an unreadable secret is a configuration error (raised
        here: exit 2 at start, a refused reload later), not a failure of every job.
        """
        if not any(EvidenceKind.TSR in watch.evidence for watch in config.watches):
            return RunnerSetup(config, None)
        timestamp = config.timestamp
        if self._http is None:
            self._http = httpx.AsyncClient()
        tsas = configured_tsas(timestamp, self._http)
        pool = ProviderPool(
            tsas.providers, selection=timestamp.selection, cooldown=timestamp.cooldown
        )
        anchors = {name: tuple(roots) for name, roots in tsas.anchors.items()}
        return RunnerSetup(config, _TsaSetup(pool, anchors))

    def apply(self, setup: RunnerSetup, layouts: Mapping[int, Any]) -> None:
        """Start, reconfigure or stop the runners to match ``setup``; ``layouts`` maps each
        watch id to its sidecar layout. Must run on the loop."""
        tsas = setup.tsas
        if tsas is None:
            if self._task is not None:
                self._task.cancel()
                log.info("tsr_runner_stopped", reason="no watch asks for tsr evidence")
            self._stamper = self._task = None
            return
        if self._tsa_pool is not None:
            kept = tsas.pool.take_over(self._tsa_pool)
            reset = [p.name for p in tsas.pool.providers if p.name not in kept]
            log.info("tsa_state_kept", kept=list(kept), reset=reset)
        self._tsa_pool = tsas.pool
        timestamp = setup.config.timestamp
        if self._stamper is not None:
            self._stamper.reconfigure(
                pool=tsas.pool,
                anchors=tsas.anchors,
                digest_alg=timestamp.digest,
                layouts=layouts,
                retry=timestamp.retry,
                retry_max=timestamp.retry_max,
            )
            return
        self._stamper = TsrStamper(
            recorder=self._recorder,
            pool=tsas.pool,
            anchors=tsas.anchors,
            state_dir=self._state_dir,
            digest_alg=timestamp.digest,
            layouts=layouts,
            retry=timestamp.retry,
            retry_max=timestamp.retry_max,
            locks=self._locks,
        )
        self._stamper.paused = self._paused
        hook = self._on_attempts
        if hook is not None:
            self._stamper.on_attempts = lambda attempts: hook(EvidenceKind.TSR, attempts)
        self._task = asyncio.create_task(self._stamper.run())

    # --- while running ----------------------------------------------------------------------

    def wake(self) -> None:
        """New jobs were committed: every runner of now looks for due jobs at once."""
        if self._stamper is not None:
            self._stamper.wake()

    def pause(self) -> None:
        """``stampd pause``: no new round starts; rounds in progress finish."""
        self._paused = True
        if self._stamper is not None:
            self._stamper.paused = True

    def resume(self) -> None:
        self._paused = False
        if self._stamper is not None:
            self._stamper.paused = False
            self._stamper.wake()

    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """The running runners' tasks by component name (the health check watches them)."""
        return {"stamping": self._task} if self._task is not None else {}

    def status(self) -> dict[str, dict[str, Any] | None]:
        """Each available kind's runner status for the control ``status`` (None: not running)."""
        return {EvidenceKind.TSR: self._stamper.status() if self._stamper else None}

    def in_flight(self) -> int:
        """Jobs in progress across every runner."""
        return self._stamper.status()["in_flight"] if self._stamper else 0

    def providers_up(self) -> tuple[tuple[str, bool], ...]:
        """Each provider's name and whether its breaker is closed (the metrics)."""
        report = self._stamper.status()["providers"] if self._stamper else []
        return tuple((p["name"], p["breaker"] == "closed") for p in report)

    def adoptable(self, kind: str, data: bytes, *, sha256: str, sha512: str) -> NewProof | None:
        """The proof row for sidecar bytes that verify for this content, else None (repair)."""
        if self._stamper is None:
            return None
        return self._stamper.adoptable(kind, data, sha256=sha256, sha512=sha512)

    async def close(self) -> None:
        """Stop every runner (pending jobs stay in the index) and close the HTTP client."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._stamper = self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
