"""`stampd run` as a subprocess: start-up, status over the control socket, clean stop."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_harness import STAMPD, RunningDaemon


def _stampd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAMPD, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_status_and_stops_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    daemon = RunningDaemon(tmp_path).start()
    config = str(daemon.config)
    try:
        assert (daemon.state / "index.sqlite").exists()
        assert oct(daemon.state.stat().st_mode & 0o777) == oct(0o750)

        status = _stampd("--config", config, "status", "--json")
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert document["daemon"]["running"] is True
        assert daemon.proc is not None
        assert document["daemon"]["pid"] == daemon.proc.pid
        assert document["summary"]["watches"][0]["path"] == str(daemon.watched)
    finally:
        assert daemon.stop(signum) == 0
    assert daemon.count("daemon_stopped") == 1
    assert not (tmp_path / "control.sock").exists()
    after = _stampd("--config", config, "status")
    assert "not running" in after.stdout


def test_run_starts_after_a_crash_left_a_stale_socket(tmp_path: Path) -> None:
    first = RunningDaemon(tmp_path).start()
    first.kill()  # kill -9: no cleanup, the socket file stays
    assert (tmp_path / "control.sock").exists()

    second = RunningDaemon(tmp_path).start()
    try:
        status = json.loads(_stampd("--config", str(second.config), "status", "--json").stdout)
        assert second.proc is not None
        assert status["daemon"]["pid"] == second.proc.pid
    finally:
        assert second.stop() == 0


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
