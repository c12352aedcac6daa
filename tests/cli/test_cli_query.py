"""`stampd status`, `ls`, `show` read the index read-only and say plainly when it is empty."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stampd.daemon.cli.app import cli
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.store.files.filestat import FileStat
from stampd.store.index import queries
from stampd.store.index.database import Index, index_path, open_reader
from tests.conftest import settled

STAMPD = str(Path(sys.executable).with_name("stampd"))


def _run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


@pytest.fixture
def config(make_config: Callable[..., Path]) -> Path:
    return make_config()


def _populate(config: Path) -> Path:
    state = config.parent / "state"
    state.mkdir(exist_ok=True)
    watched = config.parent / "watched"
    with Index.open(index_path(state)) as index:
        watch = index.ensure_watch(watched)
        for name, digest in (("a.pdf", "1"), ("sub/b.txt", "2")):
            index.record_settled(
                [settled(watch, watched / name, sha256=digest * 64, sha512=digest * 128, size=2048)]
            )
    return watched


def test_status_without_index_or_daemon(config: Path) -> None:
    result = _run(config, "status")
    assert result.exit_code == ExitCode.DAEMON_UNREACHABLE
    assert "daemon:   not running" in result.stdout
    assert "no control socket at" in result.stdout
    assert "index:    none yet at" in result.stdout


def test_status_json_without_index(config: Path) -> None:
    result = _run(config, "status", "--json")
    assert result.exit_code == ExitCode.DAEMON_UNREACHABLE
    document = json.loads(result.stdout)
    assert document["daemon"]["running"] is False
    assert document["index"]["exists"] is False
    assert document["summary"] is None


def test_status_on_an_empty_index(config: Path) -> None:
    (config.parent / "state").mkdir()
    with Index.open(index_path(config.parent / "state")):
        pass
    result = _run(config, "status")
    assert result.exit_code == ExitCode.DAEMON_UNREACHABLE
    assert "nothing recorded yet" in result.stdout


def test_status_counts(config: Path) -> None:
    _populate(config)
    result = _run(config, "status")
    assert result.exit_code == ExitCode.DAEMON_UNREACHABLE, result.output
    assert "files:    2 present" in result.stdout
    assert "versions: 2" in result.stdout
    assert "jobs:     2 pending" in result.stdout
    document = json.loads(_run(config, "status", "--json").stdout)
    assert document["summary"]["versions"] == 2
    assert document["summary"]["jobs"] == {"pending": 2}


def test_ls_lists_files_under_a_path(config: Path) -> None:
    watched = _populate(config)
    everything = _run(config, "ls")
    assert everything.exit_code == 0
    assert [line.split()[-1] for line in everything.stdout.splitlines()] == [
        str(watched / "a.pdf"),
        str(watched / "sub/b.txt"),
    ]
    assert "2.0 KiB" in everything.stdout
    sub = json.loads(_run(config, "ls", str(watched / "sub"), "--json").stdout)
    assert [row["path"] for row in sub["files"]] == [str(watched / "sub/b.txt")]
    assert sub["files"][0]["sha256"] == "2" * 64
    assert sub["files"][0]["pending_jobs"] == 1


def test_ls_with_nothing_recorded_says_so(config: Path) -> None:
    _populate(config)
    result = _run(config, "ls", "/nowhere")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "nothing recorded under /nowhere yet" in result.stderr


def test_ls_without_index_is_one_clear_line(config: Path) -> None:
    result = _run(config, "ls")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("stampd: no index at")
    assert "start the daemon" in result.stderr
    assert "Traceback" not in result.output


def test_ls_json_error_is_still_one_document(config: Path) -> None:
    result = _run(config, "ls", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["error_class"] == "index"


def test_show_versions_and_jobs(config: Path) -> None:
    watched = _populate(config)
    result = _run(config, "show", str(watched / "a.pdf"))
    assert result.exit_code == 0, result.output
    assert "version 1 (current)" in result.stdout
    assert f"sha256 {'1' * 64}" in result.stdout
    assert "job tsr obtain: pending, 0 tries" in result.stdout
    document = json.loads(_run(config, "show", str(watched / "a.pdf"), "--json").stdout)
    assert document["file"]["versions"][0]["sha512"] == "1" * 128


def test_show_unknown_path_exits_1(config: Path) -> None:
    _populate(config)
    result = _run(config, "show", "/nowhere/x")
    assert result.exit_code == 1
    assert "is not in the index" in result.stderr
    assert result.stderr.count("/nowhere/x") == 1
    as_json = _run(config, "show", "/nowhere/x", "--json")
    assert as_json.exit_code == 1
    error = json.loads(as_json.stdout)["error"]
    assert error["error_class"] == "not_indexed"
    assert error["message"] == "/nowhere/x is not in the index"
    assert "stampd stamp" in error["hint"]


def test_ls_runs_the_same_queries_for_two_rows_or_two_hundred(config: Path) -> None:
    watched = _populate(config)
    state = config.parent / "state"

    def statements(count: int) -> list[str]:
        with Index.open(index_path(state)) as index:
            watch = index.ensure_watch(watched)
            index.record_settled(
                [
                    settled(watch, watched / f"many/{n:04}", sha256=f"{n:064x}", sha512="e" * 128)
                    for n in range(count)
                ]
            )
        conn = open_reader(index_path(state))
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        try:
            listed = list(queries.list_files(conn, watched / "many"))
        finally:
            conn.close()
        assert len(listed) == count
        assert all(row.pending_jobs == 1 and row.versions == 1 for row in listed)
        return seen

    few = statements(2)
    shutil.rmtree(state)
    state.mkdir()
    many = statements(200)
    assert len(few) == len(many) == 1


def test_ls_pages_through_a_long_listing_in_order(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = _populate(config)
    with Index.open(index_path(config.parent / "state")) as index:
        watch = index.ensure_watch(watched)
        index.record_settled(
            [
                settled(watch, watched / f"p/{n:03}", sha256=f"{n:064x}", sha512="e" * 128)
                for n in range(25)
            ]
        )
    monkeypatch.setattr(queries, "LIST_PAGE", 4)
    conn = open_reader(index_path(config.parent / "state"))
    try:
        every = [row.path for row in queries.list_files(conn, None)]
        limited = [row.path for row in queries.list_files(conn, watched / "p", limit=9)]
    finally:
        conn.close()
    assert every == sorted(every) and len(every) == 27
    assert limited == [str(watched / f"p/{n:03}") for n in range(9)]


def test_ls_prints_a_header_row_on_a_terminal_only(config: Path) -> None:
    watched = _populate(config)
    piped = subprocess.run(
        [STAMPD, "--config", str(config), "ls"], capture_output=True, text=True, check=True
    )
    assert piped.stdout.splitlines()[0].startswith("present")
    leader, follower = pty.openpty()
    try:
        subprocess.run(
            [STAMPD, "--config", str(config), "ls"], stdout=follower, check=True, timeout=30
        )
        os.close(follower)
        output = b""
        with contextlib.suppress(OSError):  # EIO once the child side is closed
            while chunk := os.read(leader, 4096):
                output += chunk
    finally:
        os.close(leader)
    lines = output.decode().splitlines()
    assert lines[0].split() == ["STATE", "SIZE", "EVIDENCE", "PATH"]
    assert lines[1].split()[-1] == str(watched / "a.pdf")


def test_a_name_that_is_not_utf8_is_listed_escaped_and_taken_back(config: Path) -> None:
    watched = _populate(config)
    latin1 = watched / os.fsdecode(b"caf\xe9.txt")
    with Index.open(index_path(config.parent / "state")) as index:
        watch = index.ensure_watch(watched)
        index.record_settled([settled(watch, latin1, sha256="3" * 64, sha512="3" * 128)])
    escaped = f"{watched}/caf\\351.txt"
    listed = _run(config, "ls", str(watched))
    assert listed.exit_code == 0, listed.output
    assert any(line.endswith(f" {escaped}") for line in listed.stdout.splitlines())
    rows = json.loads(_run(config, "ls", "--json").stdout)["files"]
    assert escaped in [row["path"] for row in rows]
    # What was printed is accepted back: as the escaped text, and as the raw name.
    for argument in (escaped, str(latin1)):
        shown = _run(config, "show", argument, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["file"]["path"] == escaped


def test_a_bad_config_is_exit_2_and_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nstate_dir = 5\n")
    result = _run(bad, "status")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"stampd: {bad}")
    assert "daemon.state_dir" in result.stderr
    assert "Traceback" not in result.output


def test_ls_and_show_an_unreadable_file(config: Path) -> None:
    """A file that was never readable has a row without versions, and says why."""
    watched = _populate(config)
    locked = watched / "locked.pdf"
    with Index.open(index_path(config.parent / "state")) as index:
        index.record_unreadable(
            watch_id=index.ensure_watch(watched),
            path=locked,
            stat=FileStat(dev=3, ino=9, size=10, mtime_ns=1, ctime_ns=2),
            error_class="io",
            message="Permission denied",
        )
    listed = _run(config, "ls", str(locked))
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split() == ["unreadable", "-", "-", str(locked)]
    (row,) = json.loads(_run(config, "ls", str(locked), "--json").stdout)["files"]
    assert (row["state"], row["problem_class"], row["problem"]) == (
        "unreadable",
        "io",
        "Permission denied",
    )
    assert row["versions"] == 0 and row["sha256"] is None
    shown = _run(config, "show", str(locked))
    assert shown.exit_code == 0, shown.output
    assert "state:      unreadable" in shown.stdout
    assert "problem:    io: Permission denied" in shown.stdout
    status = _run(config, "status")
    assert "files:    2 present, 1 unreadable" in status.stdout
