"""The control socket's client side: what the CLI uses to ask the daemon (DESIGN §8).

One JSON request line out, one JSON reply line back, over the Unix socket the daemon's
:mod:`.control` server listens on. Blocking and standard library only: ``stampd status`` and
every command that asks the daemon load this module, not the server's asyncio and logging,
so their start-up stays short (DESIGN §11, CLI start ≤ 100 ms over ``python -c pass``).
"""

from __future__ import annotations

import _socket
import contextlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stampd.store.errors import ErrorClass, StampdError

#: The client reads at most this much of a reply (a confused peer cannot make the CLI buffer
#: forever).
MAX_REPLY_BYTES = 16 * 1024 * 1024


class DaemonUnreachableError(StampdError):
    """The CLI could not talk to the daemon over its control socket."""

    error_class = ErrorClass.DAEMON_UNREACHABLE


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _connect(sock: _socket.socket, path: Path, deadline: float) -> None:
    while True:
        sock.settimeout(_remaining(deadline))
        try:
            sock.connect(str(path))
        except BlockingIOError:
            # EAGAIN: the daemon's listen backlog is full (it is busy), not gone; try again.
            time.sleep(min(0.01, _remaining(deadline)))
        else:
            return


def _send_request(sock: _socket.socket, data: bytes, deadline: float) -> None:
    sock.settimeout(_remaining(deadline))
    # The daemon may answer early and close (a refused peer, an oversized request): the
    # reply is then already waiting to be read, whatever happened to the rest of the request.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def _read_reply(sock: _socket.socket, socket_path: Path, deadline: float) -> bytes:
    data = bytearray()
    while True:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\n" in chunk:
            break
        if len(data) > MAX_REPLY_BYTES:
            break
    line = bytes(data).split(b"\n", 1)[0]
    if len(line) > MAX_REPLY_BYTES:
        raise DaemonUnreachableError(
            f"the daemon at {socket_path} sent a reply larger than "
            f"{MAX_REPLY_BYTES // (1024 * 1024)} MiB",
            hint="is something other than stampd listening there?",
        )
    return line


def request(socket_path: Path, payload: Mapping[str, Any], *, timeout: float = 5.0) -> Any:
    """Send one request to the daemon and return its reply (blocking; for the CLI).

    Raises :class:`DaemonUnreachableError` when nothing listens at ``socket_path``, when the
    daemon does not answer within ``timeout`` seconds, or when its reply is unreadable.
    """
    deadline = time.monotonic() + timeout
    try:
        # The C module itself: `socket` builds its IntEnums of every constant at import
        # (~4 ms of each `stampd status`), for a client that needs one AF_UNIX stream.
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            _connect(sock, socket_path, deadline)
            _send_request(sock, json.dumps(payload).encode() + b"\n", deadline)
            line = _read_reply(sock, socket_path, deadline)
        finally:
            sock.close()
    except FileNotFoundError as error:
        raise DaemonUnreachableError(
            f"the daemon is not running (no control socket at {socket_path})",
            hint="start it with `systemctl start stampd` or `stampd run`",
        ) from error
    except ConnectionRefusedError as error:
        raise DaemonUnreachableError(
            f"the daemon is not running (stale control socket at {socket_path})",
            hint="start it with `systemctl start stampd` or `stampd run`",
        ) from error
    except PermissionError as error:
        raise DaemonUnreachableError(
            f"permission denied on the control socket at {socket_path}",
            hint="add your user to the socket's group (stampd) or run as root",
        ) from error
    except TimeoutError as error:
        raise DaemonUnreachableError(
            f"the daemon at {socket_path} did not answer within {timeout:g} s",
            hint="it may be overloaded or stuck: see `systemctl status stampd` and its log",
        ) from error
    except OSError as error:
        raise DaemonUnreachableError(
            f"cannot reach the daemon at {socket_path}: {error.strerror or error}",
            hint="check that it runs and that you are in the stampd group",
        ) from error
    if not line:
        raise DaemonUnreachableError(
            f"the daemon at {socket_path} closed the connection without answering",
            hint="the daemon's log may say why",
        )
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DaemonUnreachableError(
            f"the daemon at {socket_path} sent an unreadable reply"
        ) from error
