"""System tests: `stampd run` as a process, real inotify, three TSAs on loopback.

Issue 4's scenarios end to end: files dropped into a watched tree come out with `.tsr`
sidecars that `openssl ts -verify` accepts, whatever the TSAs do — hang, answer 503, all go
down for a while — and a `kill -9` in the middle of stamping leaves nothing half done.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.daemon_harness import STAMPD, RunningDaemon, wait_for
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "System")


@pytest.fixture
def tsas(pki: Pki) -> Iterator[tuple[FakeTsa, FakeTsa, FakeTsa]]:
    with (
        FakeTsa(pki, mode="hang", hang_seconds=10) as hanging,
        FakeTsa(pki, mode="status_503_retry_after", retry_after=1) as busy,
        FakeTsa(pki) as working,
    ):
        yield hanging, busy, working


def _timestamp_config(pki: Pki, servers: dict[str, FakeTsa], *, selection: str) -> str:
    text = (
        "[timestamp]\n"
        f'selection = "{selection}"\n'
        'timeout = "1s"\n'
        'retry = "300ms"\n'
        'retry_max = "1s"\n'
        'cooldown = "2s"\n'
    )
    for name, server in servers.items():
        text += (
            f'[[timestamp.tsa]]\nname = "{name}"\nurl = "{server.url}"\ntrust = "{pki.root_pem}"\n'
        )
    return text


def _daemon(tmp_path: Path, pki: Pki, servers: dict[str, FakeTsa], selection: str) -> RunningDaemon:
    return RunningDaemon(
        tmp_path,
        quiet="0.2s",
        evidence='["tsr"]',
        extra=_timestamp_config(pki, servers, selection=selection),
    )


def _rows(daemon: RunningDaemon, sql: str) -> list[tuple[Any, ...]]:
    db = daemon.state / "index.sqlite"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # the schema is still being created
    finally:
        conn.close()


def _jobs_by_state(daemon: RunningDaemon) -> dict[str, int]:
    return dict(_rows(daemon, "SELECT state, COUNT(*) FROM jobs WHERE kind='tsr' GROUP BY state"))


def _drop(directory: Path, count: int, tag: str) -> list[Path]:
    paths = []
    for n in range(count):
        path = directory / f"{tag}-{n:03d}.txt"
        path.write_bytes(f"{tag} record {n}\n".encode() * (n % 7 + 1))
        paths.append(path)
    return paths


def _openssl_verify(openssl: str, data: Path, root: Path) -> None:
    result = subprocess.run(
        [openssl, "ts", "-verify", "-data", data, "-in", f"{data}.tsr", "-CAfile", root],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Verification: OK" in result.stdout, (data, result.stdout, result.stderr)


def _cli(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STAMPD, "--config", str(daemon.config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_200_files_through_a_hanging_a_busy_and_a_working_tsa(
    tmp_path: Path, pki: Pki, tsas: tuple[FakeTsa, FakeTsa, FakeTsa]
) -> None:
    openssl = require_tool("openssl")
    hanging, busy, working = tsas
    servers = {"hanging": hanging, "busy": busy, "working": working}
    daemon = _daemon(tmp_path, pki, servers, selection="round-robin").start()
    try:
        paths = _drop(daemon.watched, 200, "drop")
        wait_for(
            lambda: _jobs_by_state(daemon).get("done", 0) == 200,
            180,
            "200 tsr jobs done",
            daemon,
        )
        providers = json.loads(_cli(daemon, "providers", "--json").stdout)
        status = json.loads(_cli(daemon, "status", "--json").stdout)
        status_text = _cli(daemon, "status").stdout
    finally:
        assert daemon.stop() == 0
    for path in paths:
        _openssl_verify(openssl, path, pki.root_pem)
    # One line per running evidence runner, named by its kind (store/kinds.py).
    runner_lines = [line for line in status_text.splitlines() if "in progress" in line]
    assert len(runner_lines) == 1 and runner_lines[0].startswith("tsr:      0 in progress")
    classes = dict(
        _rows(
            daemon,
            "SELECT provider, group_concat(DISTINCT COALESCE(error_class, 'ok')) FROM attempts"
            " GROUP BY provider",
        )
    )
    assert classes == {"hanging": "timeout", "busy": "http_status", "working": "ok"}
    assert working.requests == 200  # one token per file: nothing stamped twice
    by_name = {p["name"]: p for p in providers["providers"]}
    assert by_name["hanging"]["failures"].keys() == {"timeout"}
    assert by_name["busy"]["failures"].keys() == {"http_status"}
    assert by_name["working"]["attempts"] == 200 and by_name["working"]["last_success_at"]
    assert {p["breaker"] for p in providers["providers"]} <= {"closed", "open", "half-open"}
    assert status["summary"]["proofs"] == {"tsr": {"complete": 200}}
    assert status["daemon"]["tsr"]["completed"] == 200
    assert _leftovers(daemon.watched, daemon.state) == []


def test_every_tsa_down_for_a_while_then_one_back(
    tmp_path: Path, pki: Pki, tsas: tuple[FakeTsa, FakeTsa, FakeTsa]
) -> None:
    openssl = require_tool("openssl")
    hanging, busy, working = tsas
    hanging.mode = "status_500"
    working.mode = "status_500"
    servers = {"hanging": hanging, "busy": busy, "working": working}
    daemon = _daemon(tmp_path, pki, servers, selection="priority").start()
    try:
        paths = _drop(daemon.watched, 20, "down")
        wait_for(
            lambda: (
                _rows(daemon, "SELECT COUNT(*) FROM jobs WHERE kind='tsr' AND tries >= 2")[0][0]
                == 20
            ),
            60,
            "every job failed twice",
            daemon,
        )
        # Polled: with retry = 300ms a busy machine may catch every job due or in flight.
        wait_for(
            lambda: "backing off after failures" in _cli(daemon, "status").stdout,
            30,
            "status showing the back-off",
            daemon,
        )
        assert not any(Path(f"{p}.tsr").exists() for p in paths)
        working.mode = "ok"
        wait_for(lambda: _jobs_by_state(daemon) == {"done": 20}, 60, "all jobs done", daemon)
    finally:
        assert daemon.stop() == 0
    for path in paths:
        _openssl_verify(openssl, path, pki.root_pem)
    assert daemon.count("tsr_job_backing_off") >= 40


def test_kill_9_while_stamping_leaves_exactly_one_valid_tsr_per_file(
    tmp_path: Path, pki: Pki
) -> None:
    """Killed twice mid-stream (at whatever step each job is in), then run to the end."""
    openssl = require_tool("openssl")
    with FakeTsa(pki) as working:
        servers = {"working": working}
        daemon = _daemon(tmp_path, pki, servers, selection="priority").start()
        paths = _drop(daemon.watched, 150, "kill")
        for at_least in (20, 70):
            running = daemon
            wait_for(
                lambda: _jobs_by_state(running).get("done", 0) >= at_least,  # noqa: B023
                60,
                f"{at_least} jobs done",
                daemon,
            )
            daemon.stop(signal.SIGKILL)
            assert _jobs_by_state(daemon).get("done", 0) < 150, "killed too late to prove much"
            daemon = _daemon(tmp_path, pki, servers, selection="priority").start()
        try:
            wait_for(lambda: _jobs_by_state(daemon) == {"done": 150}, 120, "all done", daemon)
            # A kill between a temp file's creation and its rename leaves it; the restarted
            # daemon removes what an earlier run left (store/files/leftovers.py).
            wait_for(
                lambda: _leftovers(daemon.watched, daemon.state) == [], 30, "no temp files", daemon
            )
            time.sleep(0.5)  # a duplicate stamp, if any, would show now
        finally:
            assert daemon.stop() == 0
    for path in paths:
        _openssl_verify(openssl, path, pki.root_pem)
    per_version = _rows(
        daemon,
        "SELECT v.id, COUNT(p.id) FROM versions v LEFT JOIN proofs p"
        " ON p.version_id = v.id AND p.kind = 'tsr' GROUP BY v.id",
    )
    assert len(per_version) == 150
    assert {count for _version, count in per_version} == {1}
    assert _leftovers(daemon.watched, daemon.state) == []
