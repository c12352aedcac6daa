"""A fake OpenTimestamps calendar on 127.0.0.1 for tests (reference opentimestamps.md §2, §6).

`FakeCalendar(bitcoind)` is a context manager serving from a background thread on an ephemeral
port, like tests/fake_tsa.py does for TSAs. It answers as otsd does:

- `POST /digest`: the body is the digest (`Content-Length` bytes; more than 64 → 400 "digest too
  long"). The reply, `200 application/octet-stream`, is a timestamp tree (no magic) rooted at
  that digest, as otsd's aggregator and calendar build it:
  `f0 10 <16 B nonce> 08 f1 04 <unix time, big-endian> f0 08 <8 B HMAC>
  00 83dfe30d2ef90c8e varbytes(varbytes(uri))`. The 44-byte message at the Pending leaf is the
  **commitment**; `uri` is exactly `.url` (`http://127.0.0.1:PORT`, no trailing slash).
- `GET /timestamp/<hex commitment>`: `404 text/plain` "Pending confirmation in Bitcoin
  blockchain" while pending, "Timestamped by transaction <txid>; waiting for 6 confirmations"
  after `broadcast()`, "Not found" when unknown (all `Cache-Control: max-age=60`); 400
  "commitment must be hex-encoded bytes" for bad hex; once mined `200 application/octet-stream`
  with `Cache-Control: public, max-age=31536000` and the tree from the commitment to the block.
- `POST /_mine` (test hook, same as `mine()`): confirms every pending commitment into one new
  block of the given `FakeBitcoind`. Each commitment gets its own legacy transaction (one input,
  a change output and an `OP_RETURN <32 B>` output) next to a coinbase and a decoy transaction,
  so its path is the realistic one: `08` (sha256), `f1 <tx prefix>`, `f0 <tx suffix>`, `08 08`
  (the txid), then per merkle level `f1|f0 <32 B sibling>` + `08 08`, ending in
  `00 0588960d73d71901 varbytes(varuint(height))` at the block's merkle root (internal order).

Misbehaviour on demand through `.mode` (any of `MODES`, changeable while serving; it applies to
`/digest` and `/timestamp/…` alike, never to `/_mine`):
`dead` (the connection is reset without a reply), `status_500`, `garbage` (a `200` of random
bytes whose first byte is no op tag), `oversized` (a `200` over 10000 bytes; on `/digest` it is a
well-formed tree, so only a size cap refuses it), `wrong_commitment` (a well-formed tree built
for another digest: on `/digest` the calendar records the other digest's commitment, so the
client's is "Not found" later; on `/timestamp/…` it is the path of the block's decoy
transaction, which leads to a merkle root that is not the block's — only checking the header
shows it), `slow` (sleeps `slow_seconds`, then answers normally).
`.requests` counts requests per endpoint (`digest`, `timestamp`, `mine`, `other`).

The tree bytes come from the tiny serializer below (varuint, varbytes, linear op chains): this
module does not import stampd, so it is an independent check of stampd's `.ots` codec.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self, get_args

from tests.fake_bitcoind import FakeBitcoind, sha256d
from tests.loopback_peer import LoopbackPeer

Mode = Literal["ok", "dead", "status_500", "garbage", "oversized", "wrong_commitment", "slow"]
MODES: frozenset[str] = frozenset(get_args(Mode))
MAX_DIGEST = 64  # otsd: "digest too long"
#: What the reference client reads of a reply (reference §2); `oversized` goes past it.
CLIENT_READ_LIMIT = 10000
PENDING_TAG = bytes.fromhex("83dfe30d2ef90c8e")
BITCOIN_TAG = bytes.fromhex("0588960d73d71901")
OP_SHA256 = b"\x08"
OP_APPEND = b"\xf0"
OP_PREPEND = b"\xf1"
PENDING_BODY = b"Pending confirmation in Bitcoin blockchain"
NOT_FOUND_BODY = b"Not found"
BAD_HEX_BODY = b"commitment must be hex-encoded bytes"
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def varuint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant group first (reference §1.1)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varbytes(data: bytes) -> bytes:
    """`varuint(len)` + the bytes."""
    return varuint(len(data)) + data


class Chain:
    """A linear op chain from a start message, serialized as it is built (reference §1.3).

    Each op is one entry of a node with a single entry, so no `ff` fork markers are needed;
    `message` is the result so far.
    """

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.data = bytearray()

    def append(self, arg: bytes) -> Self:
        self.data += OP_APPEND + varbytes(arg)
        self.message += arg
        return self

    def prepend(self, arg: bytes) -> Self:
        self.data += OP_PREPEND + varbytes(arg)
        self.message = arg + self.message
        return self

    def sha256(self) -> Self:
        self.data += OP_SHA256
        self.message = hashlib.sha256(self.message).digest()
        return self

    def pending(self, uri: str) -> bytes:
        """The chain ended in a PendingAttestation; its payload is varbytes(uri), in varbytes."""
        return bytes(self.data + b"\x00" + PENDING_TAG + varbytes(varbytes(uri.encode())))

    def bitcoin(self, height: int) -> bytes:
        """The chain ended in a BitcoinBlockHeaderAttestation at `height`."""
        return bytes(self.data + b"\x00" + BITCOIN_TAG + varbytes(varuint(height)))


def compact_size(n: int) -> bytes:
    """Bitcoin's CompactSize for the short lengths used here."""
    assert n < 0xFD
    return bytes([n])


@dataclass(frozen=True)
class FakeTx:
    """A legacy transaction carrying `sha256(commitment)` in an `OP_RETURN` output."""

    prefix: bytes
    suffix: bytes

    @classmethod
    def make(cls) -> FakeTx:
        script_sig = b"\x47" + secrets.token_bytes(71)  # a signature-sized push
        change = b"\x00\x14" + secrets.token_bytes(20)  # P2WPKH
        prefix = (
            struct.pack("<i", 2)
            + compact_size(1)
            + secrets.token_bytes(32)
            + struct.pack("<I", 0)
            + compact_size(len(script_sig))
            + script_sig
            + struct.pack("<I", 0xFFFFFFFD)
            + compact_size(2)
            + struct.pack("<q", 12_345)
            + compact_size(len(change))
            + change
            + struct.pack("<q", 0)
            + compact_size(34)
            + b"\x6a\x20"  # OP_RETURN, push 32 bytes: the leaf goes here
        )
        return cls(prefix, struct.pack("<I", 0))  # nLockTime

    def txid(self, leaf: bytes) -> bytes:
        """The txid (internal order) with `leaf` in the OP_RETURN output."""
        return sha256d(self.prefix + leaf + self.suffix)


def coinbase(height: int) -> bytes:
    """A coinbase transaction with the BIP 34 height push."""
    script_sig = b"\x03" + height.to_bytes(3, "little") + secrets.token_bytes(8)
    script_sig = compact_size(len(script_sig)) + script_sig
    output = b"\x00\x14" + secrets.token_bytes(20)
    return (
        struct.pack("<i", 1)
        + compact_size(1)
        + bytes(32)
        + b"\xff\xff\xff\xff"
        + script_sig
        + b"\xff\xff\xff\xff"
        + compact_size(1)
        + struct.pack("<q", 312_500_000)
        + compact_size(len(output))
        + output
        + struct.pack("<I", 0)
    )


def merkle_levels(txids: list[bytes]) -> list[list[bytes]]:
    """Bitcoin's merkle tree, leaves first; an odd level pairs its last node with itself."""
    levels = [txids]
    while len(levels[-1]) > 1:
        level = levels[-1]
        if len(level) % 2:
            level = [*level, level[-1]]
        levels.append([sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)])
    return levels


def block_path(commitment: bytes, tx: FakeTx, index: int, levels: list[list[bytes]]) -> Chain:
    """The chain from a commitment through its transaction to the merkle root."""
    chain = Chain(commitment).sha256().prepend(tx.prefix).append(tx.suffix).sha256().sha256()
    for level in levels[:-1]:
        sibling = index ^ 1
        neighbour = level[sibling] if sibling < len(level) else level[index]
        if index % 2:
            chain.prepend(neighbour)
        else:
            chain.append(neighbour)
        chain.sha256().sha256()
        index //= 2
    return chain


@dataclass(frozen=True)
class _Reply:
    status: int
    content_type: str
    body: bytes
    cache: str | None = None


class _Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0), answered by the owning FakeCalendar."""

    server: _Server

    def do_POST(self) -> None:
        owner = self.server.owner
        if self.path == "/_mine":
            owner._count("mine")
            height = owner.mine()
            self._send(_Reply(200, "text/plain", f"{height}\n".encode()))
            return
        if self.path != "/digest":
            owner._count("other")
            self._send(_Reply(404, "text/plain", NOT_FOUND_BODY))
            return
        owner._count("digest")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(_Reply(411, "text/plain", b"Content-Length required"))
            return
        if length > MAX_DIGEST:
            self._send(_Reply(400, "text/plain", b"digest too long"))
            return
        digest = self.rfile.read(length)
        self._answer(lambda: owner._submit(digest))

    def do_GET(self) -> None:
        owner = self.server.owner
        prefix = "/timestamp/"
        if not self.path.startswith(prefix):
            owner._count("other")
            self._send(_Reply(404, "text/plain", NOT_FOUND_BODY))
            return
        owner._count("timestamp")
        text = self.path[len(prefix) :]
        self._answer(lambda: owner._lookup(text))

    def _answer(self, normal: Callable[[], _Reply]) -> None:
        """Apply the owner's mode, then the normal answer."""
        owner = self.server.owner
        mode = owner.mode
        if mode == "dead":
            # A reset with no status line: what a calendar that went away looks like.
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.close_connection = True
            return
        if mode == "slow":
            owner._stopping.wait(owner.slow_seconds)
        elif mode == "status_500":
            self._send(_Reply(500, "text/plain", b"Internal Server Error"))
            return
        elif mode == "garbage":
            body = b"\xfe" + secrets.token_bytes(255)  # 0xfe is no op tag
            self._send(_Reply(200, "application/octet-stream", body))
            return
        self._send(normal())

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            if reply.cache is not None:
                self.send_header("Cache-Control", reply.cache)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (deadline, size cap)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the per-request stderr line; `.requests` is what tests look at."""


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: FakeCalendar) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


@dataclass
class _Mined:
    tree: bytes
    decoy: bytes  # the path of the same block's decoy transaction (wrong_commitment)


class FakeCalendar(LoopbackPeer):
    """An otsd-like calendar that mines into a FakeBitcoind (see the module docstring)."""

    def __init__(
        self,
        bitcoind: FakeBitcoind | None = None,
        *,
        mode: Mode = "ok",
        slow_seconds: float = 30.0,
    ) -> None:
        self.bitcoind = bitcoind if bitcoind is not None else FakeBitcoind()
        self.mode = mode
        self.slow_seconds = slow_seconds
        self._hmac_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        super().__init__()
        #: Requests received per endpoint: ``digest``, ``timestamp``, ``mine``, ``other``.
        self.requests: Counter[str] = Counter()
        #: Every digest POSTed, in order.
        self.digests: list[bytes] = []
        self._pending: dict[bytes, FakeTx | None] = {}
        self._txids: dict[bytes, str] = {}
        self._mined: dict[bytes, _Mined] = {}

    @property
    def mode(self) -> str:
        """How the next request is answered; one of `MODES`."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown FakeCalendar mode {value!r}")
        self._mode = value  # a single reference store: atomic for the handler threads

    @property
    def url(self) -> str:
        """How clients reach it, and the URI its Pending attestations carry (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pending(self) -> list[bytes]:
        """The commitments not yet mined, in the order they were made."""
        with self._lock:
            return list(self._pending)

    @property
    def mined(self) -> list[bytes]:
        """The commitments mined so far."""
        with self._lock:
            return list(self._mined)

    # -- the calendar ----------------------------------------------------------------------

    def commit(self, digest: bytes, *, padded: bool = False) -> tuple[bytes, bytes]:
        """The reply tree for `digest` and the commitment it leads to, recorded as pending.

        `padded` puts three 4000-byte appends first (each followed by sha256, so every message
        stays within the 4096-byte limit): a well-formed tree over 10000 bytes.
        """
        chain = Chain(digest)
        if padded:
            for _ in range(3):
                chain.append(secrets.token_bytes(4000)).sha256()
        chain.append(secrets.token_bytes(16)).sha256()  # the aggregator's nonce
        now = struct.pack(">L", int(time.time()))
        tag = hmac.new(self._hmac_key, chain.message + now, hashlib.sha256).digest()[:8]
        chain.prepend(now).append(tag)
        commitment = chain.message
        with self._lock:
            self._pending[commitment] = None
        return chain.pending(self.url), commitment

    def broadcast(self) -> list[str]:
        """Put every pending commitment in a transaction (not yet in a block); their txids."""
        with self._lock:
            for commitment, existing in self._pending.items():
                if existing is None:
                    tx = self._pending[commitment] = FakeTx.make()
                    leaf = hashlib.sha256(commitment).digest()
                    self._txids[commitment] = tx.txid(leaf)[::-1].hex()
            return [self._txids[commitment] for commitment in self._pending]

    def mine(self) -> int | None:
        """Confirm every pending commitment in one new block; its height (None: nothing to do)."""
        self.broadcast()
        with self._lock:
            batch = {c: tx for c, tx in self._pending.items() if tx is not None}
            if not batch:
                return None
            decoy_commitment, decoy_tx = secrets.token_bytes(44), FakeTx.make()
            entries = [(decoy_commitment, decoy_tx), *batch.items()]
            txids = [sha256d(coinbase(self.bitcoind.height + 1))]
            txids += [tx.txid(hashlib.sha256(c).digest()) for c, tx in entries]
            levels = merkle_levels(txids)
            root = levels[-1][0]
            height = self.bitcoind.add_block(root)
            decoy = block_path(decoy_commitment, decoy_tx, 1, levels)
            assert decoy.message == root
            for index, (commitment, tx) in enumerate(entries[1:], start=2):
                path = block_path(commitment, tx, index, levels)
                assert path.message == root
                self._mined[commitment] = _Mined(path.bitcoin(height), decoy.bitcoin(height))
                del self._pending[commitment]
            return height

    def _submit(self, digest: bytes) -> _Reply:
        with self._lock:
            self.digests.append(digest)
        mode = self.mode
        if mode == "wrong_commitment":
            tree, _ = self.commit(secrets.token_bytes(len(digest) or 32))
        else:
            tree, _ = self.commit(digest, padded=mode == "oversized")
        return _Reply(200, "application/octet-stream", tree)

    def _lookup(self, text: str) -> _Reply:
        if not _HEX.fullmatch(text):
            return _Reply(400, "text/plain", BAD_HEX_BODY)
        commitment = bytes.fromhex(text)
        mode = self.mode
        with self._lock:
            mined = self._mined.get(commitment)
            pending = commitment in self._pending
            txid = self._txids.get(commitment)
        if mined is not None:
            tree = mined.decoy if mode == "wrong_commitment" else mined.tree
            if mode == "oversized":
                tree = tree + bytes(CLIENT_READ_LIMIT)
            return _Reply(200, "application/octet-stream", tree, "public, max-age=31536000")
        if mode == "oversized":
            return _Reply(200, "application/octet-stream", bytes(CLIENT_READ_LIMIT + 1))
        if pending and txid is not None:
            body = f"Timestamped by transaction {txid}; waiting for 6 confirmations".encode()
            return _Reply(404, "text/plain", body, "public, max-age=60")
        if pending:
            return _Reply(404, "text/plain", PENDING_BODY, "public, max-age=60")
        return _Reply(404, "text/plain", NOT_FOUND_BODY, "public, max-age=60")

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    # -- serving ---------------------------------------------------------------------------

    def _make_server(self) -> _Server:
        return _Server(self)
