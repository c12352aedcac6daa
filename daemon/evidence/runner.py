"""The job runner: one kind's pending jobs → verified proof → archive + sidecar + proof row.

One runner per evidence kind, with that kind's :class:`~stampd.daemon.evidence.strategy.Strategy`;
what follows holds for every kind. It runs every action the kind's registry entry lists
(store/kinds.py). One round of an ``obtain`` job, in the order DESIGN rule 1 gives:

1. **Adopt.** A sidecar already next to the file that verifies for this version is the proof
   a previous run obtained and wrote before it could commit (a crash, a kill -9): it is
   archived and recorded, and no provider is asked (rule 1, "verified and adopted").
2. **Reuse.** A complete proof for the same digest (a copy, a revert) is taken from the
   archive and verified again, instead of asking for another.
3. **Ask.** Otherwise the strategy asks its providers (alone, or in a batch with other jobs:
   daemon/evidence/batcher.py). Every proof it hands back has been verified (rule 3).

``upgrade`` and ``renew`` jobs skip 1 and 2: the strategy extends the proof the job names.

Then the proof is archived (fsynced), the sidecar written next to the file if this version is
still the file's content — a sidecar already there is archived first, so a changed file's old
proof moves to the archive and is never lost (rule 6) — and finally the proof row, the
attempts and the job's end are committed in one transaction; rounds that reach these steps
together (a batch's) take them together (daemon/evidence/finisher.py). A crash anywhere in
between leaves the job pending, and the next round adopts what was written. A version that
is no longer the file's content (it changed again, or vanished) still gets its proof — it was
recorded, so it is proven — kept in the archive only.

When no provider delivers, the job backs off (daemon/evidence/backoff.py). Queries run on a
read-only connection (daemon/evidence/index_reader.py); writes go through the index writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from stampd.daemon.evidence.batcher import Batcher
from stampd.daemon.evidence.digests import ContentGone, digests_of, job_digest, recorded
from stampd.daemon.evidence.finisher import Finisher, Finishing, Unfinished
from stampd.daemon.evidence.index_reader import IndexReader
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.proof_files import ProofFiles, proof_row, reusable, usable
from stampd.daemon.evidence.strategy import (
    NotObtained,
    Obtained,
    Outcome,
    ProofRequest,
    Strategy,
    close_after,
)
from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.recorder import Recorder
from stampd.store import kinds
from stampd.store.errors import ErrorClass, StampdError
from stampd.store.files.sidecar import Layout
from stampd.store.index.jobs import (
    Attempt,
    Completion,
    DueJob,
    FollowUp,
    NewProof,
    cancel_job,
    complete_jobs,
    due_jobs,
    fail_job,
    known_proofs,
)
from stampd.store.index.times import format_time, utc_now
from stampd.store.kinds import JobAction
from stampd.store.verify import DigestOf

log = get_logger("stampd.runner")

#: Jobs in progress at once. The pool sends one request at a time per provider, so more than a
#: few per provider only queue; the rest is sidecar and index I/O, which overlaps well.
CONCURRENCY = 8
#: How often due jobs are looked for when nothing wakes the runner (backed-off jobs).
POLL_S = 1.0


class JobRunner:
    """Runs one kind's pending jobs until cancelled."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        strategy: Strategy,
        state_dir: Path,
        layouts: Mapping[int, Layout],
        concurrency: int = CONCURRENCY,
        rng: random.Random | None = None,
        locks: PathLocks | None = None,
        start_after: asyncio.Event | None = None,
    ) -> None:
        self._recorder = recorder
        self._start_after = start_after  # no round before it is set (EvidenceRunners.release)
        self._index = recorder.index
        self._read = IndexReader(recorder.index.path)
        self._kind = kinds.spec(strategy.kind)
        self._at_rest = ProofFiles(self._kind, state_dir)
        self._strategy = strategy
        self._layouts = dict(layouts)
        self._batcher = self._batcher_for(strategy)
        self._base_concurrency = concurrency
        # A batch can only fill up when that many rounds are under way at once.
        self._concurrency = max(concurrency, strategy.batch)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wake = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}
        #: Jobs whose round ended while due jobs were being read: that read may predate the
        #: round's commit, so it would start them again (a batch ends many rounds at once).
        self._ended: set[int] = set()
        self._lock = locks or PathLocks()
        #: Strategies replaced by a reload, closed once the rounds that use them have ended.
        self._retiring: set[asyncio.Task[None]] = set()
        self._finisher = Finisher(
            files=self._at_rest, read=self._read, recorder=recorder, locks=self._lock
        )
        self.completed = 0
        self.failed_rounds = 0
        #: While set (``stampd pause``), no new round starts; rounds in progress finish.
        self.paused = False
        #: Called with the attempts of each request to the providers (the daemon's metrics).
        self.on_attempts: Callable[[Sequence[Attempt]], None] | None = None

    @property
    def strategy(self) -> Strategy:
        """The strategy new rounds use."""
        return self._strategy

    def reconfigure(self, *, strategy: Strategy, layouts: Mapping[int, Layout]) -> None:
        """A reload: rounds in progress finish with what they started with; the next rounds
        use the new strategy (providers, settings) and layouts. Pending jobs live in the
        index, so none is lost."""
        retired, self._strategy = self._strategy, strategy
        if retired is not strategy:
            rounds = list(self._running.values())  # those started with it, not the next ones
            self._retiring.add(asyncio.create_task(close_after(retired, rounds)))
        self._batcher = self._batcher_for(strategy)
        self._concurrency = max(self._base_concurrency, strategy.batch)
        self._layouts = dict(layouts)
        self._wake.set()

    def _batcher_for(self, strategy: Strategy) -> Batcher | None:
        if strategy.batch <= 1:
            return None
        send = partial(self._obtain_batch, strategy)
        return Batcher(send, size=strategy.batch, window=strategy.window)

    def wake(self) -> None:
        """New jobs were committed: look for due jobs now rather than at the next poll."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """For the control socket's ``status``: jobs in progress and the providers' health."""
        return {
            "in_flight": len(self._running),
            "completed": self.completed,
            "failed_rounds": self.failed_rounds,
            "providers": self._strategy.report(),
        }

    async def run(self) -> None:
        """Start due jobs as rounds free up, until cancelled."""
        try:
            if self._start_after is not None:
                await self._start_after.wait()
            while True:
                self._wake.clear()
                free = self._concurrency - len(self._running)
                if free > 0 and not self.paused:
                    await self._start_due(free)
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
                # arrives as the wake-up completes (python/cpython#86296), and shutdown hung.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._wake.wait()
        finally:
            tasks = list(self._running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._batcher is not None:
                await self._batcher.close()
            await self._finisher.close()
            await asyncio.gather(*self._retiring, return_exceptions=True)
            self._strategy.close()
            self._read.close()

    async def _start_due(self, free: int) -> None:
        limit = free + len(self._running)
        now = utc_now()
        self._ended.clear()  # rounds that ended before now are committed: the reads see them
        for action in sorted(self._kind.actions):
            jobs = await self._read(
                partial(due_jobs, kind=self._kind.name, action=action, now=now, limit=limit)
            )
            for job in jobs:
                if free == 0:
                    return
                if job.job_id in self._running or job.job_id in self._ended:
                    continue
                free -= 1
                self._running[job.job_id] = asyncio.create_task(self._round(job, action))

    # --- one round of one job -------------------------------------------------------------

    async def _round(self, job: DueJob, action: JobAction) -> None:
        strategy = self._strategy  # the whole round uses the strategy it started with
        try:
            await self._run_job(strategy, job, action)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one job's surprise must not stop every other job
            log.exception(f"{self._kind.name}_job_crashed", job_id=job.job_id, path=str(job.path))
            await self._fail(
                strategy, job, [], ErrorClass.UNKNOWN, f"internal error: {type(error).__name__}"
            )
        finally:
            self._running.pop(job.job_id, None)
            self._ended.add(job.job_id)
            self._wake.set()

    async def _run_job(self, strategy: Strategy, job: DueJob, action: JobAction) -> None:
        algorithm = strategy.digest_alg
        try:
            digest = await asyncio.to_thread(
                job_digest, job, algorithm, setting=strategy.digest_setting
            )
        except ContentGone as gone:
            await self._cancel(job, gone.error_class, str(gone))
            return
        except StampdError as error:
            await self._fail(strategy, job, [], error.error_class, error.message)
            return
        layout = self._layouts.get(job.watch_id) if self._kind.sidecar is not None else None
        on_disk = job.current and job.file_state == "present"
        layout = layout if on_disk else None
        versions = digests_of({**recorded(job), algorithm: digest})
        found: Obtained | None = None
        source = "archive"
        if action == JobAction.OBTAIN:
            if layout is not None and await self._adopt(strategy, job, digest, versions, layout):
                return
            found = await self._reuse(strategy, job, digest, versions)
        if found is None:
            extended = None
            if action != JobAction.OBTAIN:
                extended = await self._extended_proof(job)
                if extended is None:
                    await self._fail(
                        strategy,
                        job,
                        [],
                        ErrorClass.IO,
                        f"the proof to {action} (archive {job.proof_sha256}) is missing",
                    )
                    return
            outcome = await self._ask(strategy, ProofRequest(job, action, digest, extended))
            if isinstance(outcome, NotObtained):
                await self._fail(
                    strategy,
                    job,
                    outcome.attempts,
                    outcome.error_class,
                    outcome.message,
                    delay=outcome.retry_after,
                )
                return
            found, source = outcome, "provider"
        await self._finish(strategy, job, digest, found, source=source, layout=layout)

    async def _extended_proof(self, job: DueJob) -> bytes | None:
        """The archived bytes of the proof an ``upgrade``/``renew`` job names."""
        if job.proof_sha256 is None:
            return None
        try:
            return await asyncio.to_thread(self._at_rest.archived, job.proof_sha256)
        except StampdError:
            return None

    async def _ask(self, strategy: Strategy, request: ProofRequest) -> Outcome:
        if request.action != JobAction.OBTAIN:
            [outcome] = await self._reported(strategy.extend([request]))
            return outcome
        batcher = self._batcher if strategy is self._strategy else None
        if batcher is not None:
            return await batcher.submit(request)
        [outcome] = await self._obtain_batch(strategy, [request])
        return outcome

    async def _obtain_batch(
        self, strategy: Strategy, requests: Sequence[ProofRequest]
    ) -> Sequence[Outcome]:
        return await self._reported(strategy.obtain(requests))

    async def _reported(self, call: Awaitable[Sequence[Outcome]]) -> Sequence[Outcome]:
        """Await a strategy call and hand each attempt it made to the metrics, once."""
        outcomes = await call
        if self.on_attempts is not None:
            attempts = {id(a): a for outcome in outcomes for a in outcome.attempts}
            if attempts:
                self.on_attempts(list(attempts.values()))
        return outcomes

    def adoptable(self, data: bytes, *, sha256: str, sha512: str) -> NewProof | None:
        """The proof row for ``data`` found in a sidecar, if it verifies for the content with
        these digests against a configured provider's anchors; else None.

        For sidecar repair (daemon/evidence/repair.py): a user who moved ``a.txt.tsr`` along
        with ``a.txt`` keeps it. CPU-bound (a signature check): call it off the loop.
        """
        known = {"sha256": bytes.fromhex(sha256), "sha512": bytes.fromhex(sha512)}
        verdict = self._strategy.verifier.verify(
            data, source="sidecar", digest_of=digests_of(known)
        )
        if verdict.algorithm not in known or not usable(verdict, verdict.algorithm):
            return None
        digest = known[verdict.algorithm]
        return proof_row(self._kind.name, data, verdict, digest, commitments=verdict.commitments)

    async def _adopt(
        self, strategy: Strategy, job: DueJob, digest: bytes, versions: DigestOf, layout: Layout
    ) -> bool:
        """Record a sidecar that is already there and verifies for this version."""
        async with self._lock(job.path):
            try:
                existing = await asyncio.to_thread(self._at_rest.read_sidecar, job.path, layout)
            except StampdError:
                return False  # reported when the sidecar is written
            if existing is None:
                return False
            # Off the loop: a signature check, or (ots with [anchor.bitcoin]) a request to
            # the header source, must not stall every other job and the control socket.
            verdict = await asyncio.to_thread(
                strategy.verifier.verify, existing, source="sidecar", digest_of=versions
            )
            if not usable(verdict, strategy.digest_alg):
                return False  # an older version's proof, or not a proof: archived on write
            await asyncio.to_thread(self._at_rest.archive, existing)
            found = Obtained(existing, verdict, (), verdict.commitments)  # as its bytes say
            await self._complete(strategy, job, digest, found, source="sidecar", sidecar=True)
        return True

    async def _reuse(
        self, strategy: Strategy, job: DueJob, digest: bytes, versions: DigestOf
    ) -> Obtained | None:
        """A proof for this digest from the archive, verified again, if there is one."""
        candidates = await self._read(
            partial(
                known_proofs,
                kind=self._kind.name,
                digest_alg=strategy.digest_alg,
                digest=digest.hex(),
            )
        )
        return await asyncio.to_thread(
            reusable, self._at_rest, candidates, strategy.verifier, strategy.digest_alg, versions
        )

    async def _finish(
        self,
        strategy: Strategy,
        job: DueJob,
        digest: bytes,
        found: Obtained,
        *,
        source: str,
        layout: Layout | None,
    ) -> None:
        """Archive copy, sidecar (if this version is still the file's content, where the file
        is now), then the proof row: with every other round ending now (one transaction for
        all of them: daemon/evidence/finisher.py)."""
        completion = self._completion(strategy, job, digest, found)
        end = await self._finisher.finish(Finishing(job, found.data, completion, layout))
        if isinstance(end, Unfinished):
            await self._fail(
                strategy,
                job,
                found.attempts,
                end.error.error_class,
                f"{end.step}: {end.error}",
                archived=end.step == "sidecar",
            )
            return
        self._done(job, found, source=source, proof_id=end.proof_id, sidecar=end.sidecar)

    async def _complete(
        self,
        strategy: Strategy,
        job: DueJob,
        digest: bytes,
        found: Obtained,
        *,
        source: str,
        sidecar: bool,
    ) -> None:
        """Commit the round's :meth:`_completion` on its own (an adopted sidecar); log it."""
        completion = self._completion(strategy, job, digest, found)
        [proof_id] = await self._recorder.call(complete_jobs, self._index, [completion])
        self._done(job, found, source=source, proof_id=proof_id, sidecar=sidecar)

    def _completion(
        self, strategy: Strategy, job: DueJob, digest: bytes, found: Obtained
    ) -> Completion:
        """The proof row (new, or the extended one), the round's attempts, the job's end and,
        for a proof still pending its anchor, its ``upgrade`` job."""
        verdict = found.verdict
        follow_up = None
        if verdict.status == "pending" and JobAction.UPGRADE in self._kind.actions:
            due = datetime.now(UTC) + timedelta(seconds=strategy.upgrade_after)
            follow_up = FollowUp(JobAction.UPGRADE, format_time(due))
        return Completion(
            job_id=job.job_id,
            version_id=job.version_id,
            proof=proof_row(
                self._kind.name, found.data, verdict, digest, commitments=found.commitments
            ),
            attempts=found.attempts,
            follow_up=follow_up,
            extends=job.proof_id,
        )

    def _done(
        self, job: DueJob, found: Obtained, *, source: str, proof_id: int | None, sidecar: bool
    ) -> None:
        verdict = found.verdict
        self.completed += 1
        log.info(
            self._strategy.done_event,
            path=str(job.path),
            version_id=job.version_id,
            provider=verdict.provider,
            source=source,
            gen_time=None if verdict.gen_time is None else format_time(verdict.gen_time),
            proof_id=proof_id,
            status=verdict.status,
            sidecar=sidecar,
        )

    async def _fail(
        self,
        strategy: Strategy,
        job: DueJob,
        attempts: Sequence[Attempt],
        error_class: str,
        message: str,
        *,
        archived: bool = False,
        delay: float | None = None,
    ) -> None:
        self.failed_rounds += 1
        tries = job.tries + 1
        if delay is None:
            delay = strategy.backoff.seconds(tries, self._rng)
        next_try_at = format_time(datetime.now(UTC) + timedelta(seconds=delay))
        await self._recorder.call(
            partial(
                fail_job,
                self._index,
                job_id=job.job_id,
                attempts=attempts,
                error_class=error_class,
                message=message,
                next_try_at=next_try_at,
            )
        )
        log.warning(
            f"{self._kind.name}_job_backing_off",
            path=str(job.path),
            job_id=job.job_id,
            tries=tries,
            error_class=error_class,
            reason=message,
            retry_in_s=round(delay, 1),
            token_archived=archived,
        )

    async def _cancel(self, job: DueJob, error_class: str, message: str) -> None:
        await self._recorder.call(
            partial(
                cancel_job,
                self._index,
                job_id=job.job_id,
                attempts=(),
                error_class=error_class,
                message=message,
            )
        )
        log.warning(
            f"{self._kind.name}_job_cancelled",
            path=str(job.path),
            job_id=job.job_id,
            reason=message,
        )
