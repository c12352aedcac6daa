"""The `.ots` codec against the real world: proofs it writes, stamped at and upgraded from the
fake calendar, are read and verified by the real `ots` client; proofs the client writes are
read and verified by ours (issue 12: "`ots info` accepts every `.ots` stampd writes").

The strategy that drives this in the daemon comes later; here the steps are taken by hand,
with httpx, exactly as reference/opentimestamps.md §2-§3 describe them, so that the codec and
the verifier are shown to interoperate before anything is built on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stampd.daemon.evidence.bitcoind import BitcoindHeaders
from stampd.store.formats import ots
from stampd.store.formats.ots_batch import make_batch
from stampd.store.formats.ots_tree import Timestamp, merge, pending_leaves
from stampd.store.ots_verifier import OtsVerifier
from tests.evidence.test_fake_calendar import run_ots
from tests.fake_bitcoind import FakeBitcoind
from tests.fake_calendar import FakeCalendar


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as node:
        yield node


@pytest.fixture
def calendars(bitcoind: FakeBitcoind) -> Iterator[tuple[FakeCalendar, FakeCalendar]]:
    with FakeCalendar(bitcoind) as first, FakeCalendar(bitcoind) as second:
        yield first, second


def _stamp(root: bytes, calendars: tuple[FakeCalendar, ...]) -> Timestamp:
    """Submit the batch root to every calendar and merge each reply as a fork (§3)."""
    tree = Timestamp(root)
    for calendar in calendars:
        reply = httpx.post(f"{calendar.url}/digest", content=root, timeout=5)
        assert reply.status_code == 200
        # Each reply is rooted at the submitted root: merged there, it becomes one fork.
        tree = merge(tree, root, ots.decode_reply(reply.content, root))
    return tree


def _upgrade(proof: ots.OtsProof) -> ots.OtsProof:
    """Ask each pending leaf's calendar for its commitment and merge what it has (§2)."""
    tree = proof.timestamp
    for uri, commitment in pending_leaves(tree):
        reply = httpx.get(f"{uri}/timestamp/{commitment.hex()}", timeout=5)
        if reply.status_code == 200:
            tree = merge(tree, commitment, ots.decode_reply(reply.content, commitment))
    return ots.OtsProof(proof.file_op, tree)


def _verifier(bitcoind: FakeBitcoind) -> OtsVerifier:
    return OtsVerifier(BitcoindHeaders(bitcoind.url, username="u", password="p"))


def test_proofs_we_write_pass_the_real_client_pending_and_upgraded(
    tmp_path: Path, calendars: tuple[FakeCalendar, FakeCalendar], bitcoind: FakeBitcoind
) -> None:
    files = {name: f"{name}: a record\n".encode() for name in ("a.txt", "b.txt", "c.txt")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    batch = make_batch([hashlib.sha256(data).digest() for data in files.values()])
    root_tree = _stamp(batch.root, calendars)
    # One request per calendar for the whole batch.
    assert [calendar.requests.get("digest", 0) for calendar in calendars] == [1, 1]
    proofs = {name: leaf.proof(root_tree) for name, leaf in zip(files, batch.leaves, strict=True)}
    whitelist = [arg for calendar in calendars for arg in ("-l", calendar.url)]
    for name, proof in proofs.items():
        data = ots.encode(proof)
        assert ots.decode(data) == proof
        (tmp_path / f"{name}.ots").write_bytes(data)
        rc, out = run_ots(tmp_path, "--no-cache", "info", f"{name}.ots")
        assert rc == 0, out
        assert all(calendar.url in out for calendar in calendars)
        verdict = _verifier(bitcoind).verify(
            data, source=name, digest_of=lambda _alg, d=files[name]: hashlib.sha256(d).digest()
        )
        assert verdict.status == "pending", verdict

    for calendar in calendars:
        calendar.mine()
    for name, proof in proofs.items():
        upgraded = _upgrade(proof)
        data = ots.encode(upgraded)
        (tmp_path / f"{name}.ots").write_bytes(data)
        rc, out = run_ots(tmp_path, "--no-cache", "info", f"{name}.ots")
        assert rc == 0, out
        rc, out = run_ots(
            tmp_path,
            "--no-cache",
            "--no-default-whitelist",
            *whitelist,
            "--bitcoin-node",
            bitcoind.url_with(),
            "verify",
            f"{name}.ots",
        )
        assert rc == 0 and "Success! Bitcoin block" in out, out
        verdict = _verifier(bitcoind).verify(
            data, source=name, digest_of=lambda _alg, d=files[name]: hashlib.sha256(d).digest()
        )
        assert verdict.status == "valid", verdict
        assert verdict.authority is not None and verdict.authority.startswith("Bitcoin block")


def test_a_proof_the_real_client_wrote_is_read_upgraded_and_verified_by_ours(
    tmp_path: Path, calendars: tuple[FakeCalendar, FakeCalendar], bitcoind: FakeBitcoind
) -> None:
    first, _second = calendars
    target = tmp_path / "f.txt"
    target.write_bytes(b"stamped by the reference client\n")
    rc, out = run_ots(tmp_path, "--no-cache", "stamp", "-c", first.url, "-m", "1", "f.txt")
    assert rc == 0, out
    written = (tmp_path / "f.txt.ots").read_bytes()
    proof = ots.decode(written)
    assert ots.encode(proof) == written  # the reference writer is canonical (§1.5)
    digest = hashlib.sha256(target.read_bytes()).digest()
    assert proof.digest == digest
    assert [uri for uri, _ in pending_leaves(proof.timestamp)] == [first.url]
    first.mine()
    upgraded = _upgrade(proof)
    verdict = _verifier(bitcoind).verify(
        ots.encode(upgraded), source="f.txt.ots", digest_of=lambda _alg: digest
    )
    assert verdict.status == "valid", verdict
