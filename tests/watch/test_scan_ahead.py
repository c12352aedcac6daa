"""The scan's comparisons made ahead of its walk by the hash workers (daemon/watch/scan_ahead.py):
what the workers may do to the walk (die, hang, run far ahead) never changes what it reports.

tests/watch/test_scan.py runs every scan case both ways (in the walk's thread and ahead in
worker processes) and requires the same reports; these are the ways only workers can fail.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stampd.daemon.watch import scan_ahead
from stampd.daemon.watch.filters import WatchFilter
from stampd.daemon.watch.hash_workers import Hashing, HashWorkers, InlineHashing, Job
from stampd.daemon.watch.scan import ScanReport, scan_watch
from stampd.daemon.watch.scan_ahead import AheadInWorkers
from stampd.store.files.filestat import FileStat
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Settled


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A watched root of 40 directories of 5 files, all recorded but one changed file per
    directory and one deleted file: each scan then finds 40 candidates and 1 missing row."""
    root, state = tmp_path / "watched", tmp_path / "state"
    state.mkdir()
    files = []
    for number in range(40):
        for name in range(5):
            path = root / f"d{number:02}" / f"f{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{number}/{name}".encode())
            files.append(path)
    with Index.open(index_path(state)) as index:
        watch = index.ensure_watch(root)
        index.record_settled(
            [
                Settled(
                    watch_id=watch,
                    path=path,
                    stat=FileStat.of(path.lstat()),
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    sha512=hashlib.sha512(path.read_bytes()).hexdigest(),
                    hashed_at=utc_now(),
                    racy=False,
                    evidence=(),
                )
                for path in files
            ]
        )
    for number in range(40):
        (root / f"d{number:02}" / "f0.txt").write_bytes(b"changed, and longer")
    (root / "d07" / "f3.txt").unlink()
    yield root, state


def _scan(
    root: Path,
    state: Path,
    hashing: Hashing | None,
    *,
    stopping: threading.Event | None = None,
    on_progress: object = None,
) -> tuple[ScanReport, list[Path], list[Path]]:
    candidates: list[Path] = []
    missing: list[Path] = []
    comparisons = None
    if hashing is not None:
        comparisons = AheadInWorkers(
            hashing,
            index=index_path(state),
            include=["**"],
            exclude=[],
            stopping=(stopping or threading.Event()).is_set,
        )
    conn = open_reader(index_path(state))
    try:
        report = scan_watch(
            root,
            conn=conn,
            file_filter=WatchFilter(root, ["**"], []),
            on_candidate=lambda path, _stat: candidates.append(path),
            on_missing=missing.extend,
            should_stop=(stopping or threading.Event()).is_set,
            on_progress=on_progress,  # type: ignore[arg-type]
            comparisons=comparisons,
        )
    finally:
        conn.close()
    return report, candidates, missing


def _counts(report: ScanReport) -> tuple[int, ...]:
    return (report.directories, report.files, report.candidates, report.missing, report.errors)


def test_workers_killed_mid_walk_are_replaced_and_the_walk_reports_the_same(
    tree: tuple[Path, Path],
) -> None:
    """SIGKILL to both workers after the root: their tasks are sent again to new processes
    (hash_workers.py), and the report, candidates and missing rows are the in-thread ones."""
    root, state = tree
    expected = _scan(root, state, None)
    workers = HashWorkers(2)
    workers.start()
    killed: list[int] = []

    def kill_after_the_root(directories: int, _files: int) -> None:
        if directories == 1:
            for pid in workers.pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    try:
        got = _scan(root, state, workers, on_progress=kill_after_the_root)
        assert workers.restarts >= 1
    finally:
        workers.close()
    assert len(killed) == 2
    assert _counts(got[0]) == _counts(expected[0]) == (41, 199, 40, 1, 0)
    assert got[1:] == expected[1:]
    assert got[2] == [root / "d07" / "f3.txt"]


class _Silent(Hashing):
    """Workers that take every task and never answer (a hung pool)."""

    count = 2

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> None:
        self.jobs.append(job)


def test_a_stop_while_the_walk_waits_for_a_worker_ends_the_walk_and_nothing_is_missing(
    tree: tuple[Path, Path],
) -> None:
    """The walk waits for the root's comparison; a stop (daemon shutdown) must end that wait
    within the poll interval, and a stopped walk reports no row missing."""
    root, state = tree
    stopping = threading.Event()
    hashing = _Silent()
    threading.Timer(0.3, stopping.set).start()
    report, candidates, missing = _scan(root, state, hashing, stopping=stopping)
    assert report.stopped
    assert (report.directories, candidates, missing) == (0, [], [])
    assert len(hashing.jobs) == 1  # the root, sent alone: the walk needs it first


def test_what_is_sent_ahead_stays_within_the_window(
    tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root with many subdirectories: at most WINDOW (+ one task) directories are held
    ahead of the walk, in tasks of at most PER_TASK, whatever the tree's width."""
    root, state = tree
    monkeypatch.setattr(scan_ahead, "WINDOW", 8)
    monkeypatch.setattr(scan_ahead, "PER_TASK", 3)
    sizes: list[int] = []

    class Recording(InlineHashing):
        count = 2

        def submit(self, job: Job) -> None:
            sizes.append(len(job.task[-1]))
            super().submit(job)

    held: list[int] = []
    hashing = Recording()
    ahead: list[AheadInWorkers] = []
    real = scan_ahead.AheadInWorkers.ahead

    def watching(self: AheadInWorkers, stack: list[str]) -> None:
        real(self, stack)
        ahead.append(self)
        held.append(self.held)

    monkeypatch.setattr(scan_ahead.AheadInWorkers, "ahead", watching)
    report, candidates, missing = _scan(root, state, hashing)
    assert _counts(report) == (41, 199, 40, 1, 0)
    assert len(candidates) == 40 and missing == [root / "d07" / "f3.txt"]
    assert max(sizes) == 3 and sum(sizes) == 41  # each directory sent exactly once
    assert max(held) <= 8 + 3
    assert ahead[-1].held == 0  # everything sent was taken
