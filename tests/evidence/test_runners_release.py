"""Runners built ``held`` start no round before ``release`` (issue 13, the daemon's start).

The daemon holds its runners until the start-up scans are queued: a first round (the due jobs
read, httpcore and anyio imported for the first request) would otherwise compete with the
thread placing the inotify watches, which the scans wait for. A pending job then waits, it is
not lost: released, the runner sends it. A real TSA over loopback, a real index.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

from stampd.daemon.config.reader import parse_config
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.runners import EvidenceRunners
from stampd.daemon.watch.recorder import Recorder
from stampd.store.index.database import Index, index_path
from tests.conftest import settled
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import make_pki

#: Only so that a wrong wait fails the test instead of hanging it.
STUCK_S = 20


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(STUCK_S):
        while not condition():
            await asyncio.sleep(0.02)


def _run(tmp_path: Path, *, held: bool) -> tuple[int, int]:
    """(TSA requests while the runners were held, TSA requests once released)."""
    state, watched = tmp_path / "state", tmp_path / "watched"
    state.mkdir()
    watched.mkdir()
    pki = make_pki(tmp_path / "pki", "Held")
    index = Index.open(index_path(state))
    data = b"pending from the last run\n"
    index.record_settled(
        [
            settled(
                index.ensure_watch(watched),
                watched / "a.txt",
                sha256=hashlib.sha256(data).hexdigest(),
                sha512=hashlib.sha512(data).hexdigest(),
            )
        ]
    )
    with FakeTsa(pki) as tsa:
        config = parse_config(
            {
                "daemon": {"state_dir": str(state)},
                "watch": [{"path": str(watched), "evidence": ["tsr"]}],
                "timestamp": {"tsa": [{"name": "lan", "url": tsa.url, "trust": str(pki.root_pem)}]},
            },
            source=tmp_path / "config.toml",
        )

        async def main() -> tuple[int, int]:
            recorder = Recorder(index)
            runners = EvidenceRunners(
                recorder=recorder, state_dir=state, locks=PathLocks(), held=held
            )
            try:
                runners.apply(runners.prepare(config), {})
                runners.wake()  # as a commit of new jobs would
                await asyncio.sleep(0.5)
                while_held = tsa.requests
                runners.release()
                await _until(lambda: tsa.requests >= 1)
                return while_held, tsa.requests
            finally:
                await runners.close()
                recorder.close()

        try:
            return asyncio.run(main())
        finally:
            index.close()


def test_held_runners_send_nothing_until_released(tmp_path: Path) -> None:
    assert _run(tmp_path, held=True) == (0, 1)


def test_runners_not_held_start_at_once(tmp_path: Path) -> None:
    # What reloads and the tests' runners get: release() is then a no-op.
    assert _run(tmp_path, held=False) == (1, 1)
