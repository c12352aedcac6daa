"""`stampd stamp`, `rescan`, `pause`, `resume` against a running daemon, and every control
command when no daemon runs (one line, exit 3; queries still answer from the index)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from stampd.daemon.cli.exit_codes import ExitCode
from tests.daemon_harness import STAMPD, RunningDaemon, sha256, wait_for


def test_stamp_records_at_once_without_waiting_for_the_quiet_period(tmp_path: Path) -> None:
    # An hour of quiet: nothing would settle by itself during this test.
    daemon = RunningDaemon(tmp_path, quiet="1h").start()
    report = daemon.watched / "report.pdf"
    content = b"%PDF final\n"
    report.write_bytes(content)
    try:
        result = daemon.cli("stamp", str(report))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"new_file   {report}: version ")
        assert f"sha256 {sha256(content)[:16]}" in result.stdout
        # An inventory-only watch (evidence = []) records the version and queues nothing.
        assert result.stdout.endswith("queued: nothing (the watch records versions only)\n")
        assert daemon.versions() == {str(report): [sha256(content)]}

        # The same content again: recorded already, nothing new queued.
        again = json.loads(daemon.cli("stamp", "--json", str(report)).stdout)
        (only,) = again["results"]
        assert (only["recorded"], only["outcome"], only["queued"]) == (True, "unchanged", [])

        # A relative path means the caller's directory, as for any command.
        report.write_bytes(b"%PDF final, v2\n")
        relative = daemon.cli("stamp", "report.pdf", cwd=daemon.watched)
        assert relative.returncode == 0, relative.stderr
        assert daemon.versions()[str(report)][-1] == sha256(b"%PDF final, v2\n")
    finally:
        assert daemon.stop() == 0


def test_stamp_refuses_what_it_cannot_record_and_records_the_rest(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path, quiet="1h", extra='exclude = ["**/*.log"]\n').start()
    good = daemon.watched / "good.txt"
    good.write_text("fine\n")
    (daemon.watched / "debug.log").write_text("excluded\n")
    (daemon.watched / "dir").mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("not watched\n")
    (daemon.watched / "link.txt").symlink_to(good)
    (daemon.watched / "draft.part").write_text("named by the operator: stamped\n")
    try:
        result = daemon.cli(
            "stamp",
            str(good),
            str(daemon.watched / "debug.log"),
            str(outside),
            str(daemon.watched / "absent.txt"),
            str(daemon.watched / "dir"),
            str(daemon.watched / "link.txt"),
            str(daemon.watched / "good.txt.tsr"),
            str(daemon.watched / "draft.part"),
            "--json",
        )
    finally:
        daemon.stop()
    assert result.returncode == ExitCode.FAILURE
    results = {Path(r["path"]).name: r for r in json.loads(result.stdout)["results"]}
    assert results["good.txt"]["recorded"] is True
    assert results["draft.part"]["recorded"] is True
    classes = {name: r["error"]["error_class"] for name, r in results.items() if not r["recorded"]}
    assert classes == {
        "debug.log": "excluded",
        "outside.txt": "not_watched",
        "absent.txt": "not_found",
        "dir": "skipped",
        "link.txt": "skipped",
        "good.txt.tsr": "sidecar",
    }
    assert "a symbolic link" in results["link.txt"]["error"]["message"]
    sidecar = results["good.txt.tsr"]["error"]
    assert sidecar["message"] == (
        f"{good}.tsr is a sidecar: the proof stampd keeps for {good}, not a file to stamp"
    )
    assert sidecar["hint"].startswith(f"stamp {good} itself")
    assert sorted(daemon.versions()) == sorted([str(good), str(daemon.watched / "draft.part")])


def test_pause_holds_work_and_resume_catches_up(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path, quiet="0.2s").start()
    try:
        paused = daemon.cli("pause")
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith("paused since ")
        held = daemon.watched / "held.txt"
        held.write_text("written while paused\n")
        time.sleep(1.5)  # seven quiet periods: it would be recorded by now
        assert str(held) not in daemon.versions()
        status = daemon.cli("status")
        assert "paused:   since" in status.stdout
        rescan = daemon.cli("rescan")
        assert "runs after `stampd resume`" in rescan.stderr
        resumed = daemon.cli("resume")
        assert resumed.stdout.startswith("resumed (paused since ")
        wait_for(lambda: str(held) in daemon.versions(), 15, "the held file")
        assert daemon.cli("resume").stdout.startswith("not paused")
    finally:
        assert daemon.stop() == 0
    assert daemon.count("daemon_paused") == 1
    assert daemon.count("daemon_resumed") == 1


def test_rescan_walks_the_watch_again(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path).start()
    try:
        daemon.wait_event("scan_finished")
        (daemon.watched / "new.txt").write_text("found by the walk\n")
        result = daemon.cli("rescan", str(daemon.watched / "any" / "path"))
        assert result.returncode == 0, result.stderr
        # It waits for the walk and says what it found (the file above may already have been
        # recorded from its inotify events: new or unchanged, it is counted once).
        assert result.stdout.startswith(f"rescanned {daemon.watched}: 1 files in 1 directories")
        assert "sidecars: 0 repaired" in result.stdout
        assert daemon.count("scan_finished") >= 2
        asked = daemon.cli("rescan", "--no-wait")
        assert asked.stdout == f"rescan requested: {daemon.watched}\n"
        outside = daemon.cli("rescan", str(tmp_path / "elsewhere"))
        assert outside.returncode == ExitCode.FAILURE
        assert "is not under a watch" in outside.stderr
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "args",
    [("stamp", "x.txt"), ("rescan",), ("reload",), ("pause",), ("resume",)],
)
def test_commands_say_in_one_line_that_the_daemon_is_unreachable(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    daemon = RunningDaemon(tmp_path)  # configured, never started
    result = daemon.cli(*args)
    assert result.returncode == ExitCode.DAEMON_UNREACHABLE
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "the daemon is not running (no control socket at" in result.stderr
    as_json = daemon.cli(*args, "--json")
    assert json.loads(as_json.stdout)["error"]["error_class"] == "daemon_unreachable"


def test_queries_keep_working_from_the_index_while_the_daemon_is_down(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path).start()
    (daemon.watched / "kept.txt").write_text("recorded before the stop\n")
    wait_for(lambda: bool(daemon.versions()), 15, "a version")
    daemon.stop()
    status = daemon.cli("status")
    assert status.returncode == ExitCode.DAEMON_UNREACHABLE
    assert "daemon:   not running" in status.stdout
    assert "versions: 1" in status.stdout
    listing = daemon.cli("ls")
    assert listing.returncode == 0
    assert "kept.txt" in listing.stdout


def test_a_reader_that_goes_away_is_not_an_internal_error(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path)  # `stampd status | head -1`, the reader already gone
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [STAMPD, "--config", str(daemon.config), "status"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert "internal error" not in result.stderr
    assert "Traceback" not in result.stderr
