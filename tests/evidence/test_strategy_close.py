"""A strategy's own resources are released once nothing uses it (``Strategy.close``).

The ``ots`` strategy holds a connection pool of its own, to bitcoind (``[anchor.bitcoin]``).
Each reload builds a new strategy; before ``close`` existed, every reload left the previous
pool open for the life of the process. A reload lets rounds in progress finish with the
strategy they started with, so the old one is closed only after those rounds end; a refused
reload closes the strategies it prepared; stopping the runner closes the one in use.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from stampd.daemon.config.model import Config
from stampd.daemon.config.reader import parse_config
from stampd.daemon.evidence.backoff import Backoff
from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.evidence.ots import OtsStrategy
from stampd.daemon.evidence.pool import ProviderPool
from stampd.daemon.evidence.runner import JobRunner
from stampd.daemon.evidence.runners import EvidenceRunners
from stampd.daemon.evidence.tsa import Rfc3161Provider
from stampd.daemon.evidence.tsr import TsrStrategy
from stampd.daemon.watch.recorder import Recorder
from stampd.store.index.database import Index, index_path
from stampd.store.trust import load_anchors
from stampd.store.tsr_verifier import AnchorSet, TsrVerifier
from tests.conftest import settled
from tests.fake_bitcoind import FakeBitcoind
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki

#: Only so that a wrong wait fails the test instead of hanging it.
STUCK_S = 20


class ClosingTsr(TsrStrategy):
    """The tsr strategy, counting its ``close`` calls."""

    closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Close")


@pytest.fixture
def tsa(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki, hang_seconds=STUCK_S) as server:
        yield server


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(STUCK_S):
        while not condition():
            await asyncio.sleep(0.02)


def test_a_replaced_strategy_is_closed_after_its_rounds_and_the_last_at_stop(
    tmp_path: Path, pki: Pki, tsa: FakeTsa
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    index = Index.open(index_path(state))
    watched = tmp_path / "watched"
    watched.mkdir()
    data = b"a round in progress during a reload\n"
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
    tsa.mode = "hang"

    async def main() -> None:
        recorder = Recorder(index)
        async with httpx.AsyncClient() as client:

            def strategy() -> ClosingTsr:
                provider = Rfc3161Provider(
                    name="local",
                    url=tsa.url,
                    client=client,
                    anchors=load_anchors(pki.root_pem),
                    timeout=STUCK_S,
                )
                return ClosingTsr(
                    pool=ProviderPool([provider]),
                    verifier=TsrVerifier([AnchorSet("local", load_anchors(pki.root_pem))]),
                    digest_alg="sha256",
                    backoff=Backoff(30, 60),
                )

            first, second = strategy(), strategy()
            runner = JobRunner(recorder=recorder, strategy=first, state_dir=state, layouts={})
            task = asyncio.create_task(runner.run())
            try:
                await _until(lambda: tsa.requests == 1)
                runner.reconfigure(strategy=second, layouts={})
                await asyncio.sleep(0.2)
                # The round that started with `first` still waits for the TSA.
                assert (first.closed, second.closed) == (0, 0)
                tsa.mode = "ok"  # ends the hang: that round fails, its job backs off
                await _until(lambda: first.closed == 1)
                assert second.closed == 0
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                recorder.close()
            assert (first.closed, second.closed) == (1, 1)

    try:
        asyncio.run(main())
    finally:
        index.close()


def _ots_config(tmp_path: Path, node: FakeBitcoind) -> Config:
    watched = tmp_path / "watched"
    watched.mkdir(exist_ok=True)
    secret = tmp_path / "rpc.secret"
    secret.write_text("p\n")
    raw: dict[str, object] = {
        "daemon": {"state_dir": str(tmp_path / "state")},
        "watch": [{"path": str(watched), "evidence": ["ots"]}],
        "anchor": {"calendars": ["http://127.0.0.1:9/"], "min_replies": 1, "allow": []},
    }
    raw["anchor"]["bitcoin"] = {  # type: ignore[index]
        "url": node.url,
        "username": "u",
        "secret_file": str(secret),
    }
    return parse_config(raw, source=tmp_path / "config.toml")


def _bitcoind_client(strategy: object) -> httpx.Client:
    assert isinstance(strategy, OtsStrategy)
    headers = strategy.verifier.headers
    client = getattr(headers, "_client", None)
    assert isinstance(client, httpx.Client)
    return client


def test_a_discarded_setup_and_a_stopped_runner_close_the_bitcoind_connections(
    tmp_path: Path,
) -> None:
    with FakeBitcoind() as node:

        async def main() -> None:
            index = Index.open(index_path(tmp_path))
            recorder = Recorder(index)
            runners = EvidenceRunners(recorder=recorder, state_dir=tmp_path, locks=PathLocks())
            try:
                config = _ots_config(tmp_path, node)
                refused = runners.prepare(config)
                refused_client = _bitcoind_client(refused.strategies["ots"])
                runners.discard(refused)  # as a refused reload does
                assert refused_client.is_closed

                used = runners.prepare(config)
                used_client = _bitcoind_client(used.strategies["ots"])
                runners.apply(used, {})
                replacement = runners.prepare(config)
                runners.apply(replacement, {})  # a reload: no round was in progress
                await _until(lambda: used_client.is_closed)
                last_client = _bitcoind_client(replacement.strategies["ots"])
                assert not last_client.is_closed
            finally:
                await runners.close()
                recorder.close()
                index.close()
            assert last_client.is_closed

        asyncio.run(main())
