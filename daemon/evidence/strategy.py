"""What one evidence kind brings to the job runner: its strategy, and what a strategy returns.

The runner (daemon/evidence/runner.py) does what every kind shares — due jobs, digests,
adopting a sidecar left by a crash, reusing an archived proof for the same digest, the
archive, the sidecar, the proof row, back-off, pause. A :class:`Strategy` does what is the
kind's own: which digest its proofs cover, how a proof is checked (its verifier), how one is
obtained from its providers (daemon/evidence/pool.py), and how an existing one is upgraded
or renewed. ``tsr``'s is daemon/evidence/tsr.py.

A proof whose verdict is ``pending`` (it commits to the data, its anchor is not confirmed yet)
is recorded as such, and the runner creates its ``upgrade`` job, first due after
:attr:`Strategy.upgrade_after`; each upgrade round gets the proof's bytes and either returns
the extended proof or :class:`NotObtained` with the strategy's own ``retry_after``.

A strategy takes requests in batches of up to :attr:`Strategy.batch`: RFC 3161 per file asks
one TSA per file (batch 1); OpenTimestamps puts a window's files under one merkle tree and
one calendar request, batch mode a batch under one token (daemon/evidence/batcher.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stampd.daemon.evidence.backoff import Backoff
from stampd.store.index.jobs import Attempt, DueJob
from stampd.store.kinds import JobAction
from stampd.store.verify import Commitment, Verdict, Verifier


@dataclass(frozen=True)
class ProofRequest:
    """One job as a strategy sees it: the version's digest under the strategy's algorithm."""

    job: DueJob
    action: JobAction
    digest: bytes
    #: The bytes of the proof an ``upgrade`` or ``renew`` extends (from the archive).
    proof: bytes | None = None


@dataclass(frozen=True)
class Obtained:
    """A verified proof for one request: the provider's bytes, unmodified, and the verdict."""

    data: bytes
    #: Valid, naming the provider that made it (``verdict.provider``).
    verdict: Verdict
    #: The attempts of the round that produced it (shared by every request of a batch).
    attempts: Sequence[Attempt]
    #: Where a pending proof waits: each provider holding it under its commitment, and
    #: whether that provider's anchor is in this proof (an ``ots`` upgrade merged its reply).
    #: The index records them with the proof; none for kinds that are complete at once.
    commitments: Sequence[Commitment] = ()


@dataclass(frozen=True)
class NotObtained:
    """No proof this round: the job backs off and tries again."""

    error_class: str
    message: str
    attempts: Sequence[Attempt]
    #: Seconds until the next round, when the strategy knows better than the runner's
    #: back-off (an upgrade's own cadence: "still pending, ask again in 2 h").
    retry_after: float | None = None


Outcome = Obtained | NotObtained


class Strategy(Protocol):
    """One evidence kind's part of running its jobs."""

    #: The registry name of the kind (store/kinds.py).
    kind: str
    #: The runner's name among the daemon's components (health, ``status``): "stamping".
    component: str
    #: The log event of a job that ended with its proof: "tsr_stamped".
    done_event: str
    #: The digest algorithm requests carry and proofs cover.
    digest_alg: str
    #: The configuration key that chooses it, for messages ("timestamp.digest").
    digest_setting: str
    #: Most requests one :meth:`obtain` call takes; 1 means one provider request per file.
    batch: int
    #: Seconds a batch waits for more requests before it is sent (batch > 1 only).
    window: float
    #: Waits after failed rounds.
    backoff: Backoff
    #: Seconds from a ``pending`` proof to the first try of its ``upgrade`` job (kinds whose
    #: registry entry lists ``upgrade``; the runner creates that job with the proof).
    upgrade_after: float

    @property
    def verifier(self) -> Verifier:
        """How a proof of this kind is checked: adoption, reuse and sidecar repair use it."""
        ...

    async def obtain(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        """A first proof for each request (``obtain`` jobs), in the requests' order."""
        ...

    async def extend(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        """An upgraded or renewed proof for each request (``upgrade``/``renew`` jobs; only
        for the actions the kind's registry entry lists), in the requests' order."""
        ...

    def take_over(self, old: Strategy) -> None:
        """After a reload: continue where the strategy of the previous configuration left off
        (providers that did not change keep their breakers, rests and counters)."""
        ...

    def report(self) -> list[dict[str, Any]]:
        """Each provider's health as JSON-ready data (``stampd providers``, ``status``)."""
        ...

    def close(self) -> None:
        """Release what the strategy holds of its own (a header source's connection; the
        HTTP client it was given is shared and not its to close). Called once, when no round
        uses it any more: after a reload replaced it and its rounds ended, when its runner
        stops, or when a refused reload discards it unused."""
        ...


async def close_after(strategy: Strategy, rounds: Sequence[asyncio.Task[None]]) -> None:
    """Close ``strategy`` once ``rounds`` (the rounds that started with it) have ended: a
    reload lets rounds in progress finish with what they started with."""
    await asyncio.gather(*rounds, return_exceptions=True)
    strategy.close()
