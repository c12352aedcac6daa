"""The index's one writer: a single thread that commits what the pipeline found, in batches.

DESIGN §3: one writer connection, every write a ``BEGIN IMMEDIATE`` transaction. Hashed files
queue up here and are committed many per transaction (a transaction per file would cap the
first scan of a large tree at the disk's sync rate). DESIGN rule 1: a version and its jobs are
committed together, before anything else happens to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import ParamSpec, TypeVar

from stampd.daemon.service.logs import get_logger
from stampd.store.files.filestat import FileStat
from stampd.store.index.database import Index
from stampd.store.index.versions import Recorded, Settled

log = get_logger("stampd.recorder")

#: Most files committed in one transaction; bounds how long readers see stale data.
MAX_BATCH = 512

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Recorder:
    """Owns the writer :class:`Index`; every call runs on its single thread."""

    def __init__(self, index: Index) -> None:
        self.index = index
        #: Called on the loop after a commit that created jobs (the job runners wake up).
        self.on_jobs: Callable[[], None] | None = None
        #: Called on the loop with the outcomes of each commit (sidecar repair after renames).
        self.on_commit: Callable[[list[Recorded]], None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stampd-index")
        self._queue: asyncio.Queue[Settled] = asyncio.Queue()
        #: Index calls finished, and calls in progress: the health check's view of the writer
        #: (work waiting and this count standing still means it is wedged).
        self.calls_done = 0
        self.calls_running = 0

    async def call(self, func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run one index call on the writer thread (the one thread that owns the connection)
        and return what it returns."""
        loop = asyncio.get_running_loop()
        self.calls_running += 1
        try:
            return await loop.run_in_executor(self._thread, partial(func, *args, **kwargs))
        finally:
            self.calls_running -= 1
            self.calls_done += 1

    def submit(self, item: Settled) -> None:
        """Queue a hashed file for the next batch."""
        self._queue.put_nowait(item)

    async def record_now(self, item: Settled) -> Recorded:
        """Commit one hashed file at once, ahead of the queue (``stampd stamp``)."""
        (result,) = await self.call(self.index.record_settled, [item])
        if result.job_ids and self.on_jobs is not None:
            self.on_jobs()
        if self.on_commit is not None:
            self.on_commit([result])
        log.info(
            "version_recorded_on_request",
            path=str(result.path),
            outcome=result.outcome,
            version_id=result.version_id,
            jobs=len(result.job_ids),
        )
        return result

    def backlog(self) -> int:
        """Hashed files not yet committed."""
        return self._queue.qsize()

    async def run(self) -> None:
        """Commit queued files until cancelled; a batch is whatever queued meanwhile."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def flush(self) -> None:
        """Commit everything queued now (at shutdown)."""
        batch: list[Settled] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
            if len(batch) == MAX_BATCH:
                await self._commit(batch)
                batch = []
        if batch:
            await self._commit(batch)

    async def _commit(self, batch: Sequence[Settled]) -> None:
        try:
            results = await self.call(self.index.record_settled, list(batch))
        except Exception:
            if len(batch) == 1:
                # One file the index refuses must not stop recording for every other file;
                # the next scan offers it again.
                log.exception("version_not_recorded", path=str(batch[0].path))
                return
            # The batch rolled back whole: record its files one by one to isolate the bad one.
            for item in batch:
                await self._commit([item])
            return
        outcomes: dict[str, int] = {}
        if self.on_jobs is not None and any(r.job_ids for r in results):
            self.on_jobs()
        if self.on_commit is not None:
            self.on_commit(results)
        for result in results:
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            if result.outcome == "unchanged":
                continue
            # Per file at debug: a first scan of a million files must not flood the journal.
            log.debug(
                "version_recorded" if result.outcome != "renamed" else "file_renamed",
                path=str(result.path),
                outcome=result.outcome,
                version_id=result.version_id,
                jobs=len(result.job_ids),
                renamed_from=str(result.renamed_from) if result.renamed_from else None,
            )
        log.info("versions_committed", files=len(batch), **outcomes)

    async def unreadable(
        self, *, watch_id: int, path: Path, stat: FileStat | None, error_class: str, message: str
    ) -> None:
        """Record that a file exists but cannot be read, with the reason."""
        await self.call(
            self.index.record_unreadable,
            watch_id=watch_id,
            path=path,
            stat=stat,
            error_class=error_class,
            message=message,
        )
        log.warning("file_unreadable", path=str(path), error_class=error_class, reason=message)

    async def missing(self, paths: Sequence[Path]) -> None:
        """Mark files that are gone as missing (their history stays)."""
        if not paths:
            return
        count = await self.call(self.index.mark_missing, list(paths))
        if count:
            log.info("files_missing", count=count, first=str(paths[0]))

    def close(self) -> None:
        """Stop the writer thread (after :meth:`flush`)."""
        self._thread.shutdown(wait=True)
