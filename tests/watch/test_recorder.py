"""The index writer thread: batches, and one bad file never stops recording for the others."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from stampd.daemon.service.logs import configure_logging
from stampd.daemon.watch.recorder import MAX_BATCH, Recorder
from stampd.store.files.filestat import FileStat
from stampd.store.index.database import Index, index_path
from stampd.store.index.new_files import SettledFiles, SettledRow
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Settled


def _settled(watch_id: int, name: str, evidence: tuple[str, ...] = ("ots",)) -> Settled:
    digest = name.encode().hex().ljust(64, "0")[:64]
    return Settled(
        watch_id=watch_id,
        path=Path("/srv") / name,
        stat=FileStat(1, hash(name) & 0xFFFF, 5, 1, 1),
        sha256=digest,
        sha512=digest * 2,
        hashed_at=utc_now(),
        racy=False,
        evidence=evidence,
    )


def test_a_refused_file_is_isolated_and_the_rest_is_recorded(tmp_path: Path) -> None:
    async def main() -> list[str]:
        index = Index.open(index_path(tmp_path))
        recorder = Recorder(index)
        watch_id = index.ensure_watch(Path("/srv"))
        # "nope" violates the CHECK on jobs.kind: the whole batch's transaction rolls back.
        recorder.submit(_settled(watch_id, "a"))
        recorder.submit(_settled(watch_id, "bad", evidence=("nope",)))
        recorder.submit(_settled(watch_id, "c"))
        runner = asyncio.create_task(recorder.run())
        while recorder.backlog():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        runner.cancel()
        paths = [row[0] for row in index.conn.execute("SELECT path FROM files ORDER BY path")]
        recorder.close()
        index.close()
        return paths

    assert asyncio.run(main()) == ["/srv/a", "/srv/c"]


def test_files_submitted_many_at_once_are_committed_in_order_in_bounded_batches(
    tmp_path: Path,
) -> None:
    count = 2 * MAX_BATCH + 7

    async def main() -> tuple[list[int], list[str]]:
        index = Index.open(index_path(tmp_path))
        recorder = Recorder(index)
        watch_id = index.ensure_watch(Path("/srv"))
        sizes: list[int] = []
        recorder.on_commit = lambda results: sizes.append(len(results))
        recorder.submit_many([])  # nothing queued: nothing to wake up for
        recorder.submit_many(_settled(watch_id, f"f{n:04}", evidence=()) for n in range(count))
        assert recorder.backlog() == count
        runner = asyncio.create_task(recorder.run())
        while sum(sizes) < count:
            await asyncio.sleep(0.01)
        assert recorder.backlog() == 0
        # A later file wakes the idle writer again.
        recorder.submit(_settled(watch_id, "late", evidence=()))
        while sum(sizes) < count + 1:
            await asyncio.sleep(0.01)
        runner.cancel()
        paths = [row[0] for row in index.conn.execute("SELECT path FROM files ORDER BY id")]
        recorder.close()
        index.close()
        return sizes, paths

    sizes, paths = asyncio.run(main())
    assert sizes == [MAX_BATCH, MAX_BATCH, 7, 1]
    assert paths == [f"/srv/f{n:04}" for n in range(count)] + ["/srv/late"]


@pytest.mark.parametrize("level", ["debug", "info"])
def test_each_recorded_file_is_logged_at_debug_only(tmp_path: Path, level: str) -> None:
    """The per-file events stay with --debug; without it they are not even built."""
    out = io.StringIO()
    configure_logging(log_format="json", level=level, stream=out, environ={})

    async def main() -> None:
        index = Index.open(index_path(tmp_path))
        recorder = Recorder(index)
        watch_id = index.ensure_watch(Path("/srv"))
        recorder.submit_many([_settled(watch_id, "a"), _settled(watch_id, "b")])
        await recorder.flush()
        recorder.close()
        index.close()

    try:
        asyncio.run(main())
    finally:
        configure_logging(log_format="json", level="info", stream=io.StringIO(), environ={})
    events = [json.loads(line) for line in out.getvalue().splitlines() if line]
    per_file = [e["path"] for e in events if e["event"] == "version_recorded"]
    assert per_file == (["/srv/a", "/srv/b"] if level == "debug" else [])
    (committed,) = [e for e in events if e["event"] == "versions_committed"]
    assert (committed["files"], committed["new_file"]) == (2, 2)


def _row(watch_id: int, name: str, evidence: tuple[str, ...] = ("ots",)) -> SettledRow:
    item = _settled(watch_id, name, evidence)
    stat = item.stat
    return (
        f"/srv/{name}",
        "/srv",
        stat.dev,
        stat.ino,
        stat.size,
        stat.mtime_ns,
        stat.ctime_ns,
        item.sha256,
        item.sha512,
        item.racy,
        watch_id,
        item.hashed_at,
        evidence,
    )


def test_settled_files_are_counted_as_files_committed_and_a_refused_row_isolated(
    tmp_path: Path,
) -> None:
    """A scan's SettledFiles: the backlog counts their files, batches hold about MAX_BATCH
    files, the job runners are woken for their jobs, and one row the index refuses rolls
    back only itself."""
    count = MAX_BATCH + 100

    async def main() -> tuple[list[str], int, int]:
        index = Index.open(index_path(tmp_path))
        recorder = Recorder(index)
        wakes: list[None] = []
        recorder.on_jobs = lambda: wakes.append(None)
        watch_id = index.ensure_watch(Path("/srv"))
        rows = [_row(watch_id, f"f{n:04}") for n in range(count)]
        rows[7] = _row(watch_id, "f0007", evidence=("nope",))
        recorder.submit_many([SettledFiles(rows[:128])])
        for start in range(128, count, 128):
            recorder.submit(SettledFiles(rows[start : start + 128]))
        backlog = recorder.backlog()
        await recorder.flush()
        assert recorder.backlog() == 0
        paths = [row[0] for row in index.conn.execute("SELECT path FROM files ORDER BY id")]
        jobs = index.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        recorder.close()
        index.close()
        assert wakes
        return paths, backlog, jobs

    paths, backlog, jobs = asyncio.run(main())
    assert backlog == count
    assert paths == [f"/srv/f{n:04}" for n in range(count) if n != 7]
    assert jobs == count - 1
