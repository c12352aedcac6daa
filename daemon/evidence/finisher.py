"""The last steps of the rounds that get their proofs at the same moment, done together.

Every round that has its proof ends the same way, in the order of DESIGN rule 1: the proof's
archive copy durably written, its sidecar durably written (when the version is still the
file's content), then the proof row, the attempts and the job's end committed. A batch
(``ots``: up to 512 files under one calendar request) hands hundreds of rounds their proofs
in the same turn of the loop. Done round by round, that was a write transaction, three
directory walks and four fsyncs per file on the loop's few default threads, and it was where
a 10k-file ``ots`` drop spent its time (issue 12, bench/bench_ots.py).

:class:`Finisher` takes every round that reaches these steps in one turn of the loop, and
those that arrive while a set is under way, as one set:

1. every archive copy written, spread over :data:`LANES` threads (an fsync is mostly waiting,
   and the filesystem's journal commits concurrent fsyncs together);
2. where each file is now, in one read;
3. the set's path locks taken together (daemon/evidence/locks.py), every sidecar written,
   again over :data:`LANES` threads;

   in both, each file is fsynced and renamed into place as before, but a lane fsyncs each
   directory once after all its renames (store/files/atomic.py ``DirectorySyncs``), and the
   files are sorted by directory so that a directory's files share a lane: a drop of 512
   files into one directory costs 8 directory fsyncs instead of 512;
4. every completion committed in ONE write transaction (store/index/jobs.py
   ``complete_jobs``); should it fail as a whole, each is committed on its own, so one bad
   row fails only its job.

Each round still gets its own outcome: a step that fails for one file fails only that job,
which backs off as before. Nothing is recorded before its files are durable, so a crash
anywhere leaves the jobs of the set pending, and their next round adopts what was written.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from stampd.daemon.evidence.index_reader import IndexReader
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.proof_files import ProofFiles
from stampd.daemon.watch.recorder import Recorder
from stampd.store.errors import StampdError
from stampd.store.files.atomic import DirectorySyncs
from stampd.store.files.sidecar import Layout
from stampd.store.index.jobs import Completion, DueJob, complete_jobs, current_path

#: Threads writing a set's files at once. fsync waits for the disk; several in flight share
#: one journal commit (measured on ext4: 6-8 writers reach several times one writer's rate).
LANES = 8

_T = TypeVar("_T")


@dataclass(frozen=True)
class Finishing:
    """One round's verified proof, ready for its last steps."""

    job: DueJob
    #: The proof's bytes (the provider's, unmodified: DESIGN rule 5).
    data: bytes
    completion: Completion
    #: Where its sidecar goes; None for no sidecar (an index-only kind, or a version that is
    #: no longer the file's content: its proof is kept in the archive only).
    layout: Layout | None


@dataclass(frozen=True)
class Finished:
    """The round's proof is durable and recorded."""

    #: The proof row; None when the job was no longer pending (someone else ended it).
    proof_id: int | None
    #: Whether a sidecar was written next to the file.
    sidecar: bool


@dataclass(frozen=True)
class Unfinished:
    """A step failed for this file: nothing was recorded, and the job backs off."""

    #: ``archive`` or ``sidecar``.
    step: str
    error: StampdError


Ending = Finished | Unfinished
_Waiting = tuple[Finishing, "asyncio.Future[Ending]"]


class Finisher:
    """Archives, places and records the proofs of the rounds ending together (one loop)."""

    def __init__(
        self,
        *,
        files: ProofFiles,
        read: IndexReader,
        recorder: Recorder,
        locks: PathLocks,
        lanes: int = LANES,
    ) -> None:
        self._files = files
        self._read = read
        self._recorder = recorder
        self._locks = locks
        self._lanes = lanes
        self._threads: ThreadPoolExecutor | None = None
        self._waiting: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None
        #: Sets finished, for the tests (how many rounds shared a set is their concern).
        self.sets = 0

    async def finish(self, item: Finishing) -> Ending:
        """Make ``item``'s proof durable and record it, with every other round ending now."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ending] = loop.create_future()
        self._waiting.append((item, future))
        if self._task is None:
            # The task's first step runs in the loop's next turn: every round resumed in this
            # turn (a batch's outcomes are all set in one) has joined the set by then.
            self._task = loop.create_task(self._run())
        return await future

    async def close(self) -> None:
        """Stop: a set under way is cancelled (its jobs stay pending in the index)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, future in self._waiting:
            future.cancel()
        self._waiting = []
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None

    async def _run(self) -> None:
        try:
            while self._waiting:
                # A round cancelled while it waited (shutdown) has nothing left to finish.
                live = [(item, future) for item, future in self._waiting if not future.done()]
                self._waiting = []
                if live:
                    await self._finish_set(live)
        finally:
            self._task = None

    async def _finish_set(self, waiting: list[_Waiting]) -> None:
        items = [item for item, _ in waiting]
        try:
            endings = await self._endings(items)
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as error:  # every round of the set learns of it (and backs off)
            endings = [error] * len(items)
        self.sets += 1
        for (_, future), ending in zip(waiting, endings, strict=True):
            if future.done():
                continue
            if isinstance(ending, BaseException):
                future.set_exception(ending)
            else:
                future.set_result(ending)

    async def _endings(self, items: Sequence[Finishing]) -> list[Ending | BaseException]:
        endings: list[Ending | BaseException | None] = [None] * len(items)
        # 1. Archive copies first (DESIGN rule 1): the archive outlives any sidecar.
        archived = await self._in_lanes(
            self._files.archive, [item.data for item in items], _archive_directory
        )
        for number, problem in enumerate(archived):
            if problem is not None:
                endings[number] = _failed("archive", problem)
        live = [number for number, ending in enumerate(endings) if ending is None]
        # 2. Where each file is now: a rename since the job was picked moved the row, and the
        # sidecar belongs at the new name (a rename after this point is repaired later).
        placed = [number for number in live if items[number].layout is not None]
        keys = [(items[number].job.file_id, items[number].job.version_id) for number in placed]
        where = dict(zip(placed, await self._read(partial(_current_paths, keys)), strict=True))
        # 3. Sidecars, under the locks of every path of the set.
        targets: list[int] = []
        sidecars: list[tuple[Path, Layout, bytes]] = []
        for number in placed:
            path, layout = where[number], items[number].layout
            if path is not None and layout is not None:
                targets.append(number)
                sidecars.append((path, layout, items[number].data))
        async with self._locks.hold(where.get(number) or items[number].job.path for number in live):
            written = await self._in_lanes(self._place, sidecars, _sidecar_directory)
            for number, problem in zip(targets, written, strict=True):
                if problem is not None:
                    endings[number] = _failed("sidecar", problem)
            with_sidecar = {
                number for number, problem in zip(targets, written, strict=True) if not problem
            }
            # 4. One transaction for every completion left.
            commit = [number for number, ending in enumerate(endings) if ending is None]
            ids = await self._commit([items[number].completion for number in commit])
            for number, proof_id in zip(commit, ids, strict=True):
                endings[number] = (
                    proof_id
                    if isinstance(proof_id, BaseException)
                    else Finished(proof_id, number in with_sidecar)
                )
        # Every file has its ending by now: failed at a step, or committed (or raising).
        return [RuntimeError("no ending") if ending is None else ending for ending in endings]

    def _place(self, sidecar: tuple[Path, Layout, bytes], syncs: DirectorySyncs) -> None:
        path, layout, data = sidecar
        self._files.place_sidecar(path, layout, data, syncs)

    async def _commit(self, completions: Sequence[Completion]) -> list[int | Exception | None]:
        if not completions:
            return []
        index = self._recorder.index
        try:
            return list(await self._recorder.call(complete_jobs, index, completions))
        except Exception:
            if len(completions) == 1:
                raise
        # The transaction rolled back whole: one by one, so that one bad row fails its job only.
        ids: list[int | Exception | None] = []
        for completion in completions:
            try:
                [proof_id] = await self._recorder.call(complete_jobs, index, [completion])
            except Exception as error:
                ids.append(error)
            else:
                ids.append(proof_id)
        return ids

    async def _in_lanes(
        self,
        step: Callable[[_T, DirectorySyncs], object],
        args: Sequence[_T],
        directory: Callable[[_T], str],
    ) -> list[Exception | None]:
        """``step`` for each of ``args``, spread over the lanes; each one's exception or None.

        Sorted by ``directory`` and cut into contiguous runs, one per lane: the files of one
        directory share as few lanes as possible, and so as few directory fsyncs.
        """
        if not args:
            return []
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self._lanes, thread_name_prefix="stampd-files")
        loop = asyncio.get_running_loop()
        count = min(self._lanes, len(args))
        order = sorted(range(len(args)), key=lambda number: directory(args[number]))
        lanes = [
            order[lane * len(order) // count : (lane + 1) * len(order) // count]
            for lane in range(count)
        ]
        done = await asyncio.gather(
            *(loop.run_in_executor(self._threads, _run_lane, step, args, lane) for lane in lanes)
        )
        problems: list[Exception | None] = [None] * len(args)
        for lane, outcomes in zip(lanes, done, strict=True):
            for number, problem in zip(lane, outcomes, strict=True):
                problems[number] = problem
        return problems


def _run_lane(
    step: Callable[[_T, DirectorySyncs], object], args: Sequence[_T], numbers: Sequence[int]
) -> list[Exception | None]:
    syncs = DirectorySyncs()
    outcomes: list[Exception | None] = []
    try:
        for number in numbers:
            try:
                step(args[number], syncs)
            except Exception as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        try:
            syncs.sync()
        except StampdError as error:
            # Which of the lane's renames reached the disk is unknown: none of them counts.
            outcomes = [error if outcome is None else outcome for outcome in outcomes]
    finally:
        syncs.close()
    return outcomes


def _archive_directory(data: bytes) -> str:
    """The archive's fan-out directory of ``data`` (store/files/archive.py)."""
    return hashlib.sha256(data).hexdigest()[:2]


def _sidecar_directory(sidecar: tuple[Path, Layout, bytes]) -> str:
    return str(sidecar[0].parent)


def _current_paths(keys: Sequence[tuple[int, int]], conn: sqlite3.Connection) -> list[Path | None]:
    return [
        current_path(conn, file_id=file_id, version_id=version_id) for file_id, version_id in keys
    ]


def _failed(step: str, problem: Exception) -> Ending | BaseException:
    """A file's own problem (a StampdError) fails its job; anything else is a bug, raised in
    its round like any other (the round logs it and backs off)."""
    return Unfinished(step, problem) if isinstance(problem, StampdError) else problem
