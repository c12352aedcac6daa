"""The index's one writer: a single thread that commits what the pipeline found, in batches.

DESIGN §3: one writer connection, every write a ``BEGIN IMMEDIATE`` transaction. Hashed files
queue up here and are committed many per transaction (a transaction per file would cap the
first scan of a large tree at the disk's sync rate). DESIGN rule 1: a version and its jobs are
committed together, before anything else happens to them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import ParamSpec, TypeVar

from stampd.daemon.service.logs import get_logger
from stampd.store.files.filestat import FileStat
from stampd.store.index import versions
from stampd.store.index.database import Index
from stampd.store.index.new_files import SettledFiles
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Committed, Recorded, Settled

log = get_logger("stampd.recorder")
#: The stdlib logger structlog's ``filter_by_level`` asks (daemon/service/logs.py): asked
#: once per batch whether the per-file events are wanted at all (``--debug``).
_stdlib_log = logging.getLogger("stampd.recorder")

#: Most files committed in one transaction; bounds how long readers see stale data. (A
#: batch ends after the queued item that reaches it: a scan's SettledFiles are not cut.)
MAX_BATCH = 512

#: What the queue holds: one hashed file, or many from one scan task (as rows).
Queued = Settled | SettledFiles

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
        # A deque and an event rather than an asyncio.Queue: the scan hands over hundreds of
        # files at once (submit_many), and a batch is taken in one slice, not get by get.
        self._queue: deque[Queued] = deque()
        self._queued_files = 0  # files in the queue (a SettledFiles holds many)
        self._queued = asyncio.Event()
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

    def submit(self, item: Queued) -> None:
        """Queue a hashed file (or a scan task's :class:`SettledFiles`) for the next batch."""
        self._queue.append(item)
        self._queued_files += len(item) if isinstance(item, SettledFiles) else 1
        self._queued.set()

    def submit_many(self, items: Iterable[Queued]) -> None:
        """Queue hashed files for the next batches, in order (what :meth:`submit` does for
        each, in one call)."""
        items = list(items)
        self._queue.extend(items)
        self._queued_files += sum(
            len(item) if isinstance(item, SettledFiles) else 1 for item in items
        )
        if self._queue:
            self._queued.set()

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
        return self._queued_files

    async def run(self) -> None:
        """Commit queued files until cancelled; a batch is whatever queued meanwhile."""
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            await self._commit(self._take())

    async def flush(self) -> None:
        """Commit everything queued now (at shutdown)."""
        while self._queue:
            await self._commit(self._take())

    def _take(self) -> list[Queued]:
        """The next batch: queued items from the front, about :data:`MAX_BATCH` files."""
        queue, batch, files = self._queue, [], 0
        while queue and files < MAX_BATCH:
            item = queue.popleft()
            batch.append(item)
            files += len(item) if isinstance(item, SettledFiles) else 1
        self._queued_files -= files
        return batch

    async def _commit(self, batch: Sequence[Queued]) -> None:
        try:
            committed = await self.call(_record, self.index, list(batch))
        except Exception:
            if len(batch) == 1 and not (isinstance(batch[0], SettledFiles) and len(batch[0]) > 1):
                # One file the index refuses must not stop recording for every other file;
                # the next scan offers it again.
                log.exception("version_not_recorded", path=_first_path(batch[0]))
                return
            # The batch rolled back whole: record its files one by one to isolate the bad one.
            for item in batch:
                if isinstance(item, SettledFiles):
                    for row in item.rows:
                        await self._commit([SettledFiles([row])])
                else:
                    await self._commit([item])
            return
        results = committed.recorded
        if self.on_jobs is not None and (committed.jobs or any(r.job_ids for r in results)):
            self.on_jobs()
        if self.on_commit is not None:
            self.on_commit(results)
        outcomes: Counter[str] = Counter(result.outcome for result in results)
        if committed.new_files:
            outcomes["new_file"] += committed.new_files
        # Per file at debug: a first scan of a million files must not flood the journal. Even
        # filtered out, each event cost ~8 us (its arguments, structlog's lazy proxy and
        # level filter): asked once per batch instead (issue 13, profile §6).
        debug = _stdlib_log.isEnabledFor(logging.DEBUG)
        for result in results if debug else ():
            if result.outcome == "unchanged":
                continue
            log.debug(
                "version_recorded" if result.outcome != "renamed" else "file_renamed",
                path=str(result.path),
                outcome=result.outcome,
                version_id=result.version_id,
                jobs=len(result.job_ids),
                renamed_from=str(result.renamed_from) if result.renamed_from else None,
            )
        if debug and committed.new_files:
            log.debug("versions_recorded_set_wise", files=committed.new_files, jobs=committed.jobs)
        log.info("versions_committed", files=len(results) + committed.new_files, **outcomes)

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


def _record(index: Index, batch: list[Queued]) -> Committed:
    """Writer thread: record ``batch`` in one transaction (:func:`.versions.record_batch`)."""
    now = utc_now()
    with index.write() as conn:
        return versions.record_batch(conn, batch, now=now)


def _first_path(item: Queued) -> str:
    """The (escaped) path of a queued item's first file, for a log line."""
    return item.rows[0][0] if isinstance(item, SettledFiles) else str(item.path)
