"""What one scan hands over: its settled files to the hash workers, in tasks, and the
outcomes and unsettled candidates to the loop, in batches (daemon/watch/rescans.py).

The scan thread calls :meth:`ScanBatches.directory` once per directory walked with the
candidates found there. A candidate unchanged for longer than ``quiet`` (by its own mtime and
ctime) whose ``fstat`` at open still equals what the walk saw has met the settle rule (two
equal stats a quiet period apart), so it is hashed at once rather than sent through the
settler and the hash pool: a first scan is mostly such files. They go, about
:data:`~stampd.daemon.watch.hash_workers.TASK_FILES` per task, to the hash workers
(:mod:`stampd.daemon.watch.hash_workers`), which hash in parallel while the thread walks on.
A file that changed since the walk saw it settles as usual, like every other candidate.

A task's replies are turned into outcomes by the feeder thread that read them
(:meth:`ScanBatches.put`): its hashed files as one
:class:`~stampd.store.index.new_files.SettledFiles` of plain rows, which the loop passes to the
index writer as they are. The walk's thread, the first scan's critical path, only collects
them.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.dir_hash import Item, Reply
from stampd.daemon.watch.hash_workers import IN_FLIGHT, TASK_FILES, Hashing, Job
from stampd.daemon.watch.hasher import HashOutcome, Skipped, Unreadable
from stampd.daemon.watch.intake import Candidate
from stampd.daemon.watch.runtime import WatchRuntime
from stampd.store.errors import ErrorClass
from stampd.store.files.filestat import FileStat
from stampd.store.files.pathnames import escape
from stampd.store.index.new_files import SettledFiles, SettledRow
from stampd.store.index.times import format_time

log = get_logger("stampd.daemon")

#: Scan candidates handed to the loop at a time.
SCAN_BATCH = 256

#: Candidates found in one directory: each file's name and its ``lstat`` key.
Found = list[tuple[str, FileStat]]


class ScanBatches:
    """The hand-overs of one scan of ``watch`` (module docstring); one thread uses it."""

    def __init__(
        self,
        watch: WatchRuntime,
        hashing: Hashing,
        *,
        hand_over: Callable[[list[Candidate], list[HashOutcome]], None],
        stopping: Callable[[], bool],
    ) -> None:
        """``hand_over(unsettled, outcomes)`` takes each batch (it may wait: back-pressure);
        ``stopping`` says the daemon is stopping, and nothing in flight is waited for."""
        self._watch = watch
        self._hashing = hashing
        self._hand_over = hand_over
        self._stopping = stopping
        self._now_wall, self._now_mono = time.time(), time.monotonic()
        self.unsettled: list[Candidate] = []
        self.outcomes: list[HashOutcome] = []
        # Files in self.outcomes beyond one per item (a SettledFiles holds many).
        self._outcome_files = 0
        # Each task's replies, already turned into outcomes by the thread that read them
        # (a feeder thread: off the walk's path, see _Taken).
        self._results: queue.SimpleQueue[_Taken] = queue.SimpleQueue()
        # The task being filled: per directory, the candidates to hash there.
        self._filling: list[tuple[str, Found]] = []
        self._filling_files = 0
        self._in_flight = 0
        self._most_in_flight = IN_FLIGHT * hashing.count + 1

    def settle_later(self, path: Path, key: FileStat) -> None:
        """``path`` has not met the settle rule: the settler takes it."""
        age = max(0.0, self._now_wall - max(key.mtime_ns, key.ctime_ns) / 1e9)
        self.unsettled.append((path, key, self._now_mono - age))
        self._maybe_hand_over()

    def directory(self, directory: str, found: Found) -> None:
        """The candidates the walk found in ``directory``."""
        watch = self._watch
        settler, quiet, now_wall = watch.settler, watch.config.quiet, self._now_wall
        # A pending path is the settler's (events may say it is still open for writing); on
        # a first scan the settler is empty and no Path is built to ask it.
        ask_settler = len(settler) > 0
        ready: Found = []
        for name, key in found:
            # Settled for as long as neither content nor metadata changed (settle.py).
            age = now_wall - max(key.mtime_ns, key.ctime_ns) / 1e9
            if (
                age > quiet
                and watch.root_dev is not None
                and not (ask_settler and Path(directory, name) in settler)
            ):
                ready.append((name, key))
            else:
                self.unsettled.append((Path(directory, name), key, self._now_mono - max(0.0, age)))
        # A large directory is cut into tasks too, so that every worker takes part and each
        # reply stays well below a pipe's 64 KiB (hash_workers.py: no writer waits on both).
        for start in range(0, len(ready), TASK_FILES):
            chunk = ready[start : start + TASK_FILES]
            self._filling.append((directory, chunk))
            self._filling_files += len(chunk)
            if self._filling_files >= TASK_FILES:
                self._submit()
        self._collect(block=False)
        self._maybe_hand_over()

    def finish(self) -> None:
        """The walk is over: hash what is left, wait for every task (unless stopping), and
        hand everything over."""
        try:
            if not self._stopping():  # a stopped walk's last files wait for the next start
                self._submit()
        finally:
            while self._in_flight and not self._stopping():
                self._collect(block=True)
            self._flush()

    # --- inside ----------------------------------------------------------------------------------

    def _maybe_hand_over(self) -> None:
        if len(self.unsettled) + len(self.outcomes) + self._outcome_files >= SCAN_BATCH:
            self._flush()

    def _flush(self) -> None:
        unsettled, outcomes = self.unsettled, self.outcomes
        self.unsettled, self.outcomes = [], []
        self._outcome_files = 0
        self._hand_over(unsettled, outcomes)

    def _submit(self) -> None:
        root_dev = self._watch.root_dev
        if not self._filling or root_dev is None:
            return
        task_dirs: list[tuple[str, list[Item]]] = [
            (directory, [(n, (k.dev, k.ino, k.size, k.mtime_ns, k.ctime_ns)) for n, k in found])
            for directory, found in self._filling
        ]
        job = Job(task=(root_dev, task_dirs), results=self, tag=self._filling)
        self._filling = []
        self._filling_files = 0
        self._in_flight += 1
        self._hashing.submit(job)
        # Bounded: a few tasks per worker, so the walk never runs far ahead of the hashing.
        while self._in_flight >= self._most_in_flight and not self._stopping():
            self._collect(block=True)

    def _collect(self, *, block: bool) -> None:
        """Take the replies that have arrived (with ``block``, wait up to 0.1 s for one)."""
        results = self._results
        while self._in_flight:
            try:
                taken = results.get(timeout=0.1) if block else results.get_nowait()
            except queue.Empty:
                return
            self._in_flight -= 1
            self.outcomes.extend(taken.outcomes)
            self.unsettled.extend(taken.unsettled)
            self._outcome_files += taken.files - len(taken.outcomes)
            self._maybe_hand_over()
            block = False

    def put(self, item: tuple[Job, int, list[Reply]], /) -> None:
        """A task's result (hash_workers.Results), in the thread that read it: turned into
        outcomes there, so the walk only collects them."""
        job, started_ns, replies = item
        try:
            taken = self._take(job, started_ns, replies)
        except Exception:
            # Never lose the feeder thread (the walk would wait for this task forever): the
            # task's files are left for the next scan.
            log.exception("scan_replies_failed", files=len(replies))
            taken = _Taken([], [], 0)
        self._results.put(taken)

    def _take(self, job: Job, started_ns: int, replies: list[Reply]) -> _Taken:
        """Turn a task's replies into the outcomes ``Intake.add_outcomes`` takes: its hashed
        files as one :class:`SettledFiles`; a file that changed since the walk saw it
        settles after all. Any thread: it reads only what does not change during a scan."""
        # One timestamp per task (it took milliseconds): hashed_at says when, in the index's
        # text format, without a datetime per file (4.3 µs each in the profile).
        hashed_at = format_time(datetime.fromtimestamp(started_ns / 1e9, UTC))
        watch_id, evidence = self._watch.watch_id, self._watch.config.evidence
        found: list[tuple[str, Found]] = job.tag  # type: ignore[assignment]
        rows: list[SettledRow] = []
        taken = _Taken([], [], 0)
        index = 0
        for directory, items in found:
            parent = Path(directory)
            # The escaped texts the index keeps, once per directory: escape commutes with
            # joining (store/files/pathnames.py), and "parent / x" shows how pathlib joins.
            parent_text = escape(parent)
            prefix = escape(parent / "x")[:-1]
            for name, key in items:
                reply = replies[index]
                index += 1
                code = reply[0]
                if code == "h":
                    # A row, not a Path and three dataclasses per file (issue 13: those were
                    # ~20 µs per file under the daemon's GIL). The worker checked fstat before
                    # and after the read against this very key, so it is the hashed file's.
                    rows.append(
                        (
                            prefix + escape(name),
                            parent_text,
                            key.dev,
                            key.ino,
                            key.size,
                            key.mtime_ns,
                            key.ctime_ns,
                            reply[1].hex(),
                            reply[2].hex(),
                            reply[3],
                            watch_id,
                            hashed_at,
                            evidence,
                        )
                    )
                    continue
                path = parent / name
                if code == "c":
                    age = max(0.0, self._now_wall - max(key.mtime_ns, key.ctime_ns) / 1e9)
                    taken.unsettled.append((path, key, self._now_mono - age))
                elif code == "s":
                    taken.outcomes.append(Skipped(path, reply[1]))
                    taken.files += 1
                else:
                    stat = FileStat(*reply[1]) if reply[1] is not None else None
                    taken.outcomes.append(Unreadable(path, stat, ErrorClass.IO, reply[2]))
                    taken.files += 1
        if rows:
            taken.outcomes.append(SettledFiles(rows))
            taken.files += len(rows)
        return taken


@dataclass
class _Taken:
    """One task's replies as outcomes (``files``: how many files they hold in all) and the
    candidates that must settle again."""

    outcomes: list[HashOutcome]
    unsettled: list[Candidate]
    files: int
