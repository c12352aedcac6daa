"""The Finisher: rounds that get their proofs together end together (daemon/evidence/finisher.py).

Real files under tmp_path, a real index with its writer thread (Recorder) and reader. Each
file's round still gets its own outcome: the archive copy and sidecar are on disk before its
job is done, a file whose sidecar cannot be written fails alone, and one completion the
index refuses fails only its own round.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from stampd.daemon.evidence.finisher import LANES, Finished, Finisher, Finishing, Unfinished
from stampd.daemon.evidence.index_reader import IndexReader
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.proof_files import ProofFiles
from stampd.daemon.watch.recorder import Recorder
from stampd.store import kinds
from stampd.store.errors import UnsafePathError
from stampd.store.files.archive import archive_path
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import Completion, DueJob, NewProof, due_jobs
from stampd.store.index.times import utc_now
from stampd.store.kinds import EvidenceKind
from tests.conftest import settled

#: Only so that a finisher wrongly waiting fails the test instead of hanging it.
STUCK_S = 20


@dataclass
class Setup:
    state: Path
    watched: Path
    index: Index


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    state = tmp_path / "state"
    state.mkdir()
    watched = tmp_path / "watched"
    watched.mkdir()
    index = Index.open(index_path(state))
    try:
        yield Setup(state, watched, index)
    finally:
        index.close()


def record(setup: Setup, names: list[str], *, ino: int = 100) -> list[DueJob]:
    """Write and record ``names`` (an ots job each); their due jobs, in the same order."""
    watch = setup.index.ensure_watch(setup.watched)
    items = []
    for number, name in enumerate(names):
        data = f"{name} {ino}".encode()
        (setup.watched / name).write_bytes(data)
        items.append(
            settled(
                watch,
                setup.watched / name,
                sha256=hashlib.sha256(data).hexdigest(),
                sha512=hashlib.sha512(data).hexdigest(),
                evidence=("ots",),
                ino=ino + number,
            )
        )
    setup.index.record_settled(items)
    conn = open_reader(setup.index.path)
    try:
        jobs = due_jobs(conn, EvidenceKind.OTS, now=utc_now(), limit=10_000)
    finally:
        conn.close()
    by_path = {job.path: job for job in jobs}
    return [by_path[setup.watched / name] for name in names]


def finishing(job: DueJob) -> Finishing:
    data = b"proof of " + job.sha256.encode()
    proof = NewProof(
        kind=EvidenceKind.OTS,
        provider="http://127.0.0.1:1",
        digest_alg="sha256",
        digest=job.sha256,
        gen_time=None,
        serial=None,
        authority=None,
        not_after=None,
        sidecar_sha256=hashlib.sha256(data).hexdigest(),
        status="pending",
    )
    completion = Completion(job_id=job.job_id, version_id=job.version_id, proof=proof, attempts=())
    return Finishing(job, data, completion, "adjacent")


def job_states(setup: Setup) -> dict[int, str]:
    conn = open_reader(setup.index.path)
    try:
        return {int(r[0]): str(r[1]) for r in conn.execute("SELECT id, state FROM jobs")}
    finally:
        conn.close()


class Running:
    """A Finisher on the real writer and reader of ``setup``'s index."""

    def __init__(self, setup: Setup) -> None:
        self.recorder = Recorder(setup.index)
        self.reader = IndexReader(setup.index.path)
        self.finisher = Finisher(
            files=ProofFiles(kinds.spec(EvidenceKind.OTS), setup.state),
            read=self.reader,
            recorder=self.recorder,
            locks=PathLocks(),
        )

    async def close(self) -> None:
        await self.finisher.close()
        self.reader.close()
        self.recorder.close()


def test_rounds_ending_together_share_one_set_and_one_transaction(setup: Setup) -> None:
    jobs = record(setup, [f"f{number}.dat" for number in range(20)])
    items = [finishing(job) for job in jobs]

    async def main() -> list[Finished | Unfinished]:
        running = Running(setup)
        try:
            before = running.recorder.calls_done
            endings = await asyncio.gather(*(running.finisher.finish(item) for item in items))
            # One set, and one call to the writer for its 20 completions.
            assert running.finisher.sets == 1
            assert running.recorder.calls_done - before == 1
            return list(endings)
        finally:
            await running.close()

    endings = asyncio.run(main())
    assert all(isinstance(e, Finished) and e.sidecar and e.proof_id for e in endings)
    for item in items:
        assert (item.job.path.parent / f"{item.job.path.name}.ots").read_bytes() == item.data
        digest = hashlib.sha256(item.data).hexdigest()
        assert archive_path(setup.state, digest, "ots").read_bytes() == item.data
    assert set(job_states(setup).values()) == {"done"}


def test_a_sets_sidecars_in_one_directory_share_a_few_directory_fsyncs(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = record(setup, [f"f{number}.dat" for number in range(40)])
    items = [finishing(job) for job in jobs]
    watched = setup.watched.stat()
    synced: list[tuple[int, int]] = []
    real: Callable[[int], None] = os.fsync

    def fsync(fd: int) -> None:  # observed, then the real fsync
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced.append((st.st_dev, st.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    async def main() -> list[Finished | Unfinished]:
        running = Running(setup)
        try:
            return list(await asyncio.gather(*(running.finisher.finish(i) for i in items)))
        finally:
            await running.close()

    endings = asyncio.run(main())
    assert all(isinstance(ending, Finished) and ending.sidecar for ending in endings)
    # One fsync of the directory per lane that wrote into it, not one per sidecar.
    assert 1 <= synced.count((watched.st_dev, watched.st_ino)) <= LANES < len(items)


def test_a_file_whose_sidecar_cannot_be_written_fails_alone(setup: Setup) -> None:
    jobs = record(setup, ["a.dat", "b.dat", "c.dat"])
    # Something that is not a sidecar stampd wrote sits at b.dat.ots: never replaced.
    (setup.watched / "b.dat.ots").mkdir()
    items = [finishing(job) for job in jobs]

    async def main() -> list[Finished | Unfinished]:
        running = Running(setup)
        try:
            return list(await asyncio.gather(*(running.finisher.finish(i) for i in items)))
        finally:
            await running.close()

    first, second, third = asyncio.run(main())
    assert isinstance(first, Finished) and isinstance(third, Finished)
    assert isinstance(second, Unfinished) and second.step == "sidecar"
    assert isinstance(second.error, UnsafePathError)
    assert (setup.watched / "b.dat.ots").is_dir()
    # Its archive copy was written first (the job then backs off and tries again).
    digest = hashlib.sha256(items[1].data).hexdigest()
    assert archive_path(setup.state, digest, "ots").read_bytes() == items[1].data
    states = job_states(setup)
    assert [states[job.job_id] for job in jobs] == ["done", "pending", "done"]


def test_a_version_that_is_no_longer_the_files_content_is_archived_only(setup: Setup) -> None:
    [old] = record(setup, ["a.dat"])
    record(setup, ["a.dat"], ino=200)  # the file changed: a new version is its content now
    item = finishing(old)

    async def main() -> Finished | Unfinished:
        running = Running(setup)
        try:
            return await running.finisher.finish(item)
        finally:
            await running.close()

    ending = asyncio.run(main())
    assert isinstance(ending, Finished) and ending.proof_id is not None and not ending.sidecar
    assert not (setup.watched / "a.dat.ots").exists()
    digest = hashlib.sha256(item.data).hexdigest()
    assert archive_path(setup.state, digest, "ots").read_bytes() == item.data
    assert job_states(setup)[old.job_id] == "done"


def test_a_completion_the_index_refuses_fails_only_its_round(setup: Setup) -> None:
    jobs = record(setup, ["a.dat", "b.dat", "c.dat"])
    items = [finishing(job) for job in jobs]
    # A version the index does not have: the proof row's foreign key refuses it, which rolls
    # back the set's transaction; the others are then recorded one by one.
    bad = items[1]
    items[1] = replace(bad, completion=replace(bad.completion, version_id=999_999))

    async def main() -> list[Finished | Unfinished | BaseException]:
        running = Running(setup)
        try:
            return list(
                await asyncio.gather(
                    *(running.finisher.finish(i) for i in items), return_exceptions=True
                )
            )
        finally:
            await running.close()

    first, second, third = asyncio.run(main())
    assert isinstance(first, Finished) and isinstance(third, Finished)
    assert isinstance(second, sqlite3.IntegrityError)
    states = job_states(setup)
    assert [states[job.job_id] for job in jobs] == ["done", "pending", "done"]


def test_rounds_arriving_while_a_set_is_under_way_form_the_next_set(setup: Setup) -> None:
    jobs = record(setup, ["a.dat", "b.dat", "c.dat"])
    first, *later = [finishing(job) for job in jobs]

    async def main() -> None:
        running = Running(setup)
        release = threading.Event()
        holding = threading.Event()

        def busy_writer() -> None:  # a scan's batch on the writer's thread
            holding.set()
            release.wait(STUCK_S)

        try:
            held = asyncio.ensure_future(running.recorder.call(busy_writer))
            await asyncio.to_thread(holding.wait, STUCK_S)
            started = asyncio.ensure_future(running.finisher.finish(first))
            # The first set has written its files and waits for the writer.
            async with asyncio.timeout(STUCK_S):
                while not (first.job.path.parent / "a.dat.ots").exists():
                    await asyncio.sleep(0.01)
            joining = asyncio.gather(*(running.finisher.finish(item) for item in later))
            await asyncio.sleep(0.05)
            assert running.finisher.sets == 0
            release.set()
            await held
            assert isinstance(await started, Finished)
            assert all(isinstance(ending, Finished) for ending in await joining)
            assert running.finisher.sets == 2
        finally:
            release.set()
            await running.close()

    asyncio.run(main())
    assert set(job_states(setup).values()) == {"done"}
