"""The ``ots`` strategy: OpenTimestamps anchors — batches, a calendar quorum, and upgrades.

What is OpenTimestamps about running ``ots`` jobs lives here; the job runner
(daemon/evidence/runner.py) does the rest (reference/opentimestamps.md §3, §4):

- **obtain**: a window's files (up to :data:`BATCH`, gathered for :data:`WINDOW_S` by the
  runner's batcher) become one merkle tree of nonce-blinded digests
  (store/formats/ots_batch.py); its root goes once to every configured calendar under one
  deadline (``anchor.timeout``), and at least ``anchor.min_replies`` must answer, as
  ``ots stamp -m`` requires. Each reply is a fork under the root; each file's proof is its
  path to the root plus that tree. Such a proof is ``pending``: the runner records it and
  creates its ``upgrade`` job, first due after ``anchor.upgrade_after``. The index records
  where it waits: each replying calendar's URI and commitment (store/index/commitments.py);
  the upgrade that merges a calendar's reply marks that pair anchored.
- **upgrade**: each Pending leaf of the proof is asked at its own URI, only if the allow-list
  accepts it (daemon/evidence/calendar.py), and a reply is merged only at the leaf whose
  commitment was asked. Once a Bitcoin leaf exists the proof is complete; until then the job
  waits ``upgrade_after`` * 2^tries, capped at ``upgrade_max``, with jitter, never under the
  calendars' 60 s cache lifetime — and is never given up (§4).

The verdicts come from :class:`~stampd.store.ots_verifier.OtsVerifier` through
:class:`OtsJobVerifier` (daemon/evidence/ots_judge.py), which names the proof's provider and
decides what counts as complete without a header source.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx

from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigProblem, config_error
from stampd.daemon.evidence.allowlist import UnsafeUrl, UrlAllowList
from stampd.daemon.evidence.backoff import Backoff
from stampd.daemon.evidence.calendar import HttpCalendar, UpgradeFetcher
from stampd.daemon.evidence.ots_judge import OtsJobVerifier, header_source
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.roles import Calendar, ProviderFailure
from stampd.daemon.evidence.strategy import NotObtained, Obtained, Outcome, ProofRequest, Strategy
from stampd.daemon.service.logs import get_logger
from stampd.store.errors import ErrorClass, StampdError
from stampd.store.formats.ots import (
    OtsDecodeError,
    OtsProof,
    Timestamp,
    bitcoin_leaves,
    decode,
    encode,
    merge,
    pending_leaves,
)
from stampd.store.formats.ots_batch import make_batch
from stampd.store.index.jobs import Attempt
from stampd.store.index.times import utc_now
from stampd.store.kinds import EvidenceKind
from stampd.store.verify import Commitment, DigestOf

log = get_logger("stampd.ots")

#: Most files under one merkle tree: one calendar request per calendar for all of them
#: (DESIGN §11: ≤ 0.01 calendar requests per file). A path grows by one level per doubling,
#: so 512 files cost each proof 9 levels (~300 bytes).
BATCH = 512
#: Seconds a batch waits for more files: otsd itself aggregates per 1 s window (§2), so a
#: drop of files arriving together becomes one request per calendar.
WINDOW_S = 1.0
#: Never ask a calendar again sooner: its "pending" answer is cached for 60 s (§2, §4).
MIN_UPGRADE_WAIT_S = 60.0
#: Jitter of the upgrade cadence: a random point in the upper quarter of each wait, so the
#: proofs of one batch do not all come back at the same second.
_JITTER = 0.25


def upgrade_wait(tries: int, *, after: float, cap: float, rng: random.Random) -> float:
    """Seconds until the next upgrade try after ``tries`` rounds that found it pending (§4):
    ``after`` * 2^tries capped at ``cap``, jittered, never under :data:`MIN_UPGRADE_WAIT_S`."""
    delay = min(cap, after * 2.0 ** min(max(tries, 0), 40))
    delay *= 1 - _JITTER * rng.random()
    return max(MIN_UPGRADE_WAIT_S, delay)


class OtsStrategy:
    """Anchors files in Bitcoin through OpenTimestamps calendars."""

    kind: str = EvidenceKind.OTS
    component: str = "anchoring"
    done_event: str = "ots_anchored"
    #: ``ots stamp`` and every calendar use sha256 file digests (§3); there is no setting.
    digest_alg: str = "sha256"
    digest_setting: str = "anchor"
    batch: int = BATCH
    window: float = WINDOW_S

    def __init__(
        self,
        *,
        pool: ProviderPool[Calendar],
        fetcher: UpgradeFetcher,
        verifier: OtsJobVerifier,
        min_replies: int,
        timeout: float,
        upgrade_after: float,
        upgrade_max: float,
        backoff: Backoff,
        rng: random.Random | None = None,
    ) -> None:
        #: Waits after ``obtain`` rounds that missed the quorum (``anchor.retry``/``retry_max``).
        self.backoff = backoff
        self.pool = pool
        self.fetcher = fetcher
        self._verifier = verifier
        self.min_replies = min_replies
        self.timeout = timeout
        self.upgrade_after = upgrade_after
        self.upgrade_max = upgrade_max
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    @property
    def verifier(self) -> OtsJobVerifier:
        """The proofs' verdicts, as the index records them."""
        return self._verifier

    # --- obtain -------------------------------------------------------------------------

    async def obtain(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        """One merkle tree for all ``requests``, its root sent once to every calendar."""
        batch = make_batch([request.digest for request in requests])
        root = batch.root
        quorum = await self.pool.quorum(
            self.min_replies, lambda calendar: calendar.submit(root), timeout=self.timeout
        )
        attempts = quorum.attempts
        if not quorum.met:
            # The reference client's words (§3.4), with each calendar's failure after them.
            message = (
                f"need at least {self.min_replies} calendar"
                f" {'reply' if self.min_replies == 1 else 'replies'}, received"
                f" {len(quorum.replies)} within {self.timeout:g} s"
            )
            failed = [a for a in attempts if a.error_class is not None]
            if failed:
                message += ": " + "; ".join(
                    f"{a.provider}: {a.error_class} ({a.message})" for a in failed
                )
            elif not attempts:
                message += ": every calendar is resting after failures (see `stampd providers`)"
            error_class = str(failed[-1].error_class) if failed else ErrorClass.UNAVAILABLE
            return [NotObtained(error_class, message, attempts)] * len(requests)
        tree = Timestamp(root)
        for reply in quorum.replies:
            tree = merge(tree, root, reply.value)  # a fork per calendar (§3.3)
        # Where the proofs wait (issue 12): each reply's calendar URI and the message at its
        # Pending leaf, the commitment the calendar is asked about (§2). The same for every
        # file of the batch: each file's proof is its path to the root, then this tree.
        waits = [Commitment(uri, commitment) for uri, commitment in pending_leaves(tree)]
        outcomes: list[Outcome] = []
        for request, leaf in zip(requests, batch.leaves, strict=True):
            data = encode(leaf.proof(tree))
            verdict = self._verifier.verify(
                data, source="calendars", digest_of=_digest_of(request.digest)
            )
            if verdict.status not in ("pending", "valid"):
                outcomes.append(
                    NotObtained(ErrorClass.VERIFY, verdict.message or str(verdict.reason), attempts)
                )
                continue
            outcomes.append(Obtained(data, verdict, attempts, waits))
        return outcomes

    # --- upgrade ------------------------------------------------------------------------

    async def extend(self, requests: Sequence[ProofRequest]) -> Sequence[Outcome]:
        """Each pending proof asked of the calendars its Pending leaves name."""
        return [await self._upgrade(request) for request in requests]

    async def _upgrade(self, request: ProofRequest) -> Outcome:
        retry_after = upgrade_wait(
            request.job.tries + 1, after=self.upgrade_after, cap=self.upgrade_max, rng=self._rng
        )
        try:
            proof = decode(request.proof or b"")
        except OtsDecodeError as error:
            return NotObtained(
                ErrorClass.PARSE, f"the archived proof: {error.message}", (), retry_after
            )
        leaves = list(dict.fromkeys(pending_leaves(proof.timestamp)))
        fetched = await asyncio.gather(*(self._fetch(uri, c) for uri, c in leaves))
        tree = proof.timestamp
        attempts: list[Attempt] = []
        pending: list[str] = []
        problems: list[tuple[str, str]] = []
        merged: set[tuple[str, bytes]] = set()
        for (uri, commitment), (attempt, reply) in zip(leaves, fetched, strict=True):
            attempts.append(attempt)
            if attempt.error_class is not None:
                problems.append((str(attempt.error_class), f"{uri}: {attempt.message}"))
            elif reply is None:
                pending.append(uri)
            else:
                tree = merge(tree, commitment, reply)  # only at the leaf that was asked (§2)
                merged.add((uri, commitment))
        if bitcoin_leaves(tree):
            # Every pair the proof waits at; anchored are those whose calendar's reply is in.
            waits = [Commitment(uri, c, (uri, c) in merged) for uri, c in leaves]
            return await self._complete(request, OtsProof(proof.file_op, tree), attempts, waits)
        if not leaves:
            problems.append((ErrorClass.REJECTED, "the proof names no calendar to ask"))
        parts = []
        if pending:
            parts.append(f"still pending at {', '.join(pending)}")
        parts += [text for _, text in problems]
        error_class = problems[-1][0] if problems and not pending else ErrorClass.UNAVAILABLE
        return NotObtained(error_class, "; ".join(parts), attempts, retry_after)

    async def _fetch(self, uri: str, commitment: bytes) -> tuple[Attempt, Timestamp | None]:
        """One pending leaf asked: the attempt (a failure, a "not yet" or the upgrade) and the
        reply, checked against the header source when there is one."""
        started_at = utc_now()
        start = time.monotonic()
        try:
            reply = await self.fetcher.fetch(uri, commitment)
            if reply is not None:
                await asyncio.to_thread(self._verifier.check_reply, reply)
        except ProviderFailure as failure:
            latency = (time.monotonic() - start) * 1000
            attempt = Attempt(
                uri, started_at, latency, failure.error_class, failure.http_status, failure.message
            )
            return attempt, None
        latency = (time.monotonic() - start) * 1000
        if reply is None:
            known = (uri, commitment) not in self.fetcher.not_found
            note = "pending" if known else "Not found (the calendar does not know this commitment)"
            return Attempt(uri, started_at, latency, None, 404, note), None
        return Attempt(uri, started_at, latency, None, 200, "upgraded"), reply

    async def _complete(
        self,
        request: ProofRequest,
        proof: OtsProof,
        attempts: Sequence[Attempt],
        waits: Sequence[Commitment],
    ) -> Outcome:
        data = encode(proof)
        try:
            verdict = await asyncio.to_thread(
                self._verifier.judge, data, source="calendars", digest=request.digest
            )
        except StampdError as error:
            return NotObtained(
                error.error_class,
                f"the Bitcoin header source: {error.message}",
                attempts,
                MIN_UPGRADE_WAIT_S,
            )
        if verdict.status != "valid":
            retry = upgrade_wait(
                request.job.tries + 1, after=self.upgrade_after, cap=self.upgrade_max, rng=self._rng
            )
            return NotObtained(ErrorClass.VERIFY, verdict.message or "", attempts, retry)
        return Obtained(data, verdict, attempts, waits)

    # --- reloads and status ---------------------------------------------------------------

    def take_over(self, old: Strategy) -> None:
        """Calendars that did not change keep their breakers; "Not found"s stay logged once."""
        if not isinstance(old, OtsStrategy):
            return
        kept = self.pool.take_over(old.pool)
        self.fetcher.not_found |= old.fetcher.not_found
        reset = [p.name for p in self.pool.providers if p.name not in kept]
        log.info("calendar_state_kept", kept=list(kept), reset=reset)

    def report(self) -> list[dict[str, Any]]:
        """Each calendar's health."""
        return self.pool.report()

    def close(self) -> None:
        """The header source's connection to bitcoind (the calendars use the shared client)."""
        self._verifier.close()


def strategy_from_config(config: Config, *, http: httpx.AsyncClient) -> Strategy:
    """The ``ots`` strategy of ``[anchor]``: its calendars, quorum, allow-list, cadence and
    header source (``[anchor.bitcoin]``; an unreadable secret raises ``ConfigError``)."""
    anchor = config.anchor
    calendars: list[Calendar] = [
        HttpCalendar(url=url, client=http, timeout=anchor.timeout) for url in anchor.calendars
    ]
    try:
        allow = UrlAllowList.from_patterns(anchor.upgrade_patterns)
    except UnsafeUrl as error:  # the configuration checked them: a bug if reached
        raise config_error(
            config.source, [ConfigProblem("anchor.allow", None, str(error))]
        ) from None
    headers = header_source(config)
    if headers is None:
        # Not an error (reference §5, manual mode), but the operator must know what it means.
        log.warning(
            "anchor_unchecked",
            reason="no [anchor.bitcoin] header source: Bitcoin attestations from calendars"
            " are recorded without checking their block header",
        )
    return OtsStrategy(
        pool=ProviderPool(calendars, selection="priority"),
        fetcher=UpgradeFetcher(allow=allow, client=http, timeout=anchor.timeout),
        verifier=OtsJobVerifier(headers),
        min_replies=anchor.min_replies,
        timeout=anchor.timeout,
        upgrade_after=anchor.upgrade_after,
        upgrade_max=anchor.upgrade_max,
        backoff=Backoff(anchor.retry, anchor.retry_max),
    )


def _digest_of(digest: bytes) -> DigestOf:
    """The request's digest, the only one at hand (a proof of ``ots`` is always sha256)."""

    def of(algorithm: str) -> bytes:
        if algorithm != "sha256":
            raise ValueError(f"only the sha256 digest is at hand, not {algorithm}")
        return digest

    return of
