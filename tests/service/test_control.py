"""The control socket over a real Unix socket: replies, refusals, and the CLI-side client.

Peer checks run real processes: a forked child drops to `nobody` (and chosen groups) and
connects, so the kernel's own SO_PEERCRED / SO_PEERGROUPS answers are what the server sees.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from stampd.daemon.service import control
from stampd.store.errors import IndexUnavailableError
from tests.conftest import NOBODY

#: A group that neither root nor nobody belongs to; given to the socket by the tests.
TEST_GID = 4242

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="switching to another uid needs root (CI runs the tests as root)"
)


async def _status(_request: Mapping[str, Any]) -> dict[str, Any]:
    return {"pid": 42}


def _send(sock: socket.socket, payload: bytes) -> None:
    # The server may answer and close before reading everything (oversized, refused).
    with suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(payload)


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _raw_bytes(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        _send(sock, payload)
        return _read_line(sock)


def _raw(path: Path, payload: bytes) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(_raw_bytes(path, payload))
    return reply


def _serve_and(
    path: Path,
    check: Callable[[], Any],
    handlers: Mapping[str, control.Handler] | None = None,
    **options: Any,
) -> None:
    async def main() -> None:
        server = control.ControlServer(path, handlers or {"status": _status}, **options)
        await server.start()
        try:
            await asyncio.to_thread(check)
        finally:
            await server.close()

    asyncio.run(main())


def _as_user(
    action: Callable[[], Any], *, uid: int = NOBODY, gid: int = NOBODY, groups: Iterable[int] = ()
) -> tuple[int, Any]:
    """Run ``action`` in a forked child with the given credentials; its pid and JSON result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            result = {"result": action()}
            code = 0
        except BaseException as error:
            result = {"child_error": repr(error)}
        finally:
            with suppress(BaseException):
                os.write(write_end, json.dumps(result).encode())
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    outcome = json.loads(data)
    assert os.waitstatus_to_exitcode(status) == 0, outcome
    return pid, outcome["result"]


def _status_outcome(path: Path) -> Callable[[], dict[str, Any]]:
    def attempt() -> dict[str, Any]:
        try:
            return {"reply": control.request(path, {"command": "status"}, timeout=3)}
        except control.DaemonUnreachableError as error:
            return {
                "unreachable": error.message,
                "errno": getattr(error.__cause__, "errno", None),
            }

    return attempt


# --- replies and bad requests ---------------------------------------------------------------


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
        (b"\xff\xfe\n", "not one line of JSON"),
        (b"\n", "not one line of JSON"),
        (b"[1, 2]\n", '"command" string'),
        (b'{"cmd": "status"}\n', '"command" string'),
        (b'{"command": 7}\n', '"command" string'),
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
        assert control.request(path, {"command": "status"}) == {"ok": True, "pid": 42}

    _serve_and(path, check)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"command": "status", "password": "hunter2-SECRET"\n',  # malformed JSON
        b'{"command": "token hunter2-SECRET"}\n',  # not identifier-like
        b'{"command": "' + b"hunter2-SECRET" * 4 + b'"}\n',  # identifier-like but long
        b'["hunter2-SECRET"]\n',
    ],
)
def test_errors_never_echo_the_request_text(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "control.sock"

    def check() -> None:
        raw = _raw_bytes(path, payload)
        assert json.loads(raw)["error"]["error_class"] == "bad_request"
        assert b"hunter2" not in raw

    _serve_and(path, check)


def test_an_oversized_request_is_cut_off_without_reading_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    def check() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sent = 0
            chunk = b"x" * 65536
            # A server that kept reading would swallow all 8 MiB (or stall this send).
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                while sent < 8 * 1024 * 1024:
                    sent += sock.send(chunk)
            reply = json.loads(_read_line(sock))
            assert reply["error"]["error_class"] == "bad_request"
            assert f"larger than {control.MAX_REQUEST_BYTES} bytes" in reply["error"]["message"]
            with suppress(ConnectionResetError):
                assert sock.recv(1) == b"", "the connection is closed after the reply"
        assert control.request(path, {"command": "status"})["ok"] is True

    _serve_and(path, check)


def test_the_client_reads_the_reply_to_a_request_cut_off_by_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    def check() -> None:
        # Far more than the daemon reads: it answers early and closes while this one sends.
        reply = control.request(path, {"command": "status", "blob": "x" * (4 * 1024 * 1024)})
        assert reply["error"]["error_class"] == "bad_request"
        assert "larger than" in reply["error"]["message"]

    _serve_and(path, check)


def test_slow_clients_time_out_without_delaying_others(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    def check() -> None:
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as half,
        ):
            silent.connect(str(path))  # connects and sends nothing
            half.connect(str(path))
            half.sendall(b'{"command": "sta')  # never finishes its line
            # A third client is answered while the two slow ones are still pending.
            assert control.request(path, {"command": "status"}) == {"ok": True, "pid": 42}
            for sock in (silent, half):
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)  # nothing yet: the slow ones did not block the fast one
            for sock in (silent, half):
                sock.settimeout(10)
                reply = json.loads(_read_line(sock))
                assert reply["ok"] is False
                assert reply["error"]["error_class"] == "bad_request"
                assert "timed out" in reply["error"]["message"]
                assert sock.recv(1) == b"", "the connection is closed after the reply"
        assert control.request(path, {"command": "status"})["ok"] is True

    _serve_and(path, check, request_timeout=1.5)


def test_close_drops_a_pending_client_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "control.sock"

    async def main() -> None:
        server = control.ControlServer(path, {"status": _status}, request_timeout=60)
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"command"')
        await writer.drain()
        # Connections are accepted in order: once this one is answered, the first is served.
        assert await asyncio.to_thread(control.request, path, {"command": "status"}) == {
            "ok": True,
            "pid": 42,
        }
        async with asyncio.timeout(5):
            await server.close()
            assert await reader.read() == b"", "the pending client is dropped, not left to time out"
        writer.close()

    asyncio.run(main())
    assert not path.exists()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], (
        "dropping a connection is not an error"
    )


def test_many_concurrent_clients_are_served_together(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    clients = 100
    arrived: list[int] = []
    everyone = asyncio.Event()

    async def echo(request: Mapping[str, Any]) -> dict[str, Any]:
        # Every reply waits until all clients are in flight: a server that served one
        # connection at a time would never get there, and its clients would time out.
        arrived.append(request["n"])
        if len(arrived) == clients:
            everyone.set()
        await everyone.wait()
        return {"n": request["n"]}

    def check() -> None:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            replies = list(
                pool.map(
                    lambda n: control.request(path, {"command": "echo", "n": n}, timeout=8),
                    range(clients),
                )
            )
        assert replies == [{"ok": True, "n": n} for n in range(clients)]

    _serve_and(path, check, {"echo": echo})
    assert sorted(arrived) == list(range(clients))


async def _explode(_request: Mapping[str, Any]) -> dict[str, Any]:
    raise RuntimeError("database password=hunter2 leaked")


async def _unserializable(_request: Mapping[str, Any]) -> dict[str, Any]:
    return {"when": object()}


async def _index_down(_request: Mapping[str, Any]) -> dict[str, Any]:
    raise IndexUnavailableError("index locked", hint="retry")


@pytest.mark.parametrize("handler", [_explode, _unserializable])
def test_a_failing_handler_gets_an_internal_error_and_the_server_keeps_serving(
    tmp_path: Path, handler: control.Handler
) -> None:
    path = tmp_path / "control.sock"

    def check() -> None:
        raw = _raw_bytes(path, b'{"command": "boom"}\n')
        reply = json.loads(raw)
        assert reply["ok"] is False
        assert reply["error"]["error_class"] == "internal"
        assert "'boom'" in reply["error"]["message"]
        assert b"hunter2" not in raw, "the exception's text stays in the log"
        assert control.request(path, {"command": "status"}) == {"ok": True, "pid": 42}

    with capture_logs() as logs:
        _serve_and(path, check, {"status": _status, "boom": handler})
    failures = [entry for entry in logs if entry["event"] == "control_handler_failed"]
    assert len(failures) == 1
    assert failures[0]["command"] == "boom"
    assert failures[0]["log_level"] == "error"
    assert failures[0]["exc_info"] is True


def test_a_stampd_error_from_a_handler_is_passed_on(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    def check() -> None:
        assert control.request(path, {"command": "ls"}) == {
            "ok": False,
            "error": {"error_class": "index", "message": "index locked", "hint": "retry"},
        }

    _serve_and(path, check, {"ls": _index_down})


def test_a_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after kill -9

    _serve_and(path, lambda: control.request(path, {"command": "status"}))


# --- peer credentials ---------------------------------------------------------------------


@needs_root
def test_mode_0660_keeps_others_out_at_connect(shared_tmp: Path) -> None:
    path = shared_tmp / "control.sock"

    def check() -> None:
        _, outcome = _as_user(_status_outcome(path))
        assert outcome["errno"] == errno.EACCES
        assert outcome["unreachable"] == f"permission denied on the control socket at {path}"

    with capture_logs() as logs:
        _serve_and(path, check)
    assert not [entry for entry in logs if entry["event"] == "control_refused"], (
        "the kernel, not the server, turned the peer away"
    )


@needs_root
def test_a_peer_outside_the_group_is_refused_and_the_server_keeps_serving(
    shared_tmp: Path,
) -> None:
    path = shared_tmp / "control.sock"
    pids: list[int] = []

    def check() -> None:
        path.chmod(0o666)  # a misconfigured mode: only the peer check stands in the way
        pid, outcome = _as_user(_status_outcome(path), groups=[TEST_GID + 1])
        pids.append(pid)
        group = grp.getgrgid(path.stat().st_gid).gr_name
        assert outcome == {
            "reply": {
                "ok": False,
                "error": {
                    "error_class": "forbidden",
                    "message": f"uid {NOBODY} is not allowed to use the control socket",
                    "hint": f"add the user to the socket's group ({group}) or run as root",
                },
            }
        }
        assert control.request(path, {"command": "status"}) == {"ok": True, "pid": 42}

    with capture_logs() as logs:
        _serve_and(path, check)
    refused = [entry for entry in logs if entry["event"] == "control_refused"]
    assert len(refused) == 1
    assert refused[0]["log_level"] == "warning"
    assert refused[0]["uid"] == NOBODY
    assert refused[0]["pid"] == pids[0]


@needs_root
@pytest.mark.parametrize(
    ("gid", "groups"),
    [
        pytest.param(NOBODY, [TEST_GID], id="supplementary-group"),
        pytest.param(TEST_GID, [], id="primary-group"),
        # More than the 256 gids CPython's getsockopt buffer holds.
        pytest.param(NOBODY, [*range(200_000, 200_300), TEST_GID], id="300-groups"),
    ],
)
def test_members_of_the_socket_group_are_allowed(
    shared_tmp: Path, gid: int, groups: list[int]
) -> None:
    path = shared_tmp / "control.sock"

    def check() -> None:
        # A chgrp after start takes effect at once, as it does for the filesystem.
        os.chown(path, -1, TEST_GID)
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        _, outcome = _as_user(_status_outcome(path), gid=gid, groups=groups)
        assert outcome == {"reply": {"ok": True, "pid": 42}}

    _serve_and(path, check)


@needs_root
def test_allowed_uids_admit_a_listed_user(shared_tmp: Path) -> None:
    path = shared_tmp / "control.sock"

    def check() -> None:
        path.chmod(0o666)
        _, outcome = _as_user(_status_outcome(path))
        assert outcome == {"reply": {"ok": True, "pid": 42}}

    _serve_and(path, check, allowed_uids=[NOBODY])


@needs_root
def test_a_replaced_socket_path_does_not_lend_its_group(shared_tmp: Path) -> None:
    path = shared_tmp / "control.sock"
    moved = shared_tmp / "moved.sock"

    def check() -> None:
        path.rename(moved)
        moved.chmod(0o666)
        path.write_bytes(b"")
        os.chown(path, -1, TEST_GID)  # not the socket the server bound
        _, outcome = _as_user(_status_outcome(moved), groups=[TEST_GID])
        assert outcome["reply"]["error"]["error_class"] == "forbidden"

    _serve_and(path, check)
    assert path.exists(), "close() leaves a file it did not create alone"


# --- the client --------------------------------------------------------------------------


def test_client_without_daemon_says_so(tmp_path: Path) -> None:
    with pytest.raises(control.DaemonUnreachableError, match="not running") as info:
        control.request(tmp_path / "nothing.sock", {"command": "status"})
    assert info.value.error_class == "daemon_unreachable"


def test_client_with_a_dead_socket_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(control.DaemonUnreachableError) as info:
        control.request(path, {"command": "status"})
    assert info.value.message == f"the daemon is not running (stale control socket at {path})"
    assert info.value.hint is not None
    assert "stampd run" in info.value.hint


def test_client_gives_up_on_a_daemon_that_never_answers(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen(1)  # connections queue up, nobody accepts or answers
        with pytest.raises(control.DaemonUnreachableError) as info:
            control.request(path, {"command": "status"}, timeout=0.3)
    assert info.value.message == f"the daemon at {path} did not answer within 0.3 s"
    assert info.value.hint is not None


def test_client_waits_while_the_daemon_backlog_is_full(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as filler,
    ):
        busy.bind(str(path))
        busy.listen(0)
        busy.settimeout(5)
        filler.connect(str(path))  # the one queue slot is taken: connect() now says EAGAIN

        def accept_later() -> None:
            ready.wait(5)
            first, _ = busy.accept()
            client, _ = busy.accept()
            with first, client:
                _read_line(client)
                client.sendall(b'{"ok": true}\n')

        ready = threading.Event()
        server = threading.Thread(target=accept_later, daemon=True)
        server.start()
        timer = threading.Timer(0.2, ready.set)
        timer.start()
        try:
            assert control.request(path, {"command": "status"}, timeout=5) == {"ok": True}
        finally:
            ready.set()
            server.join(5)


def _fake_daemon(path: Path, answer: Callable[[socket.socket], None]) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(5)

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                _read_line(conn)
                with suppress(BrokenPipeError, ConnectionResetError):
                    answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_client_caps_the_reply_it_reads(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    def flood(conn: socket.socket) -> None:
        chunk = b"x" * (1024 * 1024)
        while True:  # no newline, ever: only the client's cap ends this
            conn.sendall(chunk)

    thread = _fake_daemon(path, flood)
    with pytest.raises(control.DaemonUnreachableError, match="reply larger than 16 MiB"):
        control.request(path, {"command": "status"}, timeout=3)
    thread.join(5)
    assert not thread.is_alive(), "the client stopped reading and closed"


def test_client_reports_a_connection_closed_without_reply(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    thread = _fake_daemon(path, lambda _conn: None)
    with pytest.raises(control.DaemonUnreachableError, match="closed the connection"):
        control.request(path, {"command": "status"})
    thread.join(5)


def test_client_reports_an_unreadable_reply(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    thread = _fake_daemon(path, lambda conn: conn.sendall(b"<html>\n"))
    with pytest.raises(control.DaemonUnreachableError, match="unreadable reply"):
        control.request(path, {"command": "status"})
    thread.join(5)


def test_a_second_server_does_not_take_over_a_live_socket(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    async def main() -> None:
        first = control.ControlServer(path, {"status": _status})
        await first.start()
        try:
            second = control.ControlServer(path, {"status": _status})
            with pytest.raises(
                control.ControlSocketInUseError, match="another daemon is listening"
            ):
                await second.start()
            reply = await asyncio.to_thread(control.request, path, {"command": "status"})
            assert reply == {"ok": True, "pid": 42}, "the first server lost its socket"
        finally:
            await first.close()
        # Once it is gone, its leftover is stale and may be replaced.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()
        third = control.ControlServer(path, {"status": _status})
        await third.start()
        await third.close()

    asyncio.run(main())
