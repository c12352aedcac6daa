"""`stampd status` reads two settings of the configuration (daemon/config/locate.py): they must
be the paths the full reader gives the daemon, and a bad one is still a configuration error."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from stampd.daemon.cli.app import cli
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.config.locate import Locations, load_locations
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.config.reader import load_config

_WATCH = '[[watch]]\npath = "/srv/records"\nevidence = []\n'


@pytest.mark.parametrize(
    "daemon",
    [
        "",  # no [daemon] table: both defaults
        "[daemon]\n",
        '[daemon]\nstate_dir = "state"\n',  # relative to the file's directory
        '[daemon]\nstate_dir = "/var/lib/x/../y"\ncontrol_socket = "sock/../c.sock"\n',
        '[daemon]\ncontrol_socket = "/run/other.sock"\nlog_level = "debug"\n',
    ],
)
def test_the_two_paths_are_those_of_the_full_reader(tmp_path: Path, daemon: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(daemon + _WATCH)
    settings = load_config(path).daemon
    assert load_locations(path) == Locations(settings.state_dir, settings.control_socket)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[daemon]\nstate_dir = 5\n", "daemon.state_dir"),
        ('[daemon]\ncontrol_socket = ""\n', "daemon.control_socket"),
        ("daemon = 3\n", "daemon"),
        ("[[daemon]]\n", "daemon"),
    ],
)
def test_a_bad_path_is_a_config_error_naming_its_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text + _WATCH)
    with pytest.raises(ConfigError) as raised:
        load_locations(path)
    assert [problem.key for problem in raised.value.problems] == [key]
    assert str(raised.value).startswith(f"{path}: {key}: ")


def test_an_unreadable_file_is_the_full_readers_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as light:
        load_locations(missing)
    with pytest.raises(ConfigError) as full:
        load_config(missing)
    assert light.value.to_dict() == full.value.to_dict()
    broken = tmp_path / "broken.toml"
    broken.write_text("[daemon\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_locations(broken)


def test_status_shows_the_index_of_a_file_bad_elsewhere_and_ls_refuses_it(tmp_path: Path) -> None:
    """A setting `status` does not read does not stop it (the daemon, `config check` and
    every other command report it); `ls` validates the whole file."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "state"\ncontrol_socket = "{tmp_path}/c.sock"\n'
        '[[watch]]\npath = "/srv/records"\nquiet = "2x"\n'
    )
    status = CliRunner().invoke(cli, ["--config", str(path), "status"])
    assert status.exit_code == ExitCode.DAEMON_UNREACHABLE, status.output
    assert f"index:    none yet at {tmp_path / 'state'}" in status.stdout
    listing = CliRunner().invoke(cli, ["--config", str(path), "ls"])
    assert listing.exit_code == ExitCode.USAGE
    assert "watch[0].quiet" in listing.stderr
