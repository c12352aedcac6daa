"""The control socket: one JSON request and one JSON reply per line over a Unix socket (DESIGN §8).

The server side runs in the daemon's asyncio loop; the client side, what the CLI uses, is
:mod:`.control_client` (re-exported here), which needs neither asyncio nor logging.
Requests are ``{"command": NAME, ...}``; replies are ``{"ok": true, ...}`` or
``{"ok": false, "error": {"error_class": ..., "message": ...}}``.

Two lines of defence keep other users out. The socket file's mode (``0660``, group ``stampd``)
stops them at ``connect()``; behind it, every peer's credentials (``SO_PEERCRED``, and the
supplementary groups from ``SO_PEERGROUPS``) are checked before a byte of its request is read,
so a socket left ``0666`` by mistake still answers strangers with ``forbidden`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import grp
import json
import os
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# The client side, re-exported (`X as X`, PEP 484): callers keep `control.request`.
from stampd.daemon.service.control_client import (
    DaemonUnreachableError as DaemonUnreachableError,  # noqa: PLC0414
)
from stampd.daemon.service.control_client import request as request  # noqa: PLC0414
from stampd.daemon.service.logs import get_logger
from stampd.store.errors import ErrorClass, StampdError

log = get_logger("stampd.daemon.service.control")

#: A request line longer than this is refused (a client cannot make the daemon buffer forever).
MAX_REQUEST_BYTES = 64 * 1024
#: A client that does not finish its request line (or read its reply) within this many seconds
#: is dropped.
REQUEST_TIMEOUT_S = 5.0
#: Socket mode: owner and group (``stampd``) may connect, nobody else (DESIGN §8).
SOCKET_MODE = 0o660

#: A command's handler: the request in, the reply (without ``ok``) out; a typed reply of
#: daemon/service/replies.py is a Mapping like any other.
Handler = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, object]]]

# socket(7): SO_PEERGROUPS exists since Linux 4.13; CPython does not define the constant.
_SO_PEERGROUPS: int = getattr(socket, "SO_PEERGROUPS", 59)
# CPython's socket.getsockopt refuses a buflen above 1024 bytes, i.e. 256 groups.
_GETSOCKOPT_MAX = 1024
# unix(7): struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_UCRED = struct.Struct("iII")
_GID = struct.Struct("I")
# A command is named in an error only when it looks like one (a request may carry secrets).
_COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}", re.ASCII)


class ControlRequestError(StampdError):
    """A control request was malformed, too large, too slow, or named an unknown command."""

    error_class = ErrorClass.BAD_REQUEST


class ControlForbiddenError(StampdError):
    """The peer's uid and groups do not allow it to use the control socket."""

    error_class = ErrorClass.FORBIDDEN


class ControlInternalError(StampdError):
    """A handler failed with an unexpected exception (the details are in the daemon's log)."""

    error_class = ErrorClass.INTERNAL


@dataclass(frozen=True)
class Peer:
    """The credentials the kernel recorded for a peer when it called ``connect()``."""

    pid: int
    uid: int
    gid: int


class _SockOpts(Protocol):
    """What the peer check needs of a socket (``socket.socket`` or asyncio's TransportSocket)."""

    def fileno(self) -> int: ...

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


def peer_credentials(sock: _SockOpts) -> Peer:
    """The peer's pid, uid and primary gid (``SO_PEERCRED``)."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return Peer(pid=pid, uid=uid, gid=gid)


def peer_groups(sock: _SockOpts) -> frozenset[int] | None:
    """The peer's supplementary groups (``SO_PEERGROUPS``), or None when the kernel cannot tell."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, _GETSOCKOPT_MAX)
    except OSError as error:
        if error.errno != errno.ERANGE:
            return None  # ENOPROTOOPT before Linux 4.13, ENODATA without credentials
        large = _peer_groups_beyond_cpython(sock.fileno())
        if large is None:
            return None
        raw = large
    usable = len(raw) - len(raw) % _GID.size
    return frozenset(gid for (gid,) in _GID.iter_unpack(raw[:usable]))


@functools.cache
def _libc_getsockopt() -> Any:
    getsockopt = ctypes.CDLL(None, use_errno=True).getsockopt
    getsockopt.argtypes = (
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint32),  # socklen_t
    )
    getsockopt.restype = ctypes.c_int
    return getsockopt


def _peer_groups_beyond_cpython(fd: int) -> bytes | None:
    """``SO_PEERGROUPS`` through libc, for a peer in more groups than CPython's buffer holds."""
    try:
        getsockopt = _libc_getsockopt()
    except (OSError, AttributeError):
        return None
    size = 4 * _GETSOCKOPT_MAX
    for _ in range(3):
        buffer = ctypes.create_string_buffer(size)
        length = ctypes.c_uint32(size)
        if getsockopt(fd, socket.SOL_SOCKET, _SO_PEERGROUPS, buffer, ctypes.byref(length)) == 0:
            return buffer.raw[: length.value]
        if ctypes.get_errno() != errno.ERANGE:
            return None
        # On ERANGE the kernel writes the length it needs into optlen.
        size = max(int(length.value), 2 * size)
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _encode(reply: Mapping[str, Any]) -> bytes:
    return json.dumps(reply).encode() + b"\n"


def _error_reply(error: StampdError) -> bytes:
    return _encode({"ok": False, "error": error.to_dict()})


class ControlSocketInUseError(StampdError):
    """A live daemon already serves the control socket this one was told to bind."""

    error_class = ErrorClass.CONTROL_SOCKET_IN_USE


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False  # ECONNREFUSED: a socket file left behind by a crash
    return True


class ControlServer:
    """Serves control requests on a Unix socket by dispatching to named async handlers.

    Each connection carries one request and gets one reply; connections are served
    concurrently and independently. A peer is allowed when its uid is 0, the daemon's, or
    in ``allowed_uids``, or when it belongs to the socket file's group (primary or
    supplementary). ``request_timeout`` bounds reading a request and writing its reply.
    """

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        *,
        allowed_uids: Iterable[int] = (),
        request_timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self.allowed_uids = frozenset(allowed_uids)
        self.request_timeout = request_timeout
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        # (st_dev, st_ino, st_gid) of the socket file this server bound.
        self._bound: tuple[int, int, int] | None = None

    async def start(self) -> None:
        """Bind the socket (replacing a stale one left by a crash) and start serving.

        Raises :class:`ControlSocketInUseError` when another daemon still answers there:
        taking its socket over would leave two daemons writing one index.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                if _listening(self.path):
                    raise ControlSocketInUseError(
                        f"daemon.control_socket: another daemon is listening at {self.path}",
                        hint="stop it first (`systemctl stop stampd`), or give this one its own"
                        " control_socket and state_dir",
                    )
                self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve_client,
            path=str(self.path),
            limit=MAX_REQUEST_BYTES,
            backlog=socket.SOMAXCONN,
        )
        self.path.chmod(SOCKET_MODE)
        bound = self.path.lstat()
        self._bound = (bound.st_dev, bound.st_ino, bound.st_gid)

    async def close(self) -> None:
        """Stop accepting, drop the connections still open, and remove the socket file."""
        if self._server is not None:
            self._server.close()
            # Before wait_closed: from Python 3.12 on it waits for every connection to end.
            clients = list(self._clients)
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self._is_ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._bound = None

    def _is_ours(self) -> bool:
        """True while the socket path is still the file this server bound (or was never bound)."""
        if self._bound is None:
            return True
        try:
            current = self.path.lstat()
        except FileNotFoundError:
            return False
        return (current.st_dev, current.st_ino) == self._bound[:2]

    def _socket_gid(self) -> int | None:
        """The socket file's group now (a ``chgrp`` takes effect at once), else as bound."""
        if self._bound is None:
            return None
        with contextlib.suppress(OSError):
            current = self.path.lstat()
            if (current.st_dev, current.st_ino) == self._bound[:2]:
                return current.st_gid
        # The path was removed or replaced: another file must not lend its group to our peers.
        return self._bound[2]

    def _allows(self, peer: Peer, sock: _SockOpts) -> bool:
        if peer.uid == 0 or peer.uid == os.geteuid() or peer.uid in self.allowed_uids:
            return True
        group = self._socket_gid()
        if group is None:
            return False
        if peer.gid == group:
            return True
        groups = peer_groups(sock)  # None (kernel < 4.13): the primary gid is all we know
        return groups is not None and group in groups

    def _forbidden(self, peer: Peer) -> ControlForbiddenError:
        group = self._socket_gid()
        where = _group_name(group) if group is not None else "stampd"
        return ControlForbiddenError(
            f"uid {peer.uid} is not allowed to use the control socket",
            hint=f"add the user to the socket's group ({where}) or run as root",
        )

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            sock = writer.get_extra_info("socket")
            peer = peer_credentials(sock)
            if self._allows(peer, sock):
                reply = await self._reply_to(reader)
            else:
                # Not a byte of the request is read: a stranger gets one reply and the door.
                log.warning("control_refused", uid=peer.uid, gid=peer.gid, pid=peer.pid)
                reply = _error_reply(self._forbidden(peer))
            await self._send(writer, reply)
        except (ConnectionError, TimeoutError):
            pass  # the client went away, or does not read its reply; nothing more to say
        except asyncio.CancelledError:
            # close() dropped this connection. Nobody awaits this task but close(), and
            # Python 3.11's stream callback logs a cancelled connection task as an error.
            pass
        except Exception:
            # An exception here would end this connection's task unnoticed; log it instead.
            log.exception("control_connection_failed")
        finally:
            writer.close()
            # The task's last step: a cancellation from close() here has nothing left to stop.
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._clients.discard(task)  # only now: close() waits for the whole task

    async def _send(self, writer: asyncio.StreamWriter, reply: bytes) -> None:
        writer.write(reply)
        try:
            async with asyncio.timeout(self.request_timeout):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()  # close() would wait for the unread reply forever
            raise

    async def _reply_to(self, reader: asyncio.StreamReader) -> bytes:
        try:
            request = await self._read_request(reader)
        except StampdError as error:
            return _error_reply(error)
        command: str = request["command"]
        handler = self.handlers.get(command)
        if handler is None:
            return _error_reply(self._unknown(command))
        try:
            return _encode({"ok": True, **await handler(request)})
        except StampdError as error:
            return _error_reply(error)
        except Exception:
            # The exception's message may carry paths or secrets: it goes to the log only.
            log.exception("control_handler_failed", command=command)
            return _error_reply(
                ControlInternalError(
                    f"the daemon failed to handle {command!r}",
                    hint="the daemon's log has the details (event control_handler_failed)",
                )
            )

    def _unknown(self, command: str) -> ControlRequestError:
        known = ", ".join(sorted(self.handlers))
        if _COMMAND_NAME.fullmatch(command):
            return ControlRequestError(f"unknown command {command!r} (known: {known})")
        return ControlRequestError(f"unknown command (known: {known})")

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
        # (cpython#86296), and close() cancels the connections it drops.
        try:
            async with asyncio.timeout(self.request_timeout):
                line = await reader.readline()
        except TimeoutError:
            raise ControlRequestError(
                f"request timed out (no complete line within {self.request_timeout:g} s)"
            ) from None
        except ValueError:  # asyncio raises it when the line exceeds the stream limit
            raise ControlRequestError(
                f"request larger than {MAX_REQUEST_BYTES} bytes",
                hint="send one JSON object on one line",
            ) from None
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ControlRequestError("request is not one line of JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            raise ControlRequestError('request needs a "command" string')
        return request
