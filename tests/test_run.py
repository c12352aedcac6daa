"""`stampd run` as a subprocess: start-up, status over the control socket, clean stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

STAMPD = str(Path(sys.executable).with_name("stampd"))


def _stampd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAMPD, *args], capture_output=True, text=True, timeout=60)


def _wait_for_event(proc: subprocess.Popen[str], event: str, seen: list[dict[str, object]]) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        record = json.loads(line)
        seen.append(record)
        if record["event"] == event:
            return
    pytest.fail(
        f"no {event} event; saw {seen}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_status_and_stops_cleanly(
    make_config: Callable[..., Path], signum: signal.Signals
) -> None:
    config = make_config()
    state = config.parent / "state"
    sock = config.parent / "control.sock"
    proc = subprocess.Popen(
        [STAMPD, "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen: list[dict[str, object]] = []
    try:
        _wait_for_event(proc, "daemon_ready", seen)
        assert (state / "index.sqlite").exists()
        assert oct(state.stat().st_mode & 0o777) == oct(0o750)

        status = _stampd("--config", str(config), "status", "--json")
        assert status.returncode == 0, status.stderr
        daemon = json.loads(status.stdout)["daemon"]
        assert daemon["running"] is True
        assert daemon["pid"] == proc.pid
        assert json.loads(status.stdout)["summary"]["watches"][0]["path"] == str(
            config.parent / "watched"
        )

        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
        _wait_for_event(proc, "daemon_stopped", seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not sock.exists()
    after = _stampd("--config", str(config), "status")
    assert "not running" in after.stdout


def test_run_starts_after_a_crash_left_a_stale_socket(make_config: Callable[..., Path]) -> None:
    config = make_config()
    first = subprocess.Popen(
        [STAMPD, "--config", str(config), "run"], stdout=subprocess.PIPE, text=True
    )
    _wait_for_event(first, "daemon_ready", [])
    first.kill()  # kill -9: no cleanup, the socket file stays
    first.wait()
    assert (config.parent / "control.sock").exists()

    second = subprocess.Popen(
        [STAMPD, "--config", str(config), "run"], stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_for_event(second, "daemon_ready", [])
        status = json.loads(_stampd("--config", str(config), "status", "--json").stdout)
        assert status["daemon"]["pid"] == second.pid
    finally:
        second.terminate()
        second.wait(timeout=30)


def test_run_with_a_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[watch]]\npath = "/srv"\nquiet = "2x"\nevidence = ["ots"]\n')
    result = _stampd("--config", str(config), "run")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f'stampd: {config}: watch[0].quiet: "2x" is not a duration (try "2s")'
    ]


def test_run_with_an_unwritable_state_dir_names_the_key(make_config: Callable[..., Path]) -> None:
    config = make_config()
    blocker = config.parent / "state"
    blocker.write_text("a file where the state directory should be")
    result = _stampd("--config", str(config), "run")
    assert result.returncode == 1
    assert "daemon.state_dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_help() -> None:
    version = _stampd("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("stampd, version ")
    helptext = _stampd("--help")
    for command in ("run", "status", "ls", "show", "digest", "config"):
        assert f"  {command} " in helptext.stdout
    assert shutil.which("stampd", path=str(Path(STAMPD).parent))
