"""Bitcoin block headers from a bitcoind node over JSON-RPC (reference opentimestamps.md §5).

`stampd verify` checks each `BitcoinBlockHeaderAttestation` of an `.ots` proof against the
80-byte header at its height. The preferred header source is the operator's own node (a pruned
node keeps every header): `getblockhash h`, then `getblockheader <hash> false` (the raw header
as hex). The answer is checked before it is used: 80 bytes, and its double SHA-256 in display
order is the hash the node named, so a confused proxy or node cannot hand over another block.

`BitcoindHeaders` is synchronous (`stampd verify` is) and is itself the callable the pure
verifier takes: ``headers(height) -> bytes | None``, None when the node has no block at that
height (bitcoind's RPC error -8). Every other failure is a :class:`BitcoindError` with the
stable ``error_class`` of the attempt catalogue (DESIGN §6) and a message naming the node's URL
(never its credentials) and what to do.

Authentication (bitcoind's `-rpccookiefile` / `-rpcauth`): the cookie file, `__cookie__:<hex>`,
read at every call because bitcoind writes a new one each time it starts; or a username and a
password (read from its `secret_file` by the configuration, DESIGN rule 7).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from stampd.store.errors import ErrorClass, StampdError

#: A header is 80 bytes (160 hex digits); no reply of the three calls comes near this.
MAX_REPLY_BYTES = 64 * 1024
HEADER_SIZE = 80
#: bitcoind's RPC error codes (src/rpc/protocol.h): RPC_INVALID_PARAMETER, used by getblockhash
#: for "Block height out of range"; RPC_INVALID_ADDRESS_OR_KEY, "Block not found"; and
#: RPC_IN_WARMUP while the node is still loading its block index.
RPC_INVALID_PARAMETER = -8
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_IN_WARMUP = -28
_BLOCK_HASH = re.compile(r"[0-9a-f]{64}")
_RUNNING = "is bitcoind running with server=1, and is this its RPC port (rpcport, rpcbind)?"
_COOKIE_HINT = (
    "is bitcoind running, and is the cookie file readable by the stampd user"
    " (bitcoind -rpccookieperms=group, stampd in that group)?"
)


class BitcoindError(StampdError):
    """The node could not give a header; ``error_class`` says how it failed."""

    error_class: ErrorClass

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.error_class = error_class
        self.http_status = http_status


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


class BitcoindHeaders:
    """Block headers by height from one bitcoind node; call it: ``headers(height)``."""

    def __init__(
        self,
        url: str,
        *,
        cookie_file: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BitcoindError(
                ErrorClass.CONFIG,
                f"the bitcoind URL {url!r} is not an http:// or https:// URL",
                hint='set anchor.bitcoin.url to the node\'s RPC address, e.g. "http://127.0.0.1:8332/"',
            )
        if parts.username is not None or parts.password is not None:
            # DESIGN rule 7: secrets live in files, never in a URL that ends up in logs.
            raise BitcoindError(
                ErrorClass.CONFIG,
                "the bitcoind URL holds credentials",
                hint="remove them from anchor.bitcoin.url and set cookie_file, or username"
                " and secret_file",
            )
        if (cookie_file is None) == (username is None or password is None):
            raise BitcoindError(
                ErrorClass.CONFIG,
                f"bitcoind at {url}: give either a cookie file or a username and a password",
                hint="set anchor.bitcoin.cookie_file, or anchor.bitcoin.username and secret_file",
            )
        self.url = urlunsplit(parts)
        self._cookie_file = cookie_file
        self._username = username
        self._password = password
        self._timeout = timeout
        self._ids = itertools.count(1)
        # trust_env=False: an HTTP(S)_PROXY meant for the internet must not receive the
        # node's credentials, and the node is normally on this machine.
        self._client = httpx.Client(trust_env=False, timeout=timeout)

    def __call__(self, height: int) -> bytes | None:
        """The 80-byte header at `height`; None when the node has no block there."""
        if height < 0:
            return None
        block_hash = self._call("getblockhash", [height], missing=RPC_INVALID_PARAMETER)
        if block_hash is None:
            return None
        if not isinstance(block_hash, str) or not _BLOCK_HASH.fullmatch(block_hash.lower()):
            raise self._parse_error(f"getblockhash {height} answered {block_hash!r}, not a hash")
        block_hash = block_hash.lower()
        raw = self._call("getblockheader", [block_hash, False], missing=RPC_INVALID_ADDRESS_OR_KEY)
        if raw is None:
            return None  # the block went away between the calls (a reorganisation)
        try:
            header = bytes.fromhex(raw) if isinstance(raw, str) else b""
        except ValueError:
            header = b""
        if len(header) != HEADER_SIZE:
            raise self._parse_error(
                f"getblockheader {block_hash} did not answer an {HEADER_SIZE}-byte header"
            )
        # The header must be the block the node named: its hash is the double SHA-256 of
        # the 80 bytes, printed byte-reversed (display order).
        if _sha256d(header)[::-1].hex() != block_hash:
            raise BitcoindError(
                ErrorClass.VERIFY,
                f"bitcoind at {self.url} answered a header for block {block_hash} (height"
                f" {height}) that does not hash to it",
                hint="check that anchor.bitcoin.url points at bitcoind itself, not a proxy"
                " or another service",
            )
        return header

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- one call ------------------------------------------------------------------------

    def _call(self, method: str, params: list[object], *, missing: int) -> object | None:
        """The result of one JSON-RPC call; None for the error code `missing`."""
        request = {"version": "1.1", "method": method, "params": params, "id": next(self._ids)}
        headers = {"Authorization": self._authorization(), "Content-Type": "application/json"}
        deadline = time.monotonic() + self._timeout
        try:
            with self._client.stream(
                "POST", self.url, content=json.dumps(request).encode(), headers=headers
            ) as response:
                status = response.status_code
                if status in (401, 403):
                    raise self._auth_error(status)
                body = self._read_capped(response, deadline)
        except httpx.TimeoutException as error:
            raise BitcoindError(
                ErrorClass.TIMEOUT,
                f"bitcoind at {self.url} did not answer {method} within {self._timeout:g} s",
                hint="is the node busy (initial sync, reindex)? raise anchor.bitcoin.timeout",
            ) from error
        except httpx.TransportError as error:
            raise BitcoindError(
                ErrorClass.NETWORK,
                f"cannot reach bitcoind at {self.url}: {type(error).__name__}: {error}",
                hint=_RUNNING,
            ) from error
        return self._result(method, status, body, missing)

    def _result(self, method: str, status: int, body: bytes, missing: int) -> object | None:
        # bitcoind answers an RPC error to a JSON-RPC 1.x request with HTTP 500 (404 for an
        # unknown method) and the error in the JSON body (src/httprpc.cpp), so the body is
        # read whatever the status; anything that is not such a body is the status's fault.
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or "result" not in reply or "error" not in reply:
            if status != 200:
                raise BitcoindError(
                    ErrorClass.HTTP_STATUS,
                    f"bitcoind at {self.url} answered {method} with HTTP {status}",
                    hint=_RUNNING,
                    http_status=status,
                )
            raise self._parse_error(f"the reply to {method} is not a JSON-RPC reply")
        error: object = reply["error"]
        if error is None:
            result: object = reply["result"]
            return result
        code = error.get("code") if isinstance(error, dict) else None
        text = error.get("message") if isinstance(error, dict) else None
        if code == missing:
            return None
        hint = "try again once it has started" if code == RPC_IN_WARMUP else _RUNNING
        raise BitcoindError(
            ErrorClass.REJECTED,
            f"bitcoind at {self.url} refused {method}: error {code}: {text}",
            hint=hint,
            http_status=status,
        )

    def _read_capped(self, response: httpx.Response, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
            raise self._parse_error(
                f"the reply is {declared} bytes, over the {MAX_REPLY_BYTES}-byte cap"
            )
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_REPLY_BYTES:
                raise self._parse_error(f"the reply exceeds the {MAX_REPLY_BYTES}-byte cap")
            if time.monotonic() > deadline:  # a trickling server must not hold verify forever
                raise httpx.ReadTimeout("the reply did not finish in time")
        return bytes(body)

    # -- credentials ---------------------------------------------------------------------

    def _authorization(self) -> str:
        if self._cookie_file is not None:
            pair = self._read_cookie(self._cookie_file)
        else:
            pair = f"{self._username}:{self._password}"
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    def _read_cookie(self, path: Path) -> str:
        """`user:password` from bitcoind's cookie file, read now: a restarted node has a new one."""
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not text"
            raise BitcoindError(
                ErrorClass.AUTH,
                f"cannot read the cookie file {path} of bitcoind at {self.url}: {reason}",
                hint=_COOKIE_HINT,
            ) from error
        if ":" not in text:
            raise BitcoindError(
                ErrorClass.AUTH,
                f"the cookie file {path} is not bitcoind's `__cookie__:password` format",
                hint="point anchor.bitcoin.cookie_file at the .cookie in bitcoind's data directory",
            )
        return text

    def _auth_error(self, status: int) -> BitcoindError:
        if self._cookie_file is not None:
            hint = (
                f"the cookie in {self._cookie_file} is not the running node's: is"
                " anchor.bitcoin.cookie_file the .cookie of this node (its datadir and network)?"
            )
        else:
            hint = "check anchor.bitcoin.username and secret_file against the node's rpcauth"
        if status == 403:
            hint = "the node refuses this address: allow it with rpcallowip in bitcoin.conf"
        return BitcoindError(
            ErrorClass.AUTH,
            f"bitcoind at {self.url} refused our credentials (HTTP {status})",
            hint=hint,
            http_status=status,
        )

    def _parse_error(self, message: str) -> BitcoindError:
        return BitcoindError(
            ErrorClass.PARSE,
            f"bitcoind at {self.url}: {message}",
            hint="check that anchor.bitcoin.url points at bitcoind's RPC port",
        )
