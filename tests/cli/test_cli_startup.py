"""The CLI starts with what its command needs and nothing else (issue 13, DESIGN §11).

Start-up is part of every command's run time: `stampd --version`, `digest` of a small file
and `status` must start well under 100 ms over `python -c pass` (bench/bench_cli.py measures
it). Timing is never asserted here (DESIGN §10); what is checked is *what gets imported*,
which is what the time is made of: asyncio, httpx, X.509, structlog, sqlite-utils,
Prometheus and the daemon's runtime each cost milliseconds to tens of milliseconds, and a
module-level import of one of them anywhere on a command's path brings the cost back.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from stampd.daemon.cli.app import COMMANDS
from tests.daemon_harness import RunningDaemon
from tests.tsa_pki import make_pki

#: Loaded by no short command: the daemon's runtime and the libraries only it (or `verify`,
#: `run`, the metrics) needs.
HEAVY = (
    "asyncio",
    "httpx",
    "cryptography",
    "asn1crypto",
    "structlog",
    "sqlite_utils",
    "prometheus_client",
    "watchdog",
    "stampd.daemon.service.control",
    "stampd.daemon.service.lifecycle",
    "stampd.daemon.service.logs",
    "stampd.daemon.watch",
    "stampd.daemon.evidence.runner",
    "stampd.store.index.database",
)

#: Not loaded by `stampd status` either: it reads two settings of the configuration (the file
#: is not validated as a whole: no model, no section parsers), asks the daemon over the bare
#: `_socket` (not `socket`, whose enums cost), and reads the index summary without the read
#: models of `ls` and `show`.
STATUS_SKIPS = (
    "difflib",
    "decimal",
    "socket",
    "selectors",
    "stampd.daemon.config.model",
    "stampd.daemon.config.reader",
    "stampd.daemon.config.sections",
    "stampd.daemon.config.anchor",
    "stampd.daemon.config.durations",
    "stampd.daemon.config.problems",
    "stampd.daemon.evidence",
    "stampd.daemon.service.replies",
    "stampd.store.index.queries",
    "stampd.store.index.scan_rows",
    "stampd.store.index.commitments",
    "stampd.store.verify",
)

#: Runs `stampd ARGS…` in this interpreter, then writes the names of the loaded modules as
#: JSON to the file named by $STAMPD_TEST_MODULES (stdout and stderr stay the command's).
_PROBE = """
import json, os, sys
# Unloaded first (site's editable-install finder loads it): is it loaded again by the command?
for name in os.environ.get("STAMPD_TEST_UNLOAD", "").split():
    sys.modules.pop(name, None)
from stampd.daemon.cli import main
sys.argv = ["stampd", *sys.argv[1:]]
try:
    main()
except SystemExit as done:
    code = done.code
else:
    code = 0
with open(os.environ["STAMPD_TEST_MODULES"], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""


def _run(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`stampd ARGS…` in a fresh interpreter: its result, and every module it loaded."""
    modules = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "STAMPD_TEST_MODULES": str(modules), **env},
    )
    return done, set(json.loads(modules.read_text()))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (a package counts with its submodules) are among ``modules``."""
    return sorted(
        name for name in names if any(m == name or m.startswith(name + ".") for m in modules)
    )


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["--help"], ["config", "--help"]])
def test_version_and_help_load_no_command(tmp_path: Path, args: list[str]) -> None:
    done, modules = _run(tmp_path, *args, STAMPD_TEST_UNLOAD="pathlib")
    assert done.returncode == 0, done.stderr
    assert _loaded(modules, HEAVY) == []
    # pathlib costs ~16M instructions to load; cli/output.py does without it (the config
    # group's module reads paths).
    assert ("pathlib" in modules) == ("config" in args)
    # --help lists every command from COMMANDS, without importing a single one of them.
    commands = {target.target.partition(":")[0] for target in COMMANDS.values()}
    assert sorted(commands & modules) == (["stampd.daemon.cli.config"] if "config" in args else [])


def test_digest_of_a_small_file_loads_neither_the_daemon_nor_the_index(tmp_path: Path) -> None:
    data = tmp_path / "small.txt"
    data.write_bytes(b"hello\n")
    done, modules = _run(tmp_path, "digest", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    )
    extra = ("sqlite3", "stampd.daemon.config", "stampd.daemon.service", "stampd.store.index")
    assert _loaded(modules, HEAVY + extra) == []


def test_status_without_a_daemon_loads_only_the_client_and_the_reader(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path)  # its configuration only: nothing is started
    done, modules = _run(tmp_path, "--config", str(daemon.config), "status", "--json")
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["daemon"]["running"] is False
    assert _loaded(modules, HEAVY + STATUS_SKIPS) == []
    assert "stampd.daemon.service.control_client" in modules


def test_status_of_a_running_daemon_loads_only_the_client_and_the_reader(tmp_path: Path) -> None:
    (tmp_path / "watched").mkdir()
    (tmp_path / "watched" / "a.txt").write_bytes(b"a")
    daemon = RunningDaemon(tmp_path).start()
    try:
        daemon.wait_event("versions_committed")
        text, text_modules = _run(tmp_path, "--config", str(daemon.config), "status")
        as_json, json_modules = _run(tmp_path, "--config", str(daemon.config), "status", "--json")
    finally:
        daemon.stop()
    assert text.returncode == 0, text.stderr
    assert "daemon:   running" in text.stdout
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["daemon"]["running"] is True
    assert document["summary"]["versions"] == 1
    assert _loaded(text_modules | json_modules, HEAVY + STATUS_SKIPS) == []


def test_the_command_table_gives_each_command_its_own_one_line_help() -> None:
    """COMMANDS keeps each command's short help so that `--help` needs no import; it must
    say what the command's docstring says, or the listing drifts from the commands."""
    for name, entry in COMMANDS.items():
        module, _, attribute = entry.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        assert command.name == name
        # No limit: the first sentence of the docstring, as click derives it.
        assert entry.help == command.get_short_help_str(limit=10**6), name


_EAGER = """
import sys
import click
from stampd.daemon.cli.app import cli
context = click.Context(cli)
for name in cli.list_commands(context):
    cli.get_command(context, name)
assert not cli.lazy_commands
sys.argv = ["stampd", "--help"]
cli.main(prog_name="stampd")
"""


@pytest.mark.parametrize("columns", ["60", "80", "200"])
def test_help_from_the_table_is_the_help_of_the_loaded_commands(
    tmp_path: Path, columns: str
) -> None:
    """Byte for byte what click prints with every command imported, at any width (click
    shortens each line to fit, and must shorten the table's text the same way)."""
    lazy, _modules = _run(tmp_path, "--help", COLUMNS=columns)
    eager = subprocess.run(
        [sys.executable, "-c", _EAGER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": columns},
    )
    assert lazy.returncode == eager.returncode == 0, lazy.stderr + eager.stderr
    assert "Commands:" in lazy.stdout
    for name in COMMANDS:
        assert f"\n  {name} " in lazy.stdout
    assert lazy.stdout == eager.stdout


def test_providers_loads_no_logging_to_scrub_urls(tmp_path: Path) -> None:
    """`providers` prints TSA URLs scrubbed of secrets (daemon/service/scrub.py), without the
    logging module that scrubs them in the logs (structlog and asyncio: ~30 ms)."""
    daemon = RunningDaemon(tmp_path)  # its configuration only: nothing is started
    done, modules = _run(tmp_path, "--config", str(daemon.config), "providers", "--json")
    assert done.returncode == 0, done.stderr
    assert "providers" in json.loads(done.stdout)
    assert _loaded(modules, HEAVY) == []


def test_config_check_of_a_tsr_configuration_loads_no_http_client(tmp_path: Path) -> None:
    # The check reads the TSA's trust file and secret (X.509 is needed) but sends nothing:
    # httpx and the provider's TSP code (~130 ms to import) wait for `run` to build a client.
    pki = make_pki(tmp_path / "pki", "Check")
    secret = tmp_path / "tsa.secret"
    secret.write_text("s3cr3t\n")
    secret.chmod(0o600)
    (tmp_path / "watched").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[watch]]
path = "{tmp_path / "watched"}"
evidence = ["tsr"]

[[timestamp.tsa]]
name = "lan"
url = "http://127.0.0.1:9/"
trust = "{pki.root_pem}"
auth = "basic"
username = "stampd"
secret_file = "{secret}"
"""
    )
    done, modules = _run(tmp_path, "--config", str(config), "config", "check")
    assert done.returncode == 0, done.stderr
    assert "cryptography.x509" in modules  # the trust file was read
    unneeded = ("httpx", "httpcore", "stampd.daemon.evidence.tsa", "stampd.store.formats.tsp")
    assert _loaded(modules, unneeded) == []
