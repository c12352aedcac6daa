"""`stampd run` as a subprocess: start-up, status over the control socket, clean stop."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_harness import STAMPD, RunningDaemon, sha256
from tests.runtime_configs import expected_stderr, write_case
from tests.tsa_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Run")


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
    config.write_text('[[watch]]\npath = "/srv"\nquiet = "2x"\nevidence = []\n')
    result = _stampd("--config", str(config), "run")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f'stampd: {config}: watch[0].quiet: "2x" is not a duration (try "2s")'
    ]


@pytest.mark.parametrize(
    "case",
    [
        "trust file holding a certificate and its key",
        "trust file holding only the TSA's leaf",
        "damaged PEM certificate",
        "empty secret file",
        "secret file that is not UTF-8",
        "a private key as trust and an empty secret",
    ],
)
def test_run_refuses_what_config_check_refuses_before_starting(
    tmp_path: Path, pki: Pki, case: str
) -> None:
    config, lines = write_case(tmp_path, pki, case)
    result = _stampd("--config", str(config), "run")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == expected_stderr(config, lines)
    assert result.stderr == _stampd("--config", str(config), "config", "check").stderr
    # Refused before anything started: no index, no socket.
    assert not (tmp_path / "state" / "index.sqlite").exists()
    assert not (tmp_path / "control.sock").exists()


def test_run_starts_with_only_inventory_watches_and_no_timestamp_section(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path, evidence="[]").start()
    try:
        assert "[timestamp]" not in daemon.config.read_text()
        record = daemon.watched / "inventory.txt"
        record.write_bytes(b"listed, not stamped\n")
        daemon.settle_until({record: b"listed, not stamped\n"})
        assert daemon.versions() == {str(record): [sha256(b"listed, not stamped\n")]}
        index = sqlite3.connect(f"{(daemon.state / 'index.sqlite').as_uri()}?mode=ro", uri=True)
        try:
            assert index.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
        finally:
            index.close()
    finally:
        assert daemon.stop() == 0
    assert not record.with_name("inventory.txt.tsr").exists()


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
    # The help promises what works today and names the rest as planned.
    summary = " ".join(helptext.stdout.split("Options:")[0].split())
    assert "RFC 3161 timestamp" in summary
    assert (
        "OpenTimestamps anchors, CAdES seals and RFC 4998 evidence records are planned" in summary
    )
    assert shutil.which("stampd", path=str(Path(STAMPD).parent))
