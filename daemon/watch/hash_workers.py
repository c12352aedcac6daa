"""The hash worker processes that hash a scan's settled files (``daemon.hash_workers``).

One scan thread walking and hashing every file under the GIL, beside the index writer and the
loop, was the first scan's critical path (issue 13's profile: 112 µs per file alone, 250-300
inside the daemon, a GIL convoy on every system call). Worker *processes* each have their own
interpreter, so they hash in parallel on every core and their Python never competes for the
daemon's GIL. Each worker runs :mod:`stampd.daemon.watch.dir_hash` (``python -m``), started
once when the daemon starts: ``fork`` + ``exec`` through :mod:`subprocess`, which is safe in a
threaded process (unlike a bare ``fork``) and imports nothing of the daemon in the worker
(unlike multiprocessing's spawn and forkserver, which import the parent's ``__main__``).

A task is a batch of files (about :data:`TASK_FILES`, grouped by directory), so the pipe
round trip is paid per batch; each worker has up to two tasks in flight, so it starts the
next while the daemon reads the last reply. One feeder thread per worker writes tasks and
reads replies (blocking pipe I/O, without the GIL).

A worker that dies (killed, out of memory) is started again and the tasks it held are hashed
again by the next one: a reply is used only once it has been read whole, so no file is lost
and none is recorded twice. A task that killed :data:`MAX_TRIES` workers is hashed in the
feeder thread instead, so one strange file cannot keep the pool restarting.

With ``hash_workers = 1`` there is no process: :class:`InlineHashing` hashes each task in the
scan thread, with the same guards and replies.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.dir_hash import Reply, Task, hash_task, read_message, write_message

log = get_logger("stampd.daemon.watch.hash_workers")

#: Files per task: enough that a pipe round trip (~100 µs) is small beside the hashing
#: (~20 µs per 4 KiB file), few enough that a stop waits little for the tasks in flight.
TASK_FILES = 128
#: Tasks one worker holds at a time: one being hashed, one waiting in its pipe.
IN_FLIGHT = 2
#: Workers a task may kill before it is hashed in the daemon itself.
MAX_TRIES = 3
#: Seconds :meth:`HashWorkers.close` waits for workers to exit before killing them.
CLOSE_TIMEOUT_S = 5.0
#: Workers that die this many times in a row before their first reply mean that no worker
#: can run here (the interpreter or the module cannot be started): hashing goes on in the
#: daemon's own threads, once logged, instead of a restart per task.
FAILED_STARTS = 3

_COMMAND = (sys.executable, "-m", "stampd.daemon.watch.dir_hash")


class Results(Protocol):
    """Where a job's ``(job, started_ns, replies)`` go: a queue, or anything with its ``put``
    (scan_batches.py turns the replies into outcomes right there, in the feeder thread)."""

    def put(self, item: tuple[Job, int, list[Reply]], /) -> None:
        """Take one job's result (called in the thread that read or hashed it)."""
        ...


@dataclass
class Job:
    """One task on its way: where its result goes, and how many workers it has killed."""

    task: Task
    results: Results
    tag: object = None
    tries: int = 0


def _files_of(task: Task) -> int:
    """The files a hash task holds (0 for a scan's compare task, which holds directories)."""
    return sum(len(items) for _d, items in task[1]) if isinstance(task[1], list) else 0


class Hashing:
    """What the scan thread hashes through: a pool of processes, or the scan thread itself."""

    count = 1

    def start(self) -> None:
        """Start the workers (nothing to start here)."""

    def submit(self, job: Job) -> None:
        """Hash ``job.task``; its ``(job, started_ns, replies)`` arrive on ``job.results``."""
        started, replies = hash_task(job.task)
        job.results.put((job, started, replies))

    def close(self) -> None:
        """Stop the workers (nothing to stop here)."""


class InlineHashing(Hashing):
    """``hash_workers = 1``: each task is hashed at once, in the thread that submits it."""


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    jobs: deque[Job] = field(default_factory=deque)
    thread: threading.Thread | None = None
    #: Whether this process has sent a reply (one that dies before that failed to start).
    replied: bool = False


class HashWorkers(Hashing):
    """``count`` worker processes fed from one queue of jobs (module docstring)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._workers = [_Worker(index) for index in range(count)]
        self._started = False
        # Guards the choice between queueing a job and hashing it here (submit), against the
        # pool giving up on processes (_give_up), so that no job is queued after the drain.
        self._lock = threading.Lock()
        self._broken = False
        self._failed_starts = 0
        self.restarts = 0

    def start(self) -> None:
        """Start every worker process and its feeder thread (once, at daemon start)."""
        for worker in self._workers:
            worker.process = self._spawn()
            worker.thread = threading.Thread(
                target=self._feed, args=(worker,), name=f"stampd-hashw-{worker.index}", daemon=True
            )
            worker.thread.start()
        self._started = True

    def pids(self) -> list[int]:
        """The worker processes' ids (tests kill one)."""
        return [w.process.pid for w in self._workers if w.process is not None]

    def submit(self, job: Job) -> None:
        """Queue ``job`` for the next free worker."""
        with self._lock:
            queued = self._started and not self._broken and not self._closing.is_set()
            if queued:
                self._jobs.put(job)
        if not queued:
            super().submit(job)  # no workers (any more): hash it here rather than lose it

    def close(self) -> None:
        """Stop feeding, close each worker's stdin (it exits), wait, then kill stragglers.

        Jobs not hashed yet are dropped: the scan that asked for them has stopped too, and
        the next start's scan finds those files again."""
        if self._closing.is_set():
            return
        self._closing.set()
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            if worker.thread is not None:
                worker.thread.join(CLOSE_TIMEOUT_S)
        for worker in self._workers:
            self._end(worker)

    # --- the feeder threads --------------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            _COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )

    def _feed(self, worker: _Worker) -> None:
        """Keep ``worker`` busy: write jobs while it holds fewer than :data:`IN_FLIGHT`, read
        replies in order, and start a new process when this one dies."""
        while worker.process is not None:
            if len(worker.jobs) < IN_FLIGHT:
                try:
                    # Wait for a job only when the worker holds none; else read its reply.
                    job = self._jobs.get(block=not worker.jobs)
                except queue.Empty:
                    pass
                else:
                    if job is None:  # close(): one None per feeder
                        return
                    worker.jobs.append(job)
                    if not self._write(worker, job):
                        self._restart(worker)
                    continue
            self._read_one(worker)

    def _write(self, worker: _Worker, job: Job) -> bool:
        process = worker.process
        assert process is not None and process.stdin is not None
        try:
            write_message(process.stdin.fileno(), job.task)
        except OSError:
            return False
        return True

    def _read_one(self, worker: _Worker) -> None:
        process = worker.process
        assert process is not None and process.stdout is not None
        try:
            reply = read_message(process.stdout.fileno())
        except (OSError, ValueError, EOFError):
            reply = None
        if reply is None:
            self._restart(worker)
            return
        job = worker.jobs.popleft()
        worker.replied = True
        self._failed_starts = 0
        started, replies = reply
        job.results.put((job, started, replies))

    def _restart(self, worker: _Worker) -> None:
        """The worker died: start another, and hash again what it held (in order)."""
        held = list(worker.jobs)
        worker.jobs.clear()
        code = self._end(worker)
        if self._closing.is_set():
            return
        self.restarts += 1
        log.warning("hash_worker_died", worker=worker.index, exit_code=code, tasks=len(held))
        self._failed_starts = 0 if worker.replied else self._failed_starts + 1
        if self._failed_starts >= FAILED_STARTS or self._broken:
            self._give_up(held, code)
            return
        worker.process = self._spawn()
        worker.replied = False
        for job in held:
            job.tries += 1
            if job.tries >= MAX_TRIES:
                log.error("hash_task_killed_workers", files=_files_of(job.task))
                Hashing.submit(self, job)  # in this thread, with the same guards
            else:
                self._jobs.put(job)

    def _give_up(self, held: list[Job], code: int | None) -> None:
        """No worker process can run: hash what this feeder held and everything queued in
        this thread, and every later job in the thread that submits it."""
        with self._lock:
            first = not self._broken
            self._broken = True
            queued: list[Job] = []
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    queued.append(job)
        if first:
            log.error(
                "hash_workers_unavailable",
                command=" ".join(_COMMAND),
                exit_code=code,
                action="hashing in the daemon's own threads; set daemon.hash_workers = 1 to"
                " silence this, or fix the installation so that the command runs",
            )
        for job in [*held, *queued]:
            Hashing.submit(self, job)

    def _end(self, worker: _Worker) -> int | None:
        process = worker.process
        if process is None:
            return None
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            code = process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        worker.process = None
        return code
