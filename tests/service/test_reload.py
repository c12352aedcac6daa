"""Reloading the configuration: SIGHUP and `stampd reload` apply a good file in place and
refuse a bad one, keeping the old configuration and every queued job."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.config.reader import load_config
from stampd.daemon.evidence.pool import BREAKER_THRESHOLD
from stampd.daemon.service import control
from stampd.daemon.service import lifecycle as service
from stampd.daemon.service.reload import diff_configs
from tests.daemon_harness import RunningDaemon, wait_for
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki


def _watch(path: Path, extra: str = "") -> str:
    return f'[[watch]]\npath = "{path}"\nevidence = []\nquiet = "0.3s"\n{extra}'


def _rewrite(daemon: RunningDaemon, watches: str, daemon_extra: str = "") -> None:
    daemon.config.write_text(
        "[daemon]\n"
        f'state_dir = "{daemon.state}"\n'
        f'control_socket = "{daemon.tmp / "control.sock"}"\n'
        'log_format = "json"\n'
        'log_level = "debug"\n' + daemon_extra + watches
    )


def _recorded(daemon: RunningDaemon, path: Path) -> bool:
    return str(path) in daemon.versions()


def test_sighup_with_a_broken_configuration_keeps_the_old_one(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path).start()
    try:
        good = daemon.config.read_text()
        daemon.config.write_text(good.replace('quiet = "0.3s"', 'quiet = "soon"'))
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_event("reload_refused")
        refused = next(e for e in daemon.events if e.get("event") == "reload_refused")
        assert 'watch[0].quiet: "soon"' in refused["reason"]
        assert refused["trigger"] == "SIGHUP"
        # Still running, still on the old configuration: a file settles and is recorded.
        (daemon.watched / "after.txt").write_text("still recorded\n")
        wait_for(lambda: _recorded(daemon, daemon.watched / "after.txt"), 15, "the file")
        # (Asked over the socket: the CLI itself would now stop at the broken file.)
        status = control.request(daemon.tmp / "control.sock", {"command": "status"})
        assert status["reloads"] == 0
    finally:
        assert daemon.stop() == 0


def test_sighup_with_a_good_configuration_starts_a_new_watch(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path).start()
    second = tmp_path / "second"
    second.mkdir()
    (second / "was-there.txt").write_text("found by the new watch's first scan\n")
    try:
        _rewrite(daemon, _watch(daemon.watched) + _watch(second))
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_event("config_reloaded")
        reloaded = next(e for e in daemon.events if e.get("event") == "config_reloaded")
        assert reloaded["changes"] == [f"watch added: {second}"]
        (second / "new.txt").write_text("seen by inotify on the new watch\n")
        for path in (second / "was-there.txt", second / "new.txt"):
            wait_for(lambda p=path: _recorded(daemon, p), 15, str(path))  # type: ignore[misc]

        # And away again: the old watch's files stop being recorded, the history stays.
        _rewrite(daemon, _watch(second))
        result = daemon.cli("reload")
        assert result.returncode == 0, result.stderr
        assert f"watch removed: {daemon.watched}" in result.stdout
        (daemon.watched / "unwatched.txt").write_text("nobody looks here now\n")
        (second / "still.txt").write_text("still watched\n")
        wait_for(lambda: _recorded(daemon, second / "still.txt"), 15, "still.txt")
        assert not _recorded(daemon, daemon.watched / "unwatched.txt")
    finally:
        assert daemon.stop() == 0


def test_reload_command_refuses_with_exit_2_and_the_reason(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path).start()
    try:
        good = daemon.config.read_text()
        daemon.config.write_text(good + '[timestamp]\nselection = "fastest"\n')
        refused = daemon.cli("reload")
        assert refused.returncode == ExitCode.USAGE
        assert 'timestamp.selection: "fastest" must be one of' in refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr  # one line
        assert control.request(daemon.tmp / "control.sock", {"command": "status"})["reloads"] == 0

        # A setting only a restart can change is refused too, naming it.
        daemon.config.write_text(good.replace(str(daemon.state), str(tmp_path / "elsewhere")))
        moved = daemon.cli("reload", "--json")
        assert moved.returncode == ExitCode.USAGE
        assert "daemon.state_dir: the index is open there" in moved.stderr
        assert '"error_class": "config"' in moved.stdout
        # The daemon's problems reach the script as a list, as `config check --json` gives.
        [problem] = json.loads(moved.stdout)["error"]["problems"]
        assert "daemon.state_dir: the index is open there" in problem["problem"]

        daemon.config.write_text(good.replace('quiet = "0.3s"', 'quiet = "0.5s"'))
        applied = daemon.cli("reload")
        assert applied.returncode == 0, applied.stderr
        assert f"watch changed: {daemon.watched} (quiet)" in applied.stdout
        assert daemon.cli("reload").stdout.startswith(f"reloaded {daemon.config}: no changes")
    finally:
        assert daemon.stop() == 0
    refusals = [e for e in daemon.events if e.get("event") == "reload_refused"]
    # The invalid file was refused by the CLI itself, before it asked the daemon; the
    # restart-only change passed the CLI's check and was refused by the daemon.
    assert [e["trigger"] for e in refusals] == ["control"]
    assert "daemon.state_dir" in refusals[0]["reason"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Reload")


@pytest.fixture
def working_tsa(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as tsa:
        yield tsa


def _tsa_section(name: str, url: str, pki: Pki) -> str:
    return (
        "[timestamp]\n"
        'timeout = "1s"\nretry = "300ms"\nretry_max = "500ms"\n'
        f'[[timestamp.tsa]]\nname = "{name}"\nurl = "{url}"\ntrust = "{pki.root_pem}"\n'
    )


def test_queued_jobs_survive_a_reload_that_changes_the_tsas(
    tmp_path: Path, pki: Pki, working_tsa: FakeTsa
) -> None:
    # Port 9 (discard) refuses connections: every job fails and waits for its next round.
    daemon = RunningDaemon(
        tmp_path, evidence='["tsr"]', extra=_tsa_section("down", "http://127.0.0.1:9/", pki)
    ).start()
    files = [daemon.watched / f"record-{n}.txt" for n in range(5)]
    try:
        for n, path in enumerate(files):
            path.write_text(f"record {n}\n")

        def failed_once() -> bool:
            return _job_states(daemon) == {"pending": 5} and _tries(daemon) >= 5

        wait_for(failed_once, 20, "5 jobs that failed at least once")
        text = daemon.config.read_text()
        daemon.config.write_text(
            text[: text.index("[timestamp]")] + _tsa_section("local", working_tsa.url, pki)
        )
        result = daemon.cli("reload")
        assert result.returncode == 0, result.stderr
        assert "timestamp: settings or TSAs changed" in result.stdout
        wait_for(lambda: _job_states(daemon) == {"done": 5}, 30, "every queued job done")
    finally:
        assert daemon.stop() == 0
    assert working_tsa.requests == 5
    assert all(path.with_name(path.name + ".tsr").exists() for path in files)


def test_a_reload_the_daemon_refuses_lists_every_problem_with_its_key(
    tmp_path: Path, pki: Pki, working_tsa: FakeTsa
) -> None:
    daemon = RunningDaemon(
        tmp_path, evidence='["tsr"]', extra=_tsa_section("local", working_tsa.url, pki)
    ).start()
    try:
        # Valid TOML the CLI accepts; the daemon finds, building the TSAs, that both trust
        # files hold a private key instead of a root.
        key = tmp_path / "key.pem"
        key.write_bytes(_private_key_pem())
        text = daemon.config.read_text()
        daemon.config.write_text(
            text[: text.index("[timestamp]")]
            + "[timestamp]\n"
            + "".join(
                f'[[timestamp.tsa]]\nname = "t{n}"\nurl = "{working_tsa.url}"\ntrust = "{key}"\n'
                for n in range(2)
            )
        )
        refused = daemon.cli("reload", "--json")
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        problems = json.loads(refused.stdout)["error"]["problems"]
        assert [p["key"] for p in problems] == ["timestamp.tsa[0].trust", "timestamp.tsa[1].trust"]
        assert all("private key" in p["problem"] for p in problems)
    finally:
        assert daemon.stop() == 0


def test_a_reload_refuses_what_a_restart_would_even_for_an_unused_tsa(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path).start()  # inventory only: no watch asks for tsr
    try:
        key = tmp_path / "key.pem"
        key.write_bytes(_private_key_pem())
        daemon.config.write_text(
            daemon.config.read_text()
            + f'[[timestamp.tsa]]\nname = "t"\nurl = "http://127.0.0.1:9/"\ntrust = "{key}"\n'
        )
        assert daemon.cli("config", "check").returncode == ExitCode.USAGE
        refused = daemon.cli("reload")
        assert refused.returncode == ExitCode.USAGE
        assert "timestamp.tsa[0].trust" in refused.stderr
    finally:
        assert daemon.stop() == 0


def _private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _job_states(daemon: RunningDaemon) -> dict[str, int]:
    conn = sqlite3.connect(f"{(daemon.state / 'index.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    finally:
        conn.close()


def _tries(daemon: RunningDaemon) -> int:
    conn = sqlite3.connect(f"{(daemon.state / 'index.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COALESCE(SUM(tries > 0), 0) FROM jobs").fetchone()[0])
    finally:
        conn.close()


# --- the TSAs' state across a reload ---------------------------------------------------------


def _tsas(pki: Pki, *tsas: tuple[str, str], selection: str = "priority") -> str:
    """A [timestamp] section; a long cooldown, so that a rest cannot end during a test."""
    text = (
        f'[timestamp]\nselection = "{selection}"\ntimeout = "2s"\ncooldown = "5m"\n'
        'retry = "300ms"\nretry_max = "500ms"\n'
    )
    for name, url in tsas:
        text += f'[[timestamp.tsa]]\nname = "{name}"\nurl = "{url}"\ntrust = "{pki.root_pem}"\n'
    return text


def _tsr_watch(path: Path, quiet: str) -> str:
    return f'[[watch]]\npath = "{path}"\nevidence = ["tsr"]\nquiet = "{quiet}"\n'


def _providers(daemon: RunningDaemon) -> dict[str, dict[str, Any]]:
    """Each TSA's live state as `stampd status --json` shows it."""
    result = daemon.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    live = json.loads(result.stdout)["daemon"]["tsr"]["providers"]
    return {provider["name"]: provider for provider in live}


def _reload(daemon: RunningDaemon) -> str:
    result = daemon.cli("reload")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_reload_keeps_each_unchanged_tsas_breaker_and_resets_a_changed_one(
    tmp_path: Path, pki: Pki, working_tsa: FakeTsa
) -> None:
    with FakeTsa(pki, mode="status_500") as bad:
        tsas = (("bad", bad.url), ("good", working_tsa.url))
        daemon = RunningDaemon(tmp_path, evidence='["tsr"]', extra=_tsas(pki, *tsas)).start()
        try:
            for number in range(BREAKER_THRESHOLD):
                (daemon.watched / f"record-{number}.txt").write_text(f"record {number}\n")
            done = {"done": BREAKER_THRESHOLD}
            wait_for(lambda: _job_states(daemon) == done, 30, "every job done", daemon)
            before = _providers(daemon)
            assert before["bad"]["breaker"] == "open"

            _rewrite(daemon, _tsr_watch(daemon.watched, "0.5s") + _tsas(pki, *tsas))
            assert f"watch changed: {daemon.watched} (quiet)" in _reload(daemon)
            kept = _providers(daemon)
            assert kept["bad"]["breaker"] == "open"
            assert 0 < kept["bad"]["resting_s"] <= before["bad"]["resting_s"]
            counts = ("attempts", "failures", "consecutive_failures", "last_error_class")
            assert [kept["bad"][key] for key in counts] == [*[BREAKER_THRESHOLD] * 3, "http_status"]
            assert kept["good"]["attempts"] == BREAKER_THRESHOLD
            assert kept["good"]["last_success_at"] == before["good"]["last_success_at"]

            # Another URL is another TSA: it starts afresh, and only it.
            moved = (("bad", bad.url + "/v2"), ("good", working_tsa.url))
            _rewrite(daemon, _tsr_watch(daemon.watched, "0.5s") + _tsas(pki, *moved))
            assert "timestamp: settings or TSAs changed" in _reload(daemon)
            fresh = _providers(daemon)
            assert (fresh["bad"]["breaker"], fresh["bad"]["attempts"]) == ("closed", 0)
            assert fresh["good"]["attempts"] == BREAKER_THRESHOLD
        finally:
            assert daemon.stop() == 0
        assert bad.requests == BREAKER_THRESHOLD


def test_a_reload_keeps_the_round_robin_cursor(
    tmp_path: Path, pki: Pki, working_tsa: FakeTsa
) -> None:
    with FakeTsa(pki) as other:
        tsas = (("a", working_tsa.url), ("b", other.url))
        section = _tsas(pki, *tsas, selection="round-robin")
        daemon = RunningDaemon(tmp_path, evidence='["tsr"]', extra=section).start()
        try:
            (daemon.watched / "first.txt").write_text("first\n")
            wait_for(lambda: _job_states(daemon) == {"done": 1}, 30, "the first job", daemon)
            assert (working_tsa.requests, other.requests) == (1, 0)
            _rewrite(daemon, _tsr_watch(daemon.watched, "0.5s") + section)
            _reload(daemon)
            (daemon.watched / "second.txt").write_text("second\n")
            wait_for(lambda: _job_states(daemon) == {"done": 2}, 30, "the second job", daemon)
        finally:
            assert daemon.stop() == 0
        # The next TSA in turn, not the first one again.
        assert (working_tsa.requests, other.requests) == (1, 1)


def test_the_recorders_job_callback_wakes_the_runner_of_now(
    tmp_path: Path, pki: Pki, working_tsa: FakeTsa
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    path = tmp_path / "config.toml"

    def write(evidence: str) -> None:
        path.write_text(
            f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
            f'control_socket = "{tmp_path / "control.sock"}"\n'
            f'[[watch]]\npath = "{watched}"\nevidence = {evidence}\n'
            + _tsas(pki, ("local", working_tsa.url))
        )

    async def main() -> None:
        write('["tsr"]')
        daemon = service.Daemon(load_config(path))
        task = asyncio.create_task(daemon.run())
        while "stamping" not in daemon._components and not task.done():
            await asyncio.sleep(0.01)
        try:
            stopped = daemon._runners.runner("tsr")
            assert stopped is not None
            write("[]")  # no watch asks for tsr: the runner stops
            await daemon.reload("test")
            assert daemon._runners.runner("tsr") is None
            on_jobs = daemon._recorder.on_jobs
            assert on_jobs is not None
            stopped._wake.clear()
            on_jobs()
            assert not stopped._wake.is_set()  # the recorder no longer reaches the old runner
            write('["tsr"]')
            await daemon.reload("test")
            current = daemon._runners.runner("tsr")
            assert current is not None and current is not stopped
            current._wake.clear()
            on_jobs = daemon._recorder.on_jobs
            assert on_jobs is not None
            on_jobs()
            assert current._wake.is_set()
        finally:
            daemon.request_stop("test")
            await task

    asyncio.run(main())


# --- the decision alone ---------------------------------------------------------------------


def test_diff_names_each_change(make_config: object, tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    base = tmp_path / "a.toml"
    base.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "s"}"\n' + _watch(watched) + _watch(tmp_path / "b")
    )
    old = load_config(base)
    changed = tmp_path / "c.toml"
    changed.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "s"}"\nlog_level = "debug"\n'
        + _watch(watched, 'exclude = ["*.log"]\n')
        + _watch(tmp_path / "c")
    )
    diff = diff_configs(old, load_config(changed))
    assert diff.restart_only == ()
    assert diff.describe() == [
        f"watch added: {tmp_path / 'c'}",
        f"watch removed: {tmp_path / 'b'}",
        f"watch changed: {watched} (exclude)",
        "daemon.log_level changed",
    ]
    same = diff_configs(old, dataclasses.replace(old))
    assert same.empty
    moved = dataclasses.replace(
        old, daemon=dataclasses.replace(old.daemon, control_socket=tmp_path / "x.sock")
    )
    assert diff_configs(old, moved).restart_only == (
        "daemon.control_socket: the socket is bound there",
    )


def test_a_changed_anchor_section_is_named_by_the_reload(
    make_config: Any,
) -> None:
    """[anchor] configures the ots strategy, rebuilt from the new file on a reload: the log
    and the `reload` reply name it (the kinds' sections come from store/kinds.py)."""
    path = make_config('[anchor]\ncalendars = ["http://127.0.0.1:9/"]\nmin_replies = 1\n')
    before = load_config(path)
    path.write_text(path.read_text().replace("min_replies = 1", 'min_replies = 1\ntimeout = "9s"'))
    after = load_config(path)
    diff = diff_configs(before, after)
    assert diff.sections_changed == ("anchor",)
    assert diff.describe() == ["anchor: calendars or settings changed"]
    assert diff_configs(after, after).empty
