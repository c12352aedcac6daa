"""The job runner's reads go to a read-only connection, not through the index writer.

DESIGN §3: one writer, readers on their own connections (WAL). A scan committing a batch of
thousands of versions holds the writer's thread; the runner must still find its due jobs
and ask a provider meanwhile. The writer is held here by a call that waits for the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stampd.daemon.evidence.backoff import Backoff
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.runner import JobRunner
from stampd.daemon.evidence.tsa import Rfc3161Provider
from stampd.daemon.evidence.tsr import TsrStrategy
from stampd.daemon.watch.recorder import Recorder
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.trust import load_anchors
from stampd.store.tsr_verifier import AnchorSet, TsrVerifier
from tests.conftest import settled
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki

#: Only so that a runner wrongly waiting for the writer fails the test instead of hanging it.
STUCK_S = 20


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Runner")


@pytest.fixture
def tsa(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as server:
        yield server


def test_due_jobs_are_found_and_stamped_while_the_writer_is_busy(
    tmp_path: Path, pki: Pki, tsa: FakeTsa
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    index = Index.open(index_path(state))
    watched = tmp_path / "watched"
    watched.mkdir()
    data = b"recorded before the scan batch\n"
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

    async def main() -> None:
        recorder = Recorder(index)
        release = threading.Event()
        holding = threading.Event()

        def long_batch() -> None:  # the writer's thread, busy with a scan's batch
            holding.set()
            release.wait(STUCK_S)

        held = asyncio.ensure_future(recorder.call(long_batch))
        await asyncio.to_thread(holding.wait, STUCK_S)
        async with httpx.AsyncClient() as client:
            provider = Rfc3161Provider(
                name="local",
                url=tsa.url,
                client=client,
                anchors=load_anchors(pki.root_pem),
                timeout=5,
            )
            strategy = TsrStrategy(
                pool=ProviderPool([provider]),
                verifier=TsrVerifier([AnchorSet("local", load_anchors(pki.root_pem))]),
                digest_alg="sha256",
                backoff=Backoff(30, 60),
            )
            runner = JobRunner(recorder=recorder, strategy=strategy, state_dir=state, layouts={})
            task = asyncio.create_task(runner.run())
            try:
                async with asyncio.timeout(STUCK_S):
                    while tsa.requests == 0:
                        await asyncio.sleep(0.02)
                # Asked while the writer is still held: the due job came from a reader.
                assert not release.is_set() and not held.done()
                release.set()
                await held
                async with asyncio.timeout(STUCK_S):
                    while runner.completed == 0:
                        await asyncio.sleep(0.02)
            finally:
                release.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                recorder.close()

    try:
        asyncio.run(main())
        conn = open_reader(index_path(state))
        try:
            [job] = conn.execute("SELECT state, proof_id FROM jobs").fetchall()
        finally:
            conn.close()
        assert job["state"] == "done" and job["proof_id"] is not None
    finally:
        index.close()
