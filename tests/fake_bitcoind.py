"""A fake bitcoind JSON-RPC server on 127.0.0.1 for tests (reference opentimestamps.md §5, §6).

`FakeBitcoind` holds a chain of made-up 80-byte block headers and answers the three calls a
header source needs, the way bitcoind does:

- `getblockcount` → the tip height (an int);
- `getblockhash [h]` → the block hash in display order (byte-reversed double SHA-256 of the
  header); an unknown height is error -8 "Block height out of range";
- `getblockheader [hash, false]` → the raw header as hex (`[hash]` / `[hash, true]`: the
  verbose object); an unknown hash is error -5 "Block not found".

Requests are JSON-RPC 1.x over `POST /` (`{"version": "1.1", "method", "params", "id"}`), replies
`{"result", "error", "id"}`. Like bitcoind (src/httprpc.cpp), an RPC error comes back as HTTP 500
with the JSON body (404 for an unknown method), and a request without valid Basic credentials is
a 401 with an empty body. Authentication, by constructor argument:

- default: any Basic credentials are accepted (so `http://u:p@127.0.0.1:PORT/` works);
- `credentials=("user", "password")`: exactly those (rpcuser / rpcpassword);
- `cookie_dir=DIR`: writes `DIR/.cookie` as bitcoind does (`__cookie__:<64 hex>`) and accepts
  only that; `restart()` writes a new cookie, as a restarted node does.

Misbehaviour on demand through `.mode` (any of `MODES`, changeable while serving), for the
header client's tests: `wrong_header` (a header that does not hash to the block hash asked for),
`short_header` (79 bytes), `warmup` (every call is error -28, as while the node loads its
block index), `garbage` (a 200 that is not JSON), `oversized` (a valid-looking reply
over 1 MiB), `status_503` (a proxy's error page), `slow` (sleeps `slow_seconds` before answering),
`dead` (closes the connection without a reply).

The chain starts at a mainnet-like height (900000 by default, reference §6) with one block;
`add_block(merkle_root, time)` appends a header whose prev-hash links to the tip and whose nonce
meets its (regtest-easy) `bits` target, and returns the new height. It is usable without serving
(the fake calendar mines into it). This module does not import stampd: it is an independent
check of daemon/evidence/bitcoind.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal, get_args

from tests.loopback_peer import LoopbackPeer

Mode = Literal[
    "ok",
    "wrong_header",
    "short_header",
    "garbage",
    "oversized",
    "status_503",
    "warmup",
    "slow",
    "dead",
]
MODES: frozenset[str] = frozenset(get_args(Mode))
#: The regtest target (compact form): about every second nonce meets it, so grinding is instant.
REGTEST_BITS = 0x207FFFFF
MAX_REQUEST = 64 * 1024


def sha256d(data: bytes) -> bytes:
    """Bitcoin's double SHA-256, in internal byte order."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def target(bits: int) -> int:
    """The proof-of-work target of a compact `nBits` value (Bitcoin's SetCompact)."""
    exponent, mantissa = bits >> 24, bits & 0x007FFFFF
    return mantissa << (8 * (exponent - 3))


@dataclass(frozen=True)
class Header:
    """One block header, fields as serialized (hashes in internal byte order)."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        """The 80-byte header: little-endian integers, hashes in internal order."""
        return (
            struct.pack("<i", self.version)
            + self.prev_hash
            + self.merkle_root
            + struct.pack("<III", self.time, self.bits, self.nonce)
        )

    @property
    def hash(self) -> str:
        """The block hash as bitcoind prints it: display order (byte-reversed) hex."""
        return sha256d(self.serialize())[::-1].hex()


def mine_header(prev_hash: bytes, merkle_root: bytes, when: int, bits: int) -> Header:
    """A header over `merkle_root` whose nonce meets the `bits` target."""
    limit = target(bits)
    nonce = 0
    while True:
        header = Header(0x20000000, prev_hash, merkle_root, when, bits, nonce)
        if int.from_bytes(sha256d(header.serialize()), "little") <= limit:
            return header
        nonce += 1


class _Handler(BaseHTTPRequestHandler):
    """One JSON-RPC POST per connection (HTTP/1.0), answered by the owning FakeBitcoind."""

    server: _Server

    def do_POST(self) -> None:
        owner = self.server.owner
        owner._count()
        mode = owner.mode
        if mode == "dead":
            self._abort()
            return
        if mode == "slow":
            owner._stopping.wait(owner.slow_seconds)
        if not owner._authorized(self.headers.get("Authorization")):
            self._send(401, "", b"", {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, "text/plain", b"Content-Length required\n")
            return
        if length > MAX_REQUEST:
            self._send(413, "text/plain", b"request too large\n")
            return
        body = self.rfile.read(length)
        if mode == "status_503":
            self._send(503, "text/html", b"<html><body>503 Service Unavailable</body></html>\n")
            return
        if mode == "garbage":
            self._send(200, "application/json", b"\x00" + secrets.token_bytes(63))
            return
        status, reply = owner._dispatch(body)
        self._send(status, "application/json", json.dumps(reply).encode() + b"\n")

    def _abort(self) -> None:
        """Close at once with a reset, no status line: what a dying node looks like."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(
        self, status: int, content_type: str, body: bytes, headers: Mapping[str, str] = {}
    ) -> None:
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, size cap): not the server's problem

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the per-request stderr line; `.calls` is what tests look at."""


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: FakeBitcoind) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeBitcoind(LoopbackPeer):
    """A chain of fake headers behind a bitcoind-style JSON-RPC endpoint (see module doc)."""

    def __init__(
        self,
        *,
        start_height: int = 900000,
        credentials: tuple[str, str] | None = None,
        cookie_dir: Path | None = None,
        mode: Mode = "ok",
        slow_seconds: float = 30.0,
    ) -> None:
        self._lock = threading.Lock()
        super().__init__()
        self.mode = mode
        self.slow_seconds = slow_seconds
        self.credentials = credentials
        self.cookie_dir = cookie_dir
        self._cookie: str | None = None
        if cookie_dir is not None:
            self.restart()
        #: Requests received (every POST, whatever became of it).
        self.requests = 0
        #: The methods of the well-formed calls, in order.
        self.calls: list[str] = []
        self.start_height = start_height
        genesis = mine_header(
            secrets.token_bytes(32), secrets.token_bytes(32), 1_700_000_000, REGTEST_BITS
        )
        self._headers: list[Header] = [genesis]

    @property
    def mode(self) -> str:
        """How the next request is answered; one of `MODES`."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown FakeBitcoind mode {value!r}")
        self._mode = value  # a single reference store: atomic for the handler threads

    # -- the chain -------------------------------------------------------------------------

    @property
    def height(self) -> int:
        """The tip's height."""
        with self._lock:
            return self.start_height + len(self._headers) - 1

    def header(self, height: int) -> Header:
        """The header at `height` (KeyError when the chain has none there)."""
        with self._lock:
            index = height - self.start_height
            if not 0 <= index < len(self._headers):
                raise KeyError(height)
            return self._headers[index]

    def add_block(self, merkle_root: bytes, when: int | None = None) -> int:
        """Append a block over `merkle_root` (32 bytes, internal order); its height."""
        if len(merkle_root) != 32:
            raise ValueError("a merkle root is 32 bytes")
        with self._lock:
            tip = self._headers[-1]
            stamp = int(time.time()) if when is None else when
            header = mine_header(sha256d(tip.serialize()), merkle_root, stamp, REGTEST_BITS)
            self._headers.append(header)
            return self.start_height + len(self._headers) - 1

    # -- authentication --------------------------------------------------------------------

    @property
    def cookie_file(self) -> Path:
        """Where the cookie is (cookie mode only)."""
        if self.cookie_dir is None:
            raise RuntimeError("FakeBitcoind was not started in cookie mode")
        return self.cookie_dir / ".cookie"

    def restart(self) -> None:
        """Write a new `.cookie` (bitcoind makes one per start); the old one stops working."""
        cookie = f"__cookie__:{secrets.token_hex(32)}"
        self.cookie_file.write_text(cookie)
        with self._lock:
            self._cookie = cookie

    def _authorized(self, header: str | None) -> bool:
        if header is None or not header.startswith("Basic "):
            return False
        try:
            pair = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        with self._lock:
            cookie = self._cookie
        if cookie is not None:
            return secrets.compare_digest(pair, cookie)
        if self.credentials is not None:
            return secrets.compare_digest(pair, ":".join(self.credentials))
        return ":" in pair

    # -- JSON-RPC --------------------------------------------------------------------------

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _dispatch(self, body: bytes) -> tuple[int, dict[str, object]]:
        try:
            request = json.loads(body)
            method = request["method"]
            params = request.get("params") or []
            call_id = request.get("id")
            if not isinstance(method, str) or not isinstance(params, list):
                raise TypeError(method)
        except (ValueError, TypeError, KeyError, AttributeError):
            return 500, {"result": None, "error": _error(-32700, "Parse error"), "id": None}
        with self._lock:
            self.calls.append(method)
        if self.mode == "warmup":
            error = _error(-28, "Loading block index…")
            return 500, {"result": None, "error": error, "id": call_id}
        handler = {
            "getblockcount": self._getblockcount,
            "getblockhash": self._getblockhash,
            "getblockheader": self._getblockheader,
        }.get(method)
        if handler is None:
            return 404, {"result": None, "error": _error(-32601, "Method not found"), "id": call_id}
        try:
            result = handler(params)
        except _RpcError as error:
            return 500, {"result": None, "error": _error(error.code, error.message), "id": call_id}
        return 200, {"result": result, "error": None, "id": call_id}

    def _getblockcount(self, params: list[object]) -> object:
        return self.height

    def _getblockhash(self, params: list[object]) -> object:
        if len(params) != 1 or not isinstance(params[0], int) or isinstance(params[0], bool):
            raise _RpcError(-1, "getblockhash height")
        try:
            return self.header(params[0]).hash
        except KeyError:
            raise _RpcError(-8, "Block height out of range") from None

    def _getblockheader(self, params: list[object]) -> object:
        if not params or not isinstance(params[0], str):
            raise _RpcError(-1, 'getblockheader "blockhash" ( verbose )')
        verbose = params[1] if len(params) > 1 else True
        found = self._find(params[0].lower())
        if found is None:
            raise _RpcError(-5, "Block not found")
        height, header = found
        raw = header.serialize()
        mode = self.mode
        if mode == "wrong_header":
            raw = raw[:-1] + bytes([raw[-1] ^ 1])
        elif mode == "short_header":
            raw = raw[:-1]
        elif mode == "oversized":
            raw = raw * (1 << 14)
        if not verbose:
            return raw.hex()
        return {
            "hash": header.hash,
            "confirmations": self.height - height + 1,
            "height": height,
            "version": header.version,
            "merkleroot": header.merkle_root[::-1].hex(),
            "time": header.time,
            "nonce": header.nonce,
            "bits": f"{header.bits:08x}",
            "previousblockhash": header.prev_hash[::-1].hex(),
        }

    def _find(self, block_hash: str) -> tuple[int, Header] | None:
        with self._lock:
            for index, header in enumerate(self._headers):
                if header.hash == block_hash:
                    return self.start_height + index, header
        return None

    # -- serving ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The RPC endpoint without credentials: `http://127.0.0.1:PORT/`."""
        return f"http://127.0.0.1:{self.port}/"

    def url_with(self, user: str = "u", password: str = "p") -> str:
        """The endpoint with credentials in it, as `ots --bitcoin-node` takes it."""
        return self.url.replace("http://", f"http://{user}:{password}@", 1)

    def _make_server(self) -> _Server:
        return _Server(self)


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(code: int, message: str) -> dict[str, object]:
    return {"code": code, "message": message}
