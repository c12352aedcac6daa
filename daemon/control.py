"""The control socket: one JSON request and one JSON reply per line over a Unix socket (DESIGN §8).

The server side runs in the daemon's asyncio loop; the client side is what the CLI uses.
Requests are ``{"command": NAME, ...}``; replies are ``{"ok": true, ...}`` or
``{"ok": false, "error": {"error_class": ..., "message": ...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from stampd.store.errors import StampdError

#: A request line longer than this is refused (a client cannot make the daemon buffer forever).
MAX_REQUEST_BYTES = 64 * 1024
#: A client that does not finish its request line within this many seconds is dropped.
REQUEST_TIMEOUT_S = 5.0
#: Socket mode: owner and group (``stampd``) may connect, nobody else (DESIGN §8).
SOCKET_MODE = 0o660

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class DaemonUnreachableError(StampdError):
    """The CLI could not talk to the daemon over its control socket."""

    error_class = "daemon_unreachable"


class ControlRequestError(StampdError):
    """A control request was malformed or named an unknown command."""

    error_class = "bad_request"


class ControlServer:
    """Serves control requests on a Unix socket by dispatching to named async handlers."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket (replacing a stale one left by a crash) and start serving."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve_client, path=str(self.path), limit=MAX_REQUEST_BYTES
        )
        self.path.chmod(SOCKET_MODE)

    async def close(self) -> None:
        """Stop accepting, and remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            reply = await self._reply_to(reader)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _reply_to(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            request = await self._read_request(reader)
            handler = self.handlers.get(request["command"])
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                raise ControlRequestError(
                    f"unknown command {request['command']!r} (known: {known})"
                )
            return {"ok": True, **await handler(request)}
        except StampdError as error:
            return {"ok": False, "error": error.to_dict()}

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
        except TimeoutError:
            raise ControlRequestError("request timed out") from None
        except ValueError:  # asyncio raises it when the line exceeds the stream limit
            raise ControlRequestError(f"request larger than {MAX_REQUEST_BYTES} bytes") from None
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ControlRequestError("request is not one line of JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            raise ControlRequestError('request needs a "command" string')
        return request


def request(socket_path: Path, payload: Mapping[str, Any], *, timeout: float = 5.0) -> Any:
    """Send one request to the daemon and return its reply (blocking; for the CLI).

    Raises :class:`DaemonUnreachableError` when nothing listens at ``socket_path``.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError as error:
        raise DaemonUnreachableError(
            f"the daemon is not running (no control socket at {socket_path})",
            hint="start it with `systemctl start stampd` or `stampd run`",
        ) from error
    except OSError as error:
        raise DaemonUnreachableError(
            f"cannot reach the daemon at {socket_path}: {error.strerror or error}",
            hint="check that it runs and that you are in the stampd group",
        ) from error
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise DaemonUnreachableError(
            f"the daemon at {socket_path} sent an unreadable reply"
        ) from error
