"""The index writer thread: batches, and one bad file never stops recording for the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

from stampd.daemon.watch.recorder import Recorder
from stampd.store.files.filestat import FileStat
from stampd.store.index.database import Index, index_path
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
