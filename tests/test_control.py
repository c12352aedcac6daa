"""The control socket over a real Unix socket: replies, refusals, and the CLI-side client."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from stampd.daemon import control


async def _status(_request: Mapping[str, Any]) -> dict[str, Any]:
    return {"pid": 42}


def _raw(path: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def _serve_and(path: Path, check: Any) -> None:
    async def main() -> None:
        server = control.ControlServer(path, {"status": _status})
        await server.start()
        try:
            await asyncio.to_thread(check)
        finally:
            await server.close()

    asyncio.run(main())


def test_status_round_trip_and_socket_mode(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"

    def check() -> None:
        assert stat.S_IMODE(path.stat().st_mode) == control.SOCKET_MODE
        assert control.request(path, {"command": "status"}) == {"ok": True, "pid": 42}

    _serve_and(path, check)
    assert not path.exists(), "the socket file is removed on close"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json\n", "not one line of JSON"),
        (b"[1, 2]\n", '"command" string'),
        (b'{"command": "explode"}\n', "unknown command 'explode' (known: status)"),
        (b'{"command": "' + b"x" * (control.MAX_REQUEST_BYTES + 10) + b'"}\n', "larger than"),
    ],
)
def test_bad_requests_get_an_error_and_the_server_keeps_serving(
    tmp_path: Path, payload: bytes, message: str
) -> None:
    path = tmp_path / "control.sock"

    def check() -> None:
        reply = _raw(path, payload)
        assert reply["ok"] is False
        assert reply["error"]["error_class"] == "bad_request"
        assert message in reply["error"]["message"]
        assert control.request(path, {"command": "status"})["ok"] is True

    _serve_and(path, check)


def test_a_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after kill -9

    _serve_and(path, lambda: control.request(path, {"command": "status"}))


def test_client_without_daemon_says_so(tmp_path: Path) -> None:
    with pytest.raises(control.DaemonUnreachableError, match="not running") as info:
        control.request(tmp_path / "nothing.sock", {"command": "status"})
    assert info.value.error_class == "daemon_unreachable"


def test_client_with_a_dead_socket_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(control.DaemonUnreachableError, match="cannot reach the daemon"):
        control.request(path, {"command": "status"})
