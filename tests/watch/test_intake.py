"""The intake and the rescans driven on their own, without a Daemon: a real index, a real
recorder, real files and real threads; events are handed in as the watcher would hand them.

They prove the seam: every way in (an event, a scan, a ``stamp`` request) ends in the same
recorded version, and the components need nothing but what they are given.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stampd.daemon.config.model import Config
from stampd.daemon.config.reader import load_config
from stampd.daemon.service.pause import PauseState
from stampd.daemon.watch.hasher import Skipped
from stampd.daemon.watch.intake import Intake, Stamped
from stampd.daemon.watch.recorder import Recorder
from stampd.daemon.watch.rescans import Rescans
from stampd.daemon.watch.runtime import Watches, WatchRuntime
from stampd.daemon.watch.scan_queue import ScanQueue
from stampd.daemon.watch.watcher import Change
from stampd.store.index.database import Index, index_path


def _config(tmp_path: Path, quiet: str) -> Config:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[watch]]\npath = "{tmp_path / "watched"}"\nevidence = []\nquiet = "{quiet}"\n'
    )
    return load_config(config)


@dataclass
class _RepairSink:
    """Where a walk sends sidecars to check (what it asked for is all these tests look at)."""

    files: list[int] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)

    def check_file(self, file_id: int) -> None:
        self.files.append(file_id)

    def check_leftover(self, path: Path) -> None:
        self.leftovers.append(path)


@dataclass
class _Parts:
    root: Path
    index: Index
    recorder: Recorder
    watches: Watches
    watch: WatchRuntime
    intake: Intake
    scans: ScanQueue
    pause: PauseState
    rescans: Rescans

    def versions(self) -> dict[str, str]:
        rows = self.index.conn.execute(
            "SELECT files.path, versions.sha256 FROM versions JOIN files"
            " ON files.id = versions.file_id ORDER BY versions.id"
        )
        return dict(rows)


@asynccontextmanager
async def _parts(tmp_path: Path, *, quiet: str = "50ms") -> AsyncIterator[_Parts]:
    root = tmp_path / "watched"
    root.mkdir()
    config = _config(tmp_path, quiet)
    settings = config.daemon
    settings.state_dir.mkdir()
    index = Index.open(index_path(settings.state_dir))
    recorder = Recorder(index)
    (configured,) = config.watches
    watch = WatchRuntime.of(configured, index.ensure_watch(root))
    watch.root_dev = root.stat().st_dev
    watches = Watches([watch])
    pause, scans = PauseState(), ScanQueue()
    intake = Intake(
        watches=watches,
        recorder=recorder,
        pause=pause,
        scans=scans,
        metrics=lambda: None,
        settings=settings,
        workers=2,
    )
    rescans = Rescans(
        watches=watches,
        intake=intake,
        queue=scans,
        pause=pause,
        repairs=_RepairSink(),
        settings=settings,
        loop=asyncio.get_running_loop(),
        stopping=threading.Event(),
        metrics=lambda: None,
    )
    tasks = [asyncio.create_task(recorder.run()), *intake.tasks().values()]
    try:
        yield _Parts(root, index, recorder, watches, watch, intake, scans, pause, rescans)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await intake.stop()
        await recorder.flush()
        recorder.close()
        index.close()


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _run(tmp_path: Path, scenario: Callable[[_Parts], Awaitable[None]], **options: str) -> None:
    async def main() -> None:
        async with _parts(tmp_path, **options) as parts:
            await scenario(parts)

    asyncio.run(main())


def test_an_event_settles_is_hashed_and_recorded(tmp_path: Path) -> None:
    async def scenario(parts: _Parts) -> None:
        path = parts.root / "invoice.pdf"
        path.write_bytes(b"%PDF\n")
        parts.intake.on_change(Change("created", path))
        parts.intake.on_change(Change("closed", path))
        await _until(lambda: str(path) in parts.versions(), "the version recorded")
        assert parts.intake.hash_reads >= 1
        assert parts.intake.ticks >= 1
        assert parts.intake.backlog() == 0

    _run(tmp_path, scenario)


def test_a_paused_intake_holds_settled_files_until_resumed(tmp_path: Path) -> None:
    async def scenario(parts: _Parts) -> None:
        path = parts.root / "held.txt"
        path.write_text("wait\n")
        assert parts.pause.pause("2024-01-01T00:00:00Z")
        parts.intake.on_change(Change("closed", path))
        await asyncio.sleep(0.5)  # ten quiet periods: it would have been recorded by now
        assert parts.versions() == {}
        assert len(parts.watch.settler) == 1  # still with its settler, which follows events
        assert parts.pause.resume()
        await _until(lambda: str(path) in parts.versions(), "the version recorded")

    _run(tmp_path, scenario)


def test_stamp_now_records_at_once_and_the_settler_lets_go(tmp_path: Path) -> None:
    async def scenario(parts: _Parts) -> None:
        path = parts.root / "report.txt"
        path.write_text("final\n")
        parts.intake.on_change(Change("modified", path))  # still open for writing, it seems
        assert path in parts.watch.settler
        assert parts.watch.root_dev is not None
        stamped = await parts.intake.stamp_now(parts.watch, path, root_dev=parts.watch.root_dev)
        assert isinstance(stamped, Stamped)
        assert stamped.recorded.outcome == "new_file"
        assert parts.versions() == {str(path): stamped.hashed.digests.sha256_hex}
        assert path not in parts.watch.settler
        gone = await parts.intake.stamp_now(
            parts.watch, parts.root / "nothing", root_dev=parts.watch.root_dev
        )
        assert gone == Skipped(parts.root / "nothing", "gone")

    _run(tmp_path, scenario, quiet="1h")


def test_a_new_directory_asks_for_a_walk_of_that_directory_only(tmp_path: Path) -> None:
    async def scenario(parts: _Parts) -> None:
        (parts.root / "new").mkdir()
        parts.intake.on_change(Change("dir_created", parts.root / "new"))
        request = await parts.scans.get()
        assert request is not None
        assert (request.root, request.subtree) == (parts.root, parts.root / "new")

    _run(tmp_path, scenario)


def test_a_scan_hands_what_it_finds_to_the_intake(tmp_path: Path) -> None:
    async def scenario(parts: _Parts) -> None:
        settled = parts.root / "settled.txt"
        settled.write_text("written a while ago\n")
        await asyncio.sleep(0.2)  # older than `quiet`: the scan thread hashes it itself
        fresh = parts.root / "fresh.txt"
        fresh.write_text("just written\n")  # may be younger: then it settles first
        scanner = asyncio.create_task(parts.rescans.scanner())
        try:
            parts.rescans.request(parts.watch)
            await _until(lambda: parts.rescans.scans_done == 1, "the full scan")
            await _until(
                lambda: {str(settled), str(fresh)} <= set(parts.versions()), "both recorded"
            )
        finally:
            parts.rescans.stop()
            await scanner
        assert parts.rescans.full_scans.ticket(parts.root) == 2

    _run(tmp_path, scenario)


def test_outcomes_the_scan_hands_over_are_recorded_in_order_and_counted(tmp_path: Path) -> None:
    async def scenario(parts: _Parts) -> None:
        root_dev = parts.root.stat().st_dev
        paths = [parts.root / f"f{n}" for n in range(5)]
        for n, path in enumerate(paths):
            path.write_bytes(b"x" * n)  # f0 is empty: hashed, no read
        outcomes = [parts.intake.hash(p, root_dev=root_dev, expected=None) for p in paths]
        gone = parts.root / "gone"
        outcomes.insert(2, Skipped(gone, "vanished"))
        reads = parts.intake.hash_reads
        parts.intake.add_outcomes(parts.watch, outcomes)
        # One count per file hashed, as for the hash pool's files (each read counted already).
        assert parts.intake.hash_reads == reads + len(paths)
        await _until(lambda: len(parts.versions()) == len(paths), "the versions recorded")
        assert list(parts.versions()) == [str(p) for p in paths]

    _run(tmp_path, scenario)
