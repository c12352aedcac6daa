"""The ``tsr`` job runner: pending jobs → verified token → archive + sidecar + proof row.

One round of a job, in the order DESIGN rule 1 gives:

1. **Adopt.** A sidecar already next to the file that verifies for this version is the
   token a previous run obtained and wrote before it could commit (a crash, a kill -9): it
   is archived and recorded, and no TSA is asked (rule 1, "verified and adopted").
2. **Reuse.** A complete proof for the same digest (a copy, a revert) is taken from the
   archive and verified again, instead of asking a TSA for another token.
3. **Ask.** Otherwise the provider pool fails over through the TSAs (DESIGN §6). Every reply
   it hands back has been verified completely (rule 3).

Then the token is archived (fsynced), the sidecar written next to the file if this version
is still the file's content — a sidecar already there is archived first, so a changed file's
old proof moves to the archive and is never lost (rule 6) — and finally the proof row, the
attempts and the job's end are committed in one transaction. A crash anywhere in between
leaves the job pending, and the next round adopts what was written.

A version that is no longer the file's content (it changed again, or vanished) still gets its
token — it was recorded, so it is proven — kept in the archive only.

When every TSA fails, the job backs off: ``retry`` * 2^(tries-1), capped at ``retry_max``,
with jitter so that a thousand jobs that failed together do not return together.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.roles import Stamped
from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.recorder import Recorder
from stampd.store.errors import FileAccessError, StampdError
from stampd.store.files.archive import archive_get, archive_put
from stampd.store.files.sidecar import Layout, read_sidecar, write_sidecar
from stampd.store.index.database import format_time, utc_now
from stampd.store.index.jobs import (
    Attempt,
    DueJob,
    NewProof,
    cancel_job,
    complete_job,
    current_path,
    due_jobs,
    fail_job,
    known_proofs,
)
from stampd.store.verify import Verdict, verify_tsr

log = get_logger("stampd.stamping")

#: Jobs in progress at once. The pool sends one request at a time per TSA, so more than a few
#: per TSA only queue; the rest is sidecar and index I/O, which overlaps well.
CONCURRENCY = 8
#: How often due jobs are looked for when nothing wakes the runner (backed-off jobs).
POLL_S = 1.0
KIND = "tsr"

_T = TypeVar("_T")


class ContentGone(StampdError):
    """The version's content is no longer on disk, so a digest it lacks cannot be computed."""

    error_class = "content_gone"


@dataclass(frozen=True)
class _Token:
    """A verified token, wherever it came from, with what its proof row records."""

    data: bytes
    provider: str
    source: str  # "tsa", "archive" or "sidecar"
    gen_time: datetime | None
    serial: int | None
    authority: str | None
    not_after: datetime | None

    @classmethod
    def from_stamped(cls, stamped: Stamped, provider: str) -> _Token:
        facts = stamped.verified.token.facts
        return cls(
            data=stamped.response,
            provider=provider,
            source="tsa",
            gen_time=facts.gen_time,
            serial=facts.serial,
            authority=stamped.verified.authority,
            not_after=stamped.verified.chain_not_after,
        )

    @classmethod
    def from_verdict(cls, data: bytes, verdict: Verdict, provider: str, source: str) -> _Token:
        return cls(
            data=data,
            provider=provider,
            source=source,
            gen_time=verdict.gen_time,
            serial=verdict.serial,
            authority=verdict.authority,
            not_after=verdict.chain_not_after,
        )

    def proof(self, algorithm: str, digest: bytes) -> NewProof:
        return NewProof(
            kind=KIND,
            provider=self.provider,
            digest_alg=algorithm,
            digest=digest.hex(),
            gen_time=None if self.gen_time is None else format_time(self.gen_time),
            serial=None if self.serial is None else str(self.serial),
            authority=self.authority,
            not_after=None if self.not_after is None else format_time(self.not_after),
            sidecar_sha256=hashlib.sha256(self.data).hexdigest(),
        )


def backoff_seconds(tries: int, *, base: float, cap: float, rng: random.Random) -> float:
    """The wait after the ``tries``-th failed round: base * 2^(tries-1), capped, then a random
    point in its upper half ("equal jitter": never less than half, so pressure still drops)."""
    delay = min(cap, base * 2.0 ** min(max(tries - 1, 0), 40))
    return delay / 2 + rng.uniform(0, delay / 2)


class TsrStamper:
    """Runs pending ``tsr`` jobs until cancelled."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        pool: ProviderPool,
        anchors: Mapping[str, Sequence[x509.Certificate]],
        state_dir: Path,
        digest_alg: str,
        layouts: Mapping[int, Layout],
        retry: float,
        retry_max: float,
        concurrency: int = CONCURRENCY,
        rng: random.Random | None = None,
        locks: PathLocks | None = None,
    ) -> None:
        self._recorder = recorder
        self._index = recorder.index
        self._pool = pool
        #: Provider name → the roots its tokens must chain to, in configuration order.
        self._anchors = dict(anchors)
        self._state_dir = state_dir
        self._algorithm = digest_alg
        self._layouts = dict(layouts)
        self._retry = retry
        self._retry_max = retry_max
        self._concurrency = concurrency
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wake = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._lock = locks or PathLocks()
        self.completed = 0
        self.failed_rounds = 0
        #: While set (``stampd pause``), no new round starts; rounds in progress finish.
        self.paused = False
        #: Called with the attempts of each request round (the daemon's metrics).
        self.on_attempts: Callable[[Sequence[Attempt]], None] | None = None

    def reconfigure(
        self,
        *,
        pool: ProviderPool,
        anchors: Mapping[str, Sequence[x509.Certificate]],
        digest_alg: str,
        layouts: Mapping[int, Layout],
        retry: float,
        retry_max: float,
    ) -> None:
        """A reload: rounds in progress finish with what they started with; the next rounds
        use the new TSAs and settings. Pending jobs live in the index, so none is lost."""
        self._pool = pool
        self._anchors = dict(anchors)
        self._algorithm = digest_alg
        self._layouts = dict(layouts)
        self._retry = retry
        self._retry_max = retry_max
        self._wake.set()

    def wake(self) -> None:
        """New jobs were committed: look for due jobs now rather than at the next poll."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """For the control socket's ``status``: jobs in progress and the TSAs' health."""
        return {
            "in_flight": len(self._running),
            "completed": self.completed,
            "failed_rounds": self.failed_rounds,
            "providers": self._pool.report(),
        }

    async def run(self) -> None:
        try:
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

    async def _start_due(self, free: int) -> None:
        limit = free + len(self._running)
        jobs = await self._call(
            partial(due_jobs, self._index.conn, KIND, now=utc_now(), limit=limit)
        )
        for job in jobs:
            if free == 0:
                break
            if job.job_id in self._running:
                continue
            free -= 1
            self._running[job.job_id] = asyncio.create_task(self._round(job))

    async def _call(self, func: Callable[[], _T]) -> _T:
        """Run an index call on the writer thread (the one thread that owns the connection)."""
        return await self._recorder.call(func)

    # --- one round of one job -------------------------------------------------------------

    async def _round(self, job: DueJob) -> None:
        try:
            await self._obtain(job)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one job's surprise must not stop every other job
            log.exception("tsr_job_crashed", job_id=job.job_id, path=str(job.path))
            await self._fail(job, [], "unknown", f"internal error: {type(error).__name__}")
        finally:
            self._running.pop(job.job_id, None)
            self._wake.set()

    async def _obtain(self, job: DueJob) -> None:
        algorithm = self._algorithm
        try:
            digest = await asyncio.to_thread(self._digest, job, algorithm)
        except ContentGone as gone:
            await self._cancel(job, gone.error_class, str(gone))
            return
        except StampdError as error:
            await self._fail(job, [], error.error_class, error.message)
            return
        layout = self._layouts.get(job.watch_id)
        if job.current and job.file_state == "present" and layout is not None:
            if await self._adopt(job, algorithm, digest, layout):
                return
        else:
            layout = None
        attempts: list[Attempt] = []
        token = await self._reuse(job, algorithm, digest)
        if token is None:
            stamped, attempts = await self._pool.timestamp(digest, algorithm)
            if self.on_attempts is not None:
                self.on_attempts(attempts)
            if stamped is None:
                await self._fail(job, attempts, *_failure_summary(attempts))
                return
            token = _Token.from_stamped(stamped, attempts[-1].provider)
        try:
            await asyncio.to_thread(archive_put, self._state_dir, token.data, KIND)
        except StampdError as error:
            await self._fail(job, attempts, error.error_class, f"archive: {error}")
            return
        await self._finish(
            job, algorithm=algorithm, digest=digest, token=token, attempts=attempts, layout=layout
        )

    def _digest(self, job: DueJob, algorithm: str) -> bytes:
        if algorithm == "sha256":
            return bytes.fromhex(job.sha256)
        if algorithm == "sha512":
            return bytes.fromhex(job.sha512)
        return _rehash(job, algorithm)

    def _digest_of(self, job: DueJob, algorithm: str, digest: bytes) -> Callable[[str], bytes]:
        known = {"sha256": bytes.fromhex(job.sha256), "sha512": bytes.fromhex(job.sha512)}
        known[algorithm] = digest

        def digest_of(name: str) -> bytes:
            if name not in known:
                raise ValueError(name)
            return known[name]

        return digest_of

    def _check(
        self, data: bytes, *, source: str, digest_of: Callable[[str], bytes], prefer: str | None
    ) -> tuple[Verdict, str | None]:
        """Verify ``data`` against each configured TSA's roots, ``prefer``'s first; the
        verdict and the name of the TSA whose roots it chains to (None unless valid)."""
        names = sorted(self._anchors, key=lambda name: name != prefer)
        verdict = Verdict(KIND, source, "invalid", "chain", "no TSA is configured")
        for name in names:
            verdict = verify_tsr(
                data, source=source, digest_of=digest_of, trust=[self._anchors[name]]
            )
            if verdict.status == "valid":
                return verdict, name
            if verdict.reason not in ("chain", "eku"):
                break  # the token itself is wrong: other roots will not change that
        return verdict, None

    def adoptable(self, kind: str, data: bytes, *, sha256: str, sha512: str) -> NewProof | None:
        """The proof row for ``data`` found in a sidecar, if it is a token that verifies for
        the content with these digests against a configured TSA's roots; else None.

        For sidecar repair (store/files/repair.py): a user who moved ``a.txt.tsr`` along with
        ``a.txt`` keeps it. CPU-bound (a signature check): call it off the loop.
        """
        if kind != KIND:
            return None
        known = {"sha256": bytes.fromhex(sha256), "sha512": bytes.fromhex(sha512)}

        def digest_of(name: str) -> bytes:
            if name not in known:
                raise ValueError(name)  # SHA-384 would need the file read again: not adopted
            return known[name]

        verdict, provider = self._check(data, source="sidecar", digest_of=digest_of, prefer=None)
        if provider is None or verdict.algorithm not in known:
            return None
        token = _Token.from_verdict(data, verdict, provider, "sidecar")
        return token.proof(verdict.algorithm, known[verdict.algorithm])

    async def _adopt(self, job: DueJob, algorithm: str, digest: bytes, layout: Layout) -> bool:
        """Record a sidecar that is already there and verifies for this version."""
        async with self._lock(job.path):
            try:
                existing = await asyncio.to_thread(
                    read_sidecar, job.path, KIND, layout=layout, state_dir=self._state_dir
                )
            except StampdError:
                return False  # reported when the sidecar is written
            if existing is None:
                return False
            verdict, provider = self._check(
                existing,
                source="sidecar",
                digest_of=self._digest_of(job, algorithm, digest),
                prefer=None,
            )
            if provider is None or verdict.algorithm != algorithm:
                return False  # an older version's proof, or not a proof: archived on write
            token = _Token.from_verdict(existing, verdict, provider, "sidecar")
            await asyncio.to_thread(archive_put, self._state_dir, existing, KIND)
            await self._complete(job, algorithm, digest, token, (), sidecar=True)
        return True

    async def _reuse(self, job: DueJob, algorithm: str, digest: bytes) -> _Token | None:
        """A token for this digest from the archive, verified again, if there is one."""
        candidates = await self._call(
            partial(
                known_proofs,
                self._index.conn,
                kind=KIND,
                digest_alg=algorithm,
                digest=digest.hex(),
            )
        )
        for known in candidates:
            try:
                data = await asyncio.to_thread(
                    archive_get, self._state_dir, known.sidecar_sha256, KIND
                )
            except StampdError as error:
                log.warning("archived_proof_unusable", proof_id=known.proof_id, reason=str(error))
                continue
            if data is None:
                log.warning(
                    "archived_proof_missing",
                    proof_id=known.proof_id,
                    sha256=known.sidecar_sha256,
                    hint="restore STATE/archive from a backup; a new token is requested",
                )
                continue
            verdict, provider = self._check(
                data,
                source="archive",
                digest_of=self._digest_of(job, algorithm, digest),
                prefer=known.provider,
            )
            # A token whose TSA chain has expired since still proves its time, but a new
            # version deserves evidence that needs no renewal yet.
            if provider is not None and not verdict.renewal_overdue:
                return _Token.from_verdict(data, verdict, provider, "archive")
        return None

    async def _finish(
        self,
        job: DueJob,
        *,
        algorithm: str,
        digest: bytes,
        token: _Token,
        attempts: Sequence[Attempt],
        layout: Layout | None,
    ) -> None:
        """Sidecar (if this version is still the file's content), then the proof row.

        The sidecar goes where the file is now: a rename since the job was picked moved the
        row (and a rename after this point is repaired by store/files/repair.py).
        """
        sidecar = False
        path = None
        if layout is not None:
            path = await self._call(
                partial(
                    current_path, self._index.conn, file_id=job.file_id, version_id=job.version_id
                )
            )
        async with self._lock(path or job.path):
            if layout is not None and path is not None:
                try:
                    await asyncio.to_thread(self._place_sidecar, path, layout, token.data)
                except StampdError as error:
                    await self._fail(
                        job, attempts, error.error_class, f"sidecar: {error}", token=token
                    )
                    return
                sidecar = True
            await self._complete(job, algorithm, digest, token, attempts, sidecar=sidecar)

    def _place_sidecar(self, path: Path, layout: Layout, data: bytes) -> None:
        """Write ``data`` as the sidecar; whatever was there before goes to the archive."""
        existing = read_sidecar(path, KIND, layout=layout, state_dir=self._state_dir)
        if existing == data:
            return
        if existing is not None:
            # An earlier version's proof (or something an operator put there): history.
            archived = archive_put(self._state_dir, existing, KIND)
            log.info("sidecar_archived", path=str(path), archive=str(archived.path))
        write_sidecar(
            path,
            KIND,
            data,
            layout=layout,
            state_dir=self._state_dir,
            replace=existing is not None,
        )

    async def _complete(
        self,
        job: DueJob,
        algorithm: str,
        digest: bytes,
        token: _Token,
        attempts: Sequence[Attempt],
        *,
        sidecar: bool,
    ) -> None:
        """Commit the proof row, the round's attempts and the job's end; log it."""
        proof_id = await self._call(
            partial(
                complete_job,
                self._index,
                job_id=job.job_id,
                version_id=job.version_id,
                proof=token.proof(algorithm, digest),
                attempts=attempts,
            )
        )
        self.completed += 1
        log.info(
            "tsr_stamped",
            path=str(job.path),
            version_id=job.version_id,
            provider=token.provider,
            source=token.source,
            gen_time=None if token.gen_time is None else format_time(token.gen_time),
            proof_id=proof_id,
            sidecar=sidecar,
        )

    async def _fail(
        self,
        job: DueJob,
        attempts: Sequence[Attempt],
        error_class: str,
        message: str,
        *,
        token: _Token | None = None,
    ) -> None:
        self.failed_rounds += 1
        tries = job.tries + 1
        delay = backoff_seconds(tries, base=self._retry, cap=self._retry_max, rng=self._rng)
        next_try_at = format_time(datetime.now(UTC) + timedelta(seconds=delay))
        await self._call(
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
            "tsr_job_backing_off",
            path=str(job.path),
            job_id=job.job_id,
            tries=tries,
            error_class=error_class,
            reason=message,
            retry_in_s=round(delay, 1),
            token_archived=token is not None,
        )

    async def _cancel(self, job: DueJob, error_class: str, message: str) -> None:
        await self._call(
            partial(
                cancel_job,
                self._index,
                job_id=job.job_id,
                attempts=(),
                error_class=error_class,
                message=message,
            )
        )
        log.warning("tsr_job_cancelled", path=str(job.path), job_id=job.job_id, reason=message)


def _failure_summary(attempts: Sequence[Attempt]) -> tuple[str, str]:
    """The job-level error class and message of a round in which no TSA delivered."""
    if not attempts:
        return (
            "unavailable",
            "every TSA is resting after failures or asked us to wait; see `stampd providers`",
        )
    tried = "; ".join(f"{a.provider}: {a.error_class} ({a.message})" for a in attempts)
    return str(attempts[-1].error_class), tried


def _rehash(job: DueJob, algorithm: str) -> bytes:
    """``algorithm`` over the file, which must still hold this version (the index keeps only
    SHA-256 and SHA-512). Read without following a symlink (DESIGN rule 4)."""
    gone = ContentGone(
        f"{job.path}: version {job.version_id} is no longer on disk, so its {algorithm} digest"
        " cannot be computed",
        hint="set timestamp.digest to sha256 or sha512 to stamp superseded versions too",
    )
    if not job.current or job.file_state != "present":
        raise gone
    try:
        fd = os.open(job.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise FileAccessError(f"cannot open {job.path}: {error.strerror}") from error
    wanted, check = hashlib.new(algorithm), hashlib.sha256()
    try:
        with os.fdopen(fd, "rb", buffering=0) as stream:
            while chunk := stream.read(1 << 20):
                wanted.update(chunk)
                check.update(chunk)
    except OSError as error:
        raise FileAccessError(f"cannot read {job.path}: {error.strerror}") from error
    if check.hexdigest() != job.sha256:
        raise gone
    return wanted.digest()
