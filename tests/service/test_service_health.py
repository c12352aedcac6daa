"""The daemon under systemd: notifications in order, and a watchdog that stops when stampd is
wedged (reference/watching-and-service.md §2, §4.1).

The system test runs `stampd run` as a process with a fake NOTIFY_SOCKET; the in-process
tests wedge one component at a time and read the health check the watchdog relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stampd.daemon.config.reader import load_config
from stampd.daemon.service import control
from stampd.daemon.service import lifecycle as service
from stampd.daemon.watch import intake
from stampd.daemon.watch.hasher import HashOutcome
from tests.conftest import require_tool
from tests.daemon_harness import RunningDaemon, wait_for


class NotifyListener:
    """Collects what the daemon sends to $NOTIFY_SOCKET, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[dict[str, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append(fields)

    def pings(self) -> int:
        return sum(1 for message in list(self.messages) if "WATCHDOG" in message)

    def index_of(self, predicate: Callable[[dict[str, str]], bool], start: int = 0) -> int:
        for index, message in enumerate(list(self.messages)[start:], start):
            if predicate(message):
                return index
        return -1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    notify = NotifyListener(tmp_path / "notify.sock")
    yield notify
    notify.close()


def _status(daemon: RunningDaemon) -> dict[str, Any]:
    reply: dict[str, Any] = control.request(daemon.tmp / "control.sock", {"command": "status"})
    return reply


def test_ready_status_watchdog_stopping_in_order_and_pings_stop_while_the_index_is_wedged(
    tmp_path: Path, listener: NotifyListener
) -> None:
    daemon = RunningDaemon(
        tmp_path,
        daemon_extra='stall_after = "1s"\n',
        env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"},
    ).start()
    try:
        wait_for(lambda: listener.pings() >= 3, 15, "three watchdog pings")
        messages = list(listener.messages)
        assert messages[0].get("READY") == "1", messages[:3]
        assert messages[0]["STATUS"].startswith("watching 1 of 1 roots")

        # Wedge the index writer: another process holds the write lock, so the daemon's
        # commit waits (busy_timeout) with a settled file queued behind it.
        lock = sqlite3.connect(daemon.state / "index.sqlite", isolation_level=None, timeout=10)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            (daemon.watched / "a.txt").write_text("recorded once the index is free\n")
            wait_for(
                lambda: (
                    listener.index_of(lambda m: "index writer: no progress" in m.get("STATUS", ""))
                    >= 0
                ),
                15,
                "an UNHEALTHY status",
            )
            unhealthy_at = listener.index_of(
                lambda m: "index writer: no progress" in m.get("STATUS", "")
            )
            assert listener.messages[unhealthy_at]["STATUS"].startswith("UNHEALTHY: ")
            status = _status(daemon)
            assert status["healthy"] is False
            assert any(p.startswith("index writer") for p in status["problems"])
            pings = listener.pings()
            time.sleep(1.5)  # ~7 ping intervals
            assert listener.pings() == pings, "the watchdog was pinged while wedged"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        wait_for(lambda: listener.pings() > pings, 15, "pings once the index is free")
        wait_for(lambda: str(daemon.watched / "a.txt") in daemon.versions(), 15, "the file")
        assert _status(daemon)["healthy"] is True
    finally:
        assert daemon.stop() == 0
    messages = list(listener.messages)
    assert messages[-1].get("STOPPING") == "1"
    assert "stopping on SIGTERM" in messages[-1]["STATUS"]
    first_ping = listener.index_of(lambda m: "WATCHDOG" in m)
    assert first_ping > 0, "no ping may come before READY"
    assert any("STATUS" in m for m in messages[1 : first_ping + 3])


def test_no_watchdog_pings_without_watchdog_usec(tmp_path: Path, listener: NotifyListener) -> None:
    daemon = RunningDaemon(tmp_path, env={"NOTIFY_SOCKET": str(listener.path)}).start()
    try:
        wait_for(lambda: bool(listener.messages), 10, "READY")
        time.sleep(1)
    finally:
        daemon.stop()
    assert listener.pings() == 0
    assert listener.messages[0]["READY"] == "1"
    assert listener.messages[-1]["STOPPING"] == "1"


# --- in-process: wedge one component at a time --------------------------------------------------


def _config(tmp_path: Path, quiet: str = "100ms") -> Path:
    watched = tmp_path / "watched"
    watched.mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        "[daemon]\n"
        f'state_dir = "{tmp_path / "state"}"\n'
        f'control_socket = "{tmp_path / "control.sock"}"\n'
        'stall_after = "1s"\n'
        "[[watch]]\n"
        f'path = "{watched}"\n'
        "evidence = []\n"
        f'quiet = "{quiet}"\n'
    )
    return path


def _run_with(
    tmp_path: Path, scenario: Callable[[service.Daemon], Any], *, quiet: str = "100ms"
) -> None:
    """Run a daemon in this loop, play ``scenario`` against it, then stop it."""

    async def main() -> None:
        daemon = service.Daemon(load_config(_config(tmp_path, quiet)))
        task = asyncio.create_task(daemon.run())
        while not daemon._components and not task.done():
            await asyncio.sleep(0.01)
        try:
            await scenario(daemon)
        finally:
            daemon.request_stop("test")
            await task

    asyncio.run(main())


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_a_hash_that_hangs_is_unhealthy_but_a_slow_moving_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = intake.hash_file

    def hanging_hash(path: Path, **options: Any) -> HashOutcome:
        if path.name.startswith("slow"):
            for _ in range(60):  # 3 s, three times stall_after, reporting progress
                options["progress"](4096)
                time.sleep(0.05)
        elif path.name.startswith("hang"):
            release.wait(30)  # an NFS server that stopped answering
        return real(path, **options)

    monkeypatch.setattr(intake, "hash_file", hanging_hash)

    async def scenario(daemon: service.Daemon) -> None:
        watched = tmp_path / "watched"
        (watched / "slow.bin").write_bytes(b"s" * 10)
        seen: list[tuple[str, ...]] = []
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            seen.append(daemon.check_health().problems)
            await asyncio.sleep(0.1)
        assert all(problems == () for problems in seen), seen
        (watched / "hang.bin").write_bytes(b"h" * 10)
        await _until(lambda: not daemon.check_health().ok, "hashing flagged")
        assert daemon.check_health().problems[0].startswith("hashing: no progress for")
        release.set()
        await _until(lambda: daemon.check_health().ok, "healthy again")

    _run_with(tmp_path, scenario)


def test_a_dead_observer_or_a_crashed_component_is_unhealthy(tmp_path: Path) -> None:
    async def scenario(daemon: service.Daemon) -> None:
        assert daemon.check_health().ok
        daemon._components["settle"].cancel()
        await asyncio.sleep(0.05)
        assert "settle: stopped" in daemon.check_health().problems
        # What an exception in an event handler does to watchdog's dispatch thread (ref. §2).
        daemon._watcher._observer.stop()
        await asyncio.to_thread(daemon._watcher._observer.join, 5)
        assert "observer: the inotify dispatch thread has stopped" in daemon.check_health().problems

    _run_with(tmp_path, scenario)


def test_status_json_reports_health(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path).start()
    try:
        document = json.loads(daemon.cli("status", "--json").stdout)
    finally:
        daemon.stop()
    assert document["daemon"]["healthy"] is True
    assert document["daemon"]["problems"] == []
    assert document["daemon"]["paused_since"] is None


def test_a_long_quiet_period_is_not_a_stalled_settle_stage(tmp_path: Path) -> None:
    # Ticks every quiet/4 would be one per 15 minutes: 1800 stall periods of silence.
    async def scenario(daemon: service.Daemon) -> None:
        (tmp_path / "watched" / "waiting.txt").write_text("settles in an hour\n")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert daemon.check_health().ok, daemon.check_health().problems
            await asyncio.sleep(0.1)

    _run_with(tmp_path, scenario, quiet="1h")


# --- watch roots: missing, not a directory, unreadable (daemon/watch/roots.py) ---
# Reported in status, health, STATUS= and the metric with what to do; the watchdog pings go
# on, since a restart would not fix a missing directory; fixing the root clears it all.


def _second_watch(path: Path) -> str:
    """TOML for one more watch, at ``path`` (the harness's own watch stays fine)."""
    return f'[[watch]]\npath = "{path}"\nevidence = []\nquiet = "0.3s"\n'


def _cli_status(daemon: RunningDaemon) -> dict[str, Any]:
    result = daemon.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)["daemon"]
    return document


def _scan_of(status: dict[str, Any], root: Path) -> dict[str, Any]:
    return next(scan for scan in status["scans"] if scan["root"] == str(root))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _gauge(port: int, name: str, root: Path | None = None) -> float:
    """One sample of a gauge scraped from the daemon's /metrics (of ``root``, if given)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == name)
    return next(
        s.value for s in family.samples if root is None or s.labels.get("root") == str(root)
    )


def test_a_missing_root_is_reported_everywhere_with_the_fix_and_clears_once_created(
    tmp_path: Path,
) -> None:
    records = tmp_path / "records"
    port = _free_port()
    listener = NotifyListener(tmp_path / "notify.sock")
    daemon = RunningDaemon(
        tmp_path,
        extra=_second_watch(records),
        daemon_extra=f'metrics = "127.0.0.1:{port}"\n',
        env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"},
    ).start()
    try:
        line = f"watch root {records} does not exist: create {records} or fix its permissions"
        wait_for(lambda: not _cli_status(daemon)["healthy"], 15, "an unhealthy status", daemon)
        status = _cli_status(daemon)
        assert any(problem.startswith(line) for problem in status["problems"]), status
        assert "it is picked up once it exists" in status["problems"][0]
        scan = _scan_of(status, records)
        assert (scan["ok"], scan["watched"], scan["problem"]) == (False, False, "does not exist")
        assert "stampd runs as user" in scan["hint"]
        assert _scan_of(status, daemon.watched)["ok"] is True
        assert status["watchdog_pinged"] is True

        text = daemon.cli("status").stdout
        assert f"health:   UNHEALTHY — {line}" in text
        assert "restarting stampd would not fix this" in text
        assert f"{records}  (none)  [does not exist]" in text

        assert _gauge(port, "stampd_watch_root_ok", records) == 0
        assert _gauge(port, "stampd_watch_root_ok", daemon.watched) == 1
        assert _gauge(port, "stampd_healthy") == 0
        assert daemon.count("watch_root_missing") == 1

        # The watchdog goes on: systemd must not restart stampd in a loop for a directory.
        wait_for(
            lambda: any(line in m.get("STATUS", "") for m in list(listener.messages)),
            15,
            "the root in STATUS=",
        )
        pings = listener.pings()
        wait_for(lambda: listener.pings() > pings + 3, 15, "pings while the root is missing")

        records.mkdir()
        wait_for(lambda: _cli_status(daemon)["healthy"], 15, "health once the root exists", daemon)
        assert _scan_of(_cli_status(daemon), records)["ok"] is True
        assert _gauge(port, "stampd_watch_root_ok", records) == 1
        daemon.wait_event("watch_root_ok")
        invoice = records / "invoice.pdf"
        invoice.write_bytes(b"recorded once the root exists")
        daemon.settle_until({invoice: b"recorded once the root exists"})
        assert "[does not exist]" not in daemon.cli("status").stdout
    finally:
        assert daemon.stop() == 0
        listener.close()


def test_a_root_that_is_a_file_or_vanishes_while_running_is_a_problem(tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_bytes(b"not a directory")
    daemon = RunningDaemon(tmp_path, extra=_second_watch(plain)).start()
    try:
        wait_for(lambda: not _cli_status(daemon)["healthy"], 15, "an unhealthy status", daemon)
        scan = _scan_of(_cli_status(daemon), plain)
        assert (scan["ok"], scan["problem"]) == (False, "is not a directory")
        assert f"replace {plain} with a directory" in scan["hint"]
        assert daemon.count("watch_root_not_directory") == 1

        shutil.rmtree(daemon.watched)  # vanishes while watched
        wait_for(
            lambda: _scan_of(_cli_status(daemon), daemon.watched)["problem"] == "does not exist",
            15,
            "the vanished root",
            daemon,
        )
        assert _scan_of(_cli_status(daemon), daemon.watched)["watched"] is False
        daemon.watched.mkdir()
        wait_for(
            lambda: _scan_of(_cli_status(daemon), daemon.watched)["ok"],
            15,
            "the root back",
            daemon,
        )
    finally:
        assert daemon.stop() == 0


def test_an_unreadable_root_is_a_problem_until_its_permissions_are_fixed(tmp_path: Path) -> None:
    setpriv = require_tool("setpriv")
    # Root reads any directory; without these capabilities it obeys modes like anyone else.
    daemon = RunningDaemon(
        tmp_path,
        prefix=[setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"],
    )
    if os.geteuid() != 0:
        daemon.prefix = []
    kept = daemon.watched / "kept.txt"
    kept.write_bytes(b"written before the root was closed")
    daemon.start()
    try:
        daemon.settle_until({kept: kept.read_bytes()})
        daemon.watched.chmod(0o000)
        wait_for(lambda: not _cli_status(daemon)["healthy"], 15, "an unhealthy status", daemon)
        scan = _scan_of(_cli_status(daemon), daemon.watched)
        assert (scan["ok"], scan["problem"]) == (False, "is not readable: Permission denied")
        assert "read and search permission" in scan["hint"]
        assert daemon.count("watch_root_unreadable") == 1
        # Closed is not deleted: a rescan now cannot list the root and marks nothing missing.
        assert daemon.cli("rescan").returncode == 0
        wait_for(lambda: daemon.count("scan_finished") >= 2, 30, "the rescan", daemon)
        rescan = next(e for e in reversed(daemon.events) if e.get("event") == "scan_finished")
        assert rescan["problem"] == f"cannot list {daemon.watched}: Permission denied"
        assert daemon.files()[str(kept)] == "present"
        daemon.watched.chmod(0o755)
        wait_for(lambda: _cli_status(daemon)["healthy"], 15, "health once readable", daemon)
        daemon.wait_event("watch_root_ok")
    finally:
        daemon.watched.chmod(0o755)
        assert daemon.stop() == 0
