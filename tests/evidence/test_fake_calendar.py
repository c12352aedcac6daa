"""The OpenTimestamps test peers checked by the real client (reference opentimestamps.md §6).

The fake calendar and fake bitcoind are only worth something if what they serve is what the
real network serves: the reference client `ots` (opentimestamps-client 0.7.2, a test-only
oracle that shares no code with them) stamps against the calendar, upgrades once it "mines",
and verifies against the node. The misbehaviour modes and the node's RPC are checked with raw
HTTP requests, and the trees with a few-line evaluator written here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stampd.daemon.evidence.bitcoind import BitcoindHeaders
from tests.conftest import require_ots
from tests.fake_bitcoind import REGTEST_BITS, FakeBitcoind, sha256d, target
from tests.fake_calendar import (
    BITCOIN_TAG,
    CLIENT_READ_LIMIT,
    PENDING_TAG,
    FakeCalendar,
    varbytes,
    varuint,
)

TIMEOUT = 10.0


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as node:
        yield node


@pytest.fixture
def calendar(bitcoind: FakeBitcoind) -> Iterator[FakeCalendar]:
    with FakeCalendar(bitcoind) as peer:
        yield peer


# -- a linear-chain evaluator, independent of the fake's serializer ------------------------


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def evaluate(message: bytes, tree: bytes) -> tuple[bytes, bytes, bytes]:
    """Walk a chain without forks: (final message, attestation tag, payload)."""
    pos = 0
    while True:
        tag = tree[pos]
        pos += 1
        if tag == 0x00:
            kind = tree[pos : pos + 8]
            length, pos = read_varuint(tree, pos + 8)
            payload = tree[pos : pos + length]
            assert pos + length == len(tree), "bytes after the attestation"
            return message, kind, payload
        if tag == 0x08:
            message = hashlib.sha256(message).digest()
        elif tag in (0xF0, 0xF1):
            length, pos = read_varuint(tree, pos)
            arg = tree[pos : pos + length]
            pos += length
            message = message + arg if tag == 0xF0 else arg + message
        else:
            raise AssertionError(f"unexpected op 0x{tag:02x} at {pos - 1}")
        assert 1 <= len(message) <= 4096


def submit(calendar: FakeCalendar, digest: bytes) -> httpx.Response:
    return httpx.post(f"{calendar.url}/digest", content=digest, timeout=TIMEOUT)


def commitment_of(calendar: FakeCalendar, digest: bytes) -> bytes:
    reply = submit(calendar, digest)
    assert reply.status_code == 200
    message, _, _ = evaluate(digest, reply.content)
    return message


def fetch(calendar: FakeCalendar, commitment: bytes | str) -> httpx.Response:
    text = commitment if isinstance(commitment, str) else commitment.hex()
    return httpx.get(f"{calendar.url}/timestamp/{text}", timeout=TIMEOUT)


# -- the calendar over raw HTTP -------------------------------------------------------------


def test_digest_reply_is_the_otsd_shape_ending_in_our_uri(calendar: FakeCalendar) -> None:
    digest = hashlib.sha256(b"hello").digest()
    before = int(time.time())
    reply = submit(calendar, digest)
    after = int(time.time())
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    body = reply.content
    assert body[:2] == b"\xf0\x10" and body[18:19] == b"\x08"
    nonce = body[2:18]
    assert body[19:21] == b"\xf1\x04"
    assert before <= int.from_bytes(body[21:25], "big") <= after
    assert body[25:27] == b"\xf0\x08"
    uri = calendar.url.encode()
    assert body[35:] == b"\x00" + PENDING_TAG + varbytes(varbytes(uri))
    assert not calendar.url.endswith("/")
    commitment = body[21:25] + hashlib.sha256(digest + nonce).digest() + body[27:35]
    assert evaluate(digest, body) == (commitment, PENDING_TAG, varbytes(uri))
    assert len(commitment) == 44
    assert calendar.pending == [commitment]
    assert calendar.digests == [digest]
    assert calendar.requests["digest"] == 1


def test_digest_longer_than_64_bytes_is_refused(calendar: FakeCalendar) -> None:
    reply = submit(calendar, bytes(65))
    assert (reply.status_code, reply.text) == (400, "digest too long")
    assert calendar.pending == []


def test_timestamp_states_bodies_and_cache_control(
    calendar: FakeCalendar, bitcoind: FakeBitcoind
) -> None:
    digest = hashlib.sha256(b"states").digest()
    commitment = commitment_of(calendar, digest)

    bad = fetch(calendar, "zz")
    assert (bad.status_code, bad.text) == (400, "commitment must be hex-encoded bytes")
    assert fetch(calendar, "abc").status_code == 400  # odd length is not bytes
    unknown = fetch(calendar, bytes(44))
    assert (unknown.status_code, unknown.text) == (404, "Not found")
    pending = fetch(calendar, commitment)
    assert (pending.status_code, pending.text) == (
        404,
        "Pending confirmation in Bitcoin blockchain",
    )
    assert pending.headers["content-type"] == "text/plain"
    assert pending.headers["cache-control"] == "public, max-age=60"

    (txid,) = calendar.broadcast()
    waiting = fetch(calendar, commitment.hex().upper())
    assert waiting.status_code == 404
    assert waiting.text == f"Timestamped by transaction {txid}; waiting for 6 confirmations"

    height = calendar.mine()
    assert height == bitcoind.height == 900001
    done = fetch(calendar, commitment)
    assert done.status_code == 200
    assert done.headers["content-type"] == "application/octet-stream"
    assert done.headers["cache-control"] == "public, max-age=31536000"
    root, kind, payload = evaluate(commitment, done.content)
    assert (kind, payload) == (BITCOIN_TAG, varuint(900001))
    assert root == bitcoind.header(900001).merkle_root
    # The path's first ops: sha256, prepend the tx prefix, append the tx suffix, sha256 sha256.
    assert done.content[:2] == b"\x08\xf1"
    assert calendar.pending == [] and calendar.mined == [commitment]
    assert calendar.requests["timestamp"] == 6


def test_mine_hook_over_http_batches_every_pending_commitment(
    calendar: FakeCalendar, bitcoind: FakeBitcoind
) -> None:
    commitments = [commitment_of(calendar, bytes([i]) * 32) for i in range(5)]
    reply = httpx.post(f"{calendar.url}/_mine", timeout=TIMEOUT)
    assert (reply.status_code, reply.text) == (200, "900001\n")
    for commitment in commitments:
        root, _, payload = evaluate(commitment, fetch(calendar, commitment).content)
        assert root == bitcoind.header(900001).merkle_root and payload == varuint(900001)
    assert calendar.mine() is None  # nothing left to mine
    assert calendar.requests["mine"] == 1


def test_dead_resets_the_connection(calendar: FakeCalendar) -> None:
    calendar.mode = "dead"
    with pytest.raises(httpx.TransportError):
        submit(calendar, bytes(32))
    with pytest.raises(httpx.TransportError):
        fetch(calendar, bytes(44))
    assert calendar.pending == []


def test_status_500_and_garbage(calendar: FakeCalendar) -> None:
    calendar.mode = "status_500"
    assert submit(calendar, bytes(32)).status_code == 500
    assert fetch(calendar, bytes(44)).status_code == 500
    calendar.mode = "garbage"
    reply = submit(calendar, bytes(32))
    assert reply.status_code == 200 and len(reply.content) == 256
    assert reply.content[0] == 0xFE  # no op tag: no decoder can take it for a tree
    assert submit(calendar, bytes(32)).content != reply.content
    assert calendar.pending == []


def test_oversized_digest_reply_is_a_wellformed_tree_past_the_client_limit(
    calendar: FakeCalendar,
) -> None:
    calendar.mode = "oversized"
    digest = bytes(range(32))
    reply = submit(calendar, digest)
    assert reply.status_code == 200 and len(reply.content) > CLIENT_READ_LIMIT
    commitment, kind, _ = evaluate(digest, reply.content)
    assert kind == PENDING_TAG and calendar.pending == [commitment]
    assert len(fetch(calendar, commitment).content) > CLIENT_READ_LIMIT


def test_wrong_commitment(calendar: FakeCalendar, bitcoind: FakeBitcoind) -> None:
    calendar.mode = "wrong_commitment"
    digest = bytes(range(32))
    reply = submit(calendar, digest)
    ours, kind, _ = evaluate(digest, reply.content)
    assert kind == PENDING_TAG
    assert len(calendar.pending) == 1 and calendar.pending != [ours]
    calendar.mode = "ok"
    assert fetch(calendar, ours).text == "Not found"

    good = commitment_of(calendar, bytes(32))
    calendar.mine()
    calendar.mode = "wrong_commitment"
    decoy = fetch(calendar, good)
    root, kind, payload = evaluate(good, decoy.content)
    assert decoy.status_code == 200 and (kind, payload) == (BITCOIN_TAG, varuint(900001))
    assert root != bitcoind.header(900001).merkle_root  # only the header shows it


def test_slow_answers_after_the_client_deadline(bitcoind: FakeBitcoind) -> None:
    # stop() wakes the sleeping handler: leaving the block does not take 30 s.
    with (
        FakeCalendar(bitcoind, mode="slow", slow_seconds=30) as calendar,
        pytest.raises(httpx.ReadTimeout),
    ):
        httpx.post(f"{calendar.url}/digest", content=bytes(32), timeout=0.3)


def test_unknown_mode_is_refused(calendar: FakeCalendar) -> None:
    with pytest.raises(ValueError, match="unknown FakeCalendar mode"):
        calendar.mode = "hang"


# -- the node over raw HTTP ------------------------------------------------------------------


def rpc(
    node: FakeBitcoind, method: str, *params: object, auth: tuple[str, str] | None = ("u", "p")
) -> httpx.Response:
    body = {"version": "1.1", "method": method, "params": list(params), "id": 7}
    return httpx.post(node.url, json=body, auth=auth, timeout=TIMEOUT)


def test_bitcoind_chain_and_rpc(bitcoind: FakeBitcoind) -> None:
    assert rpc(bitcoind, "getblockcount").json() == {"result": 900000, "error": None, "id": 7}
    root = hashlib.sha256(b"root").digest()
    assert bitcoind.add_block(root, 1_800_000_000) == 900001
    block_hash = rpc(bitcoind, "getblockhash", 900001).json()["result"]
    raw = bytes.fromhex(rpc(bitcoind, "getblockheader", block_hash, False).json()["result"])
    assert len(raw) == 80
    assert sha256d(raw)[::-1].hex() == block_hash
    assert raw[36:68] == root and int.from_bytes(raw[68:72], "little") == 1_800_000_000
    assert int.from_bytes(raw[72:76], "little") == REGTEST_BITS
    assert int.from_bytes(sha256d(raw), "little") <= target(REGTEST_BITS)
    previous = rpc(bitcoind, "getblockhash", 900000).json()["result"]
    assert raw[4:36] == bytes.fromhex(previous)[::-1]  # linked to the previous header
    verbose = rpc(bitcoind, "getblockheader", block_hash).json()["result"]
    assert verbose["height"] == 900001 and verbose["merkleroot"] == root[::-1].hex()


def test_bitcoind_errors_are_bitcoinds(bitcoind: FakeBitcoind) -> None:
    out_of_range = rpc(bitcoind, "getblockhash", 899999)
    assert out_of_range.status_code == 500
    assert out_of_range.json()["error"] == {"code": -8, "message": "Block height out of range"}
    unknown = rpc(bitcoind, "getblockheader", "00" * 32, False)
    assert unknown.status_code == 500 and unknown.json()["error"]["code"] == -5
    assert rpc(bitcoind, "stop").status_code == 404
    anonymous = rpc(bitcoind, "getblockcount", auth=None)
    assert anonymous.status_code == 401 and anonymous.content == b""


def test_bitcoind_cookie_mode_follows_restarts(tmp_path: Path) -> None:
    with FakeBitcoind(cookie_dir=tmp_path) as node:
        user, password = node.cookie_file.read_text().split(":")
        assert user == "__cookie__" and re.fullmatch(r"[0-9a-f]{64}", password)
        assert rpc(node, "getblockcount", auth=(user, password)).status_code == 200
        assert rpc(node, "getblockcount").status_code == 401
        node.restart()
        assert rpc(node, "getblockcount", auth=(user, password)).status_code == 401
        fresh = tuple(node.cookie_file.read_text().split(":"))
        assert rpc(node, "getblockcount", auth=(fresh[0], fresh[1])).status_code == 200


def test_bitcoind_fixed_credentials() -> None:
    with FakeBitcoind(credentials=("alice", "s3cret")) as node:
        assert rpc(node, "getblockcount", auth=("alice", "s3cret")).status_code == 200
        assert rpc(node, "getblockcount", auth=("alice", "other")).status_code == 401
        garbled = {"Authorization": "Basic " + base64.b64encode(b"\xff").decode()}
        reply = httpx.post(node.url, content=b"{}", headers=garbled, timeout=TIMEOUT)
        assert reply.status_code == 401


def test_bitcoind_modes(bitcoind: FakeBitcoind) -> None:
    block_hash = bitcoind.header(900000).hash
    bitcoind.mode = "wrong_header"
    raw = bytes.fromhex(rpc(bitcoind, "getblockheader", block_hash, False).json()["result"])
    assert len(raw) == 80 and sha256d(raw)[::-1].hex() != block_hash
    bitcoind.mode = "short_header"
    assert len(rpc(bitcoind, "getblockheader", block_hash, False).json()["result"]) == 158
    bitcoind.mode = "oversized"
    assert len(rpc(bitcoind, "getblockheader", block_hash, False).content) > 1 << 20
    bitcoind.mode = "garbage"
    with pytest.raises(json.JSONDecodeError):
        rpc(bitcoind, "getblockcount").json()
    bitcoind.mode = "status_503"
    assert rpc(bitcoind, "getblockcount").status_code == 503
    bitcoind.mode = "dead"
    with pytest.raises(httpx.TransportError):
        rpc(bitcoind, "getblockcount")
    assert bitcoind.requests == 6
    with pytest.raises(ValueError, match="unknown FakeBitcoind mode"):
        bitcoind.mode = "hang"


# -- the real client against both ------------------------------------------------------------


def run_ots(home: Path, *args: str) -> tuple[int, str]:
    """`ots ARGS` with HOME in a temporary folder (its cache lives in ~/.cache/ots) and no
    proxy settings; stdout and stderr together."""
    tool = require_ots()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [tool, *args], capture_output=True, text=True, env=env, cwd=home, timeout=120
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def stamped(tmp_path: Path, calendar: FakeCalendar) -> Path:
    """`f.txt` stamped by `ots` at the fake calendar alone."""
    target_file = tmp_path / "f.txt"
    target_file.write_text("proof of existence\n")
    rc, out = run_ots(tmp_path, "--no-cache", "stamp", "-c", calendar.url, "-m", "1", "f.txt")
    assert rc == 0, out
    return tmp_path / "f.txt.ots"


def test_ots_stamps_at_the_fake_and_lists_its_uri(
    tmp_path: Path, calendar: FakeCalendar, stamped: Path
) -> None:
    rc, out = run_ots(tmp_path, "--no-cache", "info", str(stamped))
    assert rc == 0, out
    digest = hashlib.sha256(b"proof of existence\n").hexdigest()
    assert f"File sha256 hash: {digest}" in out
    assert f"verify PendingAttestation('{calendar.url}')" in out
    assert calendar.requests["digest"] == 1 and len(calendar.digests[0]) == 32


def test_ots_upgrades_once_the_fake_mines_and_verifies_at_the_fake_node(
    tmp_path: Path, calendar: FakeCalendar, bitcoind: FakeBitcoind, stamped: Path
) -> None:
    upgrade = ("--no-cache", "--no-default-whitelist", "-l", calendar.url, "upgrade", stamped.name)
    rc, out = run_ots(tmp_path, *upgrade)
    assert rc == 1, out
    assert f"Calendar {calendar.url}: Pending confirmation in Bitcoin blockchain" in out
    assert "Failed! Timestamp not complete" in out

    (txid,) = calendar.broadcast()
    rc, out = run_ots(tmp_path, *upgrade)
    assert rc == 1 and f"Timestamped by transaction {txid}" in out, out

    assert calendar.mine() == 900001
    rc, out = run_ots(tmp_path, *upgrade)
    assert rc == 0 and "Success! Timestamp complete" in out, out
    assert (tmp_path / "f.txt.ots.bak").exists()

    rc, out = run_ots(tmp_path, "--no-cache", "info", stamped.name)
    assert rc == 0, out
    assert f"# Transaction id {txid}" in out  # the fake tx parses as a Bitcoin transaction
    assert "verify BitcoinBlockHeaderAttestation(900001)" in out
    root = bitcoind.header(900001).merkle_root[::-1].hex()
    assert f"# Bitcoin block merkle root {root}" in out
    # stampd's header source reads the same root from the node as `ots` derived from the proof.
    with BitcoindHeaders(bitcoind.url, username="u", password="p") as headers:
        header = headers(900001)
    assert header is not None and header[36:68][::-1].hex() == root

    node = bitcoind.url_with("u", "p")
    verify = ("--no-cache", "--no-default-whitelist", "-l", calendar.url, "--bitcoin-node", node)
    rc, out = run_ots(tmp_path, *verify, "verify", stamped.name)
    assert rc == 0, out
    assert re.search(r"Success! Bitcoin block 900001 attests existence as of \d{4}-\d\d-\d\d", out)
    assert {"getblockhash", "getblockheader"} <= set(bitcoind.calls)


def test_ots_verifies_a_pending_proof_through_the_whitelisted_fake(
    tmp_path: Path, calendar: FakeCalendar, bitcoind: FakeBitcoind, stamped: Path
) -> None:
    calendar.mine()
    node = bitcoind.url_with()
    verify = ("--no-cache", "--no-default-whitelist", "-l", calendar.url, "--bitcoin-node", node)
    rc, out = run_ots(tmp_path, *verify, "verify", stamped.name)
    assert rc == 0 and "Success! Bitcoin block 900001" in out, out


def test_ots_rejects_the_decoy_path_against_the_header(
    tmp_path: Path, calendar: FakeCalendar, bitcoind: FakeBitcoind, stamped: Path
) -> None:
    calendar.mine()
    calendar.mode = "wrong_commitment"
    upgrade = ("--no-cache", "--no-default-whitelist", "-l", calendar.url, "upgrade", stamped.name)
    rc, out = run_ots(tmp_path, *upgrade)
    assert rc == 0, out  # well-formed: the client merges it
    verify = ("--no-cache", "--no-default-whitelist", "--bitcoin-node", bitcoind.url_with())
    rc, out = run_ots(tmp_path, *verify, "verify", stamped.name)
    assert rc == 1 and "Digest does not match merkleroot" in out, out


def test_ots_does_not_upgrade_from_a_calendar_outside_its_whitelist(
    tmp_path: Path, calendar: FakeCalendar, stamped: Path
) -> None:
    calendar.mine()
    rc, out = run_ots(tmp_path, "--no-cache", "--no-default-whitelist", "upgrade", stamped.name)
    assert rc == 1 and "not in whitelist" in out, out
    assert calendar.requests["timestamp"] == 0


def test_ots_stamp_fails_its_quorum_when_the_second_calendar_is_dead(
    tmp_path: Path, calendar: FakeCalendar, bitcoind: FakeBitcoind
) -> None:
    (tmp_path / "g.txt").write_text("two calendars\n")
    with FakeCalendar(bitcoind, mode="dead") as dead:
        args = ("--no-cache", "stamp", "-c", calendar.url, "-c", dead.url, "-m", "2", "g.txt")
        rc, out = run_ots(tmp_path, *args)
        assert dead.requests["digest"] == 1
    assert rc == 1, out
    assert "Failed to create timestamp: need at least 2 attestations but received 1" in out
    assert not (tmp_path / "g.txt.ots").exists()
