"""sd_notify without libsystemd: datagrams on a real Unix socket, as systemd receives them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from stampd.daemon.service.health import StallWatch
from stampd.daemon.service.notify import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield str(path), sock


def _fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_messages_reach_a_socket_path(manager: tuple[str, socket.socket]) -> None:
    address, sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.ready("watching 2 roots")
    assert _fields(sock) == {"READY": "1", "STATUS": "watching 2 roots"}
    assert notifier.watchdog()
    assert _fields(sock) == {"WATCHDOG": "1"}
    assert notifier.reloading()
    reloading = _fields(sock)
    assert reloading["RELOADING"] == "1"
    # CLOCK_MONOTONIC in microseconds, what Type=notify-reload compares with its own clock.
    assert abs(int(reloading["MONOTONIC_USEC"]) - time_monotonic_usec()) < 5_000_000
    assert notifier.stopping()
    assert _fields(sock) == {"STOPPING": "1", "STATUS": "stopping"}
    notifier.close()


def time_monotonic_usec() -> int:
    import time  # noqa: PLC0415

    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_abstract_namespace_address() -> None:
    name = f"stampd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.status("scanning")
        assert _fields(sock) == {"STATUS": "scanning"}


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234", "@"])
def test_without_a_usable_socket_nothing_is_sent(value: str) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": value} if value else {})
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_a_vanished_manager_is_reported_once_and_never_raises(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with structlog.testing.capture_logs() as logged:
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert [entry["event"] for entry in logged] == ["notify_failed"]


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        # Meant for another process (inherited by a child): not ours to ping.
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(
    environ: dict[str, str], interval: float | None
) -> None:
    assert Notifier.from_environ(environ).watchdog_interval == interval


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stall_watch_flags_waiting_work_that_does_not_move() -> None:
    clock = FakeClock()
    watch = StallWatch("hashing", stall_after=10, clock=clock)
    assert watch.check(waiting=True, progress=0) is None
    clock.now += 9
    assert watch.check(waiting=True, progress=0) is None
    clock.now += 2
    assert watch.check(waiting=True, progress=0) == "hashing: no progress for 11s with work waiting"
    # Progress clears it, and the clock starts again from there.
    assert watch.check(waiting=True, progress=1) is None
    clock.now += 9
    assert watch.check(waiting=True, progress=1) is None


def test_stall_watch_idle_is_healthy_however_long() -> None:
    clock = FakeClock()
    watch = StallWatch("index writer", stall_after=10, clock=clock)
    clock.now += 1000
    assert watch.check(waiting=False, progress=0) is None
    # Work that just arrived gets its full allowance, not the idle time before it.
    clock.now += 5
    assert watch.check(waiting=True, progress=0) is None
    clock.now += 6
    assert watch.check(waiting=True, progress=0) is not None
