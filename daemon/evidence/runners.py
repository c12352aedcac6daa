"""The job runners of the configured kinds: the service's one door into this wing.

The daemon builds an :class:`EvidenceRunners` once and hands it what a configuration asks for;
it starts, reconfigures and stops one :class:`~stampd.daemon.evidence.runner.JobRunner` per
evidence kind to match (DESIGN §3: "job runner"), each with the strategy its registry entry
names (store/kinds.py, daemon/evidence/entries.py). Building (:meth:`EvidenceRunners.prepare`)
is separate from applying (:meth:`EvidenceRunners.apply`) so that a reload checks everything —
trust files, secrets — before anything changes, and a refused reload leaves the running
configuration untouched.

Stopping a runner loses nothing: its pending jobs stay in the index and run when a watch asks
for the kind again, and the providers' breakers, rests and counters carry over to the
strategy of the next configuration (:meth:`~stampd.daemon.evidence.strategy.Strategy.take_over`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stampd.daemon.config.model import Config
from stampd.daemon.evidence.entries import strategy_factory
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.runner import JobRunner
from stampd.daemon.evidence.strategy import Strategy
from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.recorder import Recorder
from stampd.store import kinds
from stampd.store.files.sidecar import Layout
from stampd.store.index.jobs import Attempt, NewProof

log = get_logger("stampd.evidence")

#: Called with the kind and the attempts of each request round (the daemon's metrics).
AttemptsHook = Callable[[str, Sequence[Attempt]], None]


@dataclass(frozen=True)
class RunnerSetup:
    """What :meth:`EvidenceRunners.prepare` built from one configuration, not yet in use."""

    config: Config
    #: One strategy per available kind a watch asks for, by kind, in the watches' order.
    strategies: Mapping[str, Strategy]


@dataclass
class _Running:
    runner: JobRunner
    task: asyncio.Task[None]


class EvidenceRunners:
    """Starts, reconfigures and stops one job runner per evidence kind the watches ask for."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        state_dir: Path,
        locks: PathLocks,
        on_attempts: AttemptsHook | None = None,
        held: bool = False,
    ) -> None:
        self._recorder = recorder
        #: Set by :meth:`release`; until then (``held``) the runners start no round.
        self._released = asyncio.Event()
        if not held:
            self._released.set()
        self._state_dir = state_dir
        self._locks = locks
        self._on_attempts = on_attempts
        self._http: httpx.AsyncClient | None = None
        self._running: dict[str, _Running] = {}
        #: The last strategy applied per kind, kept after its runner stops: the next one
        #: takes over its providers' state.
        self._last: dict[str, Strategy] = {}
        self._paused = False

    # --- configuration --------------------------------------------------------------------

    def prepare(self, config: Config) -> RunnerSetup:
        """Build what ``config`` asks for, without using it yet.

        A trust file without roots or an unreadable secret is a configuration error (raised
        here: exit 2 at start, a refused reload later), not a failure of every job.
        """
        wanted = dict.fromkeys(kind for watch in config.watches for kind in watch.evidence)
        strategies: dict[str, Strategy] = {}
        try:
            for name in wanted:
                kind = kinds.spec(name)
                if not kind.available or kind.strategy is None:
                    continue  # the configuration refuses these; nothing would run their jobs
                if self._http is None:
                    self._http = httpx.AsyncClient()
                strategies[name] = strategy_factory(kind)(config, http=self._http)
        except BaseException:
            self.discard(RunnerSetup(config, strategies))  # those built before the error
            raise
        return RunnerSetup(config, strategies)

    def discard(self, setup: RunnerSetup) -> None:
        """A prepared setup that will not be applied (its reload was refused): close what its
        strategies hold."""
        for strategy in setup.strategies.values():
            strategy.close()

    def apply(self, setup: RunnerSetup, layouts: Mapping[int, Layout]) -> None:
        """Start, reconfigure or stop the runners to match ``setup``; ``layouts`` maps each
        watch id to its sidecar layout. Must run on the loop."""
        for name in [name for name in self._running if name not in setup.strategies]:
            self._running.pop(name).task.cancel()
            log.info(f"{name}_runner_stopped", reason=f"no watch asks for {name} evidence")
        for name, strategy in setup.strategies.items():
            last = self._last.get(name)
            if last is not None:
                strategy.take_over(last)
            self._last[name] = strategy
            running = self._running.get(name)
            if running is not None:
                running.runner.reconfigure(strategy=strategy, layouts=layouts)
                continue
            runner = JobRunner(
                recorder=self._recorder,
                strategy=strategy,
                state_dir=self._state_dir,
                layouts=layouts,
                locks=self._locks,
                start_after=self._released,
            )
            runner.paused = self._paused
            if self._on_attempts is not None:
                runner.on_attempts = _for_kind(self._on_attempts, name)
            self._running[name] = _Running(runner, asyncio.create_task(runner.run()))

    def release(self) -> None:
        """Let runners built ``held`` start their rounds (the daemon calls it once the
        start-up scans have begun).

        A first round is one-off heavy work on the loop: the due jobs read, httpcore and
        anyio's asyncio backend imported for the first request (~90 ms of CPU). Before the
        scans begin it competed with the thread placing the inotify watches, which the scans
        wait for (issue 13); jobs lose nothing by waiting that long (they are in the index).
        """
        self._released.set()

    # --- while running ----------------------------------------------------------------------

    def runner(self, kind: str) -> JobRunner | None:
        """The runner of ``kind``, if one runs."""
        running = self._running.get(kind)
        return None if running is None else running.runner

    def wake(self) -> None:
        """New jobs were committed: every runner of now looks for due jobs at once."""
        for running in self._running.values():
            running.runner.wake()

    def pause(self) -> None:
        """``stampd pause``: no new round starts; rounds in progress finish."""
        self._paused = True
        for running in self._running.values():
            running.runner.paused = True

    def resume(self) -> None:
        """``stampd resume``: rounds start again, due jobs at once."""
        self._paused = False
        for running in self._running.values():
            running.runner.paused = False
            running.runner.wake()

    def tasks(self) -> dict[str, asyncio.Task[None]]:
        """The running runners' tasks by component name (the health check watches them)."""
        return {r.runner.strategy.component: r.task for r in self._running.values()}

    def status(self) -> dict[str, dict[str, Any] | None]:
        """Each available kind's runner status for the control ``status`` (None: not running)."""
        return {
            kind.name: None if (runner := self.runner(kind.name)) is None else runner.status()
            for kind in kinds.available()
        }

    def in_flight(self) -> int:
        """Jobs in progress across every runner."""
        return sum(r.runner.status()["in_flight"] for r in self._running.values())

    def providers_up(self) -> tuple[tuple[str, bool], ...]:
        """Each provider's name and whether its breaker is closed (the metrics)."""
        return tuple(
            (provider["name"], provider["breaker"] == "closed")
            for running in self._running.values()
            for provider in running.runner.strategy.report()
        )

    def adoptable(self, kind: str, data: bytes, *, sha256: str, sha512: str) -> NewProof | None:
        """The proof row for sidecar bytes that verify for this content, else None (repair)."""
        runner = self.runner(kind)
        if runner is None:
            return None
        return runner.adoptable(data, sha256=sha256, sha512=sha512)

    async def close(self) -> None:
        """Stop every runner (pending jobs stay in the index) and close the HTTP client."""
        running, self._running = list(self._running.values()), {}
        for each in running:
            each.task.cancel()
        await asyncio.gather(*(each.task for each in running), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _for_kind(hook: AttemptsHook, kind: str) -> Callable[[Sequence[Attempt]], None]:
    def report(attempts: Sequence[Attempt]) -> None:
        hook(kind, attempts)

    return report
