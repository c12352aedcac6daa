"""`--config FILE` and `--debug` before or after the subcommand, for every command (DESIGN §8).

Operators type `stampd status --config F` as often as `stampd --config F status`; both work,
and when both are given the one after the subcommand wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from stampd.daemon.cli.app import StampdGroup, cli
from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode


def _invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    # Through list_commands/get_command: `stampd`'s commands are imported when first asked for.
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.fixture
def two_configs(tmp_path: Path, make_config: Callable[..., Path]) -> tuple[Path, Path]:
    """A valid configuration and, beside it, a missing one whose name shows who won."""
    return make_config(), tmp_path / "other.toml"


@pytest.mark.parametrize("where", ["before", "after", "group"])
def test_config_check_takes_config_anywhere(two_configs: tuple[Path, Path], where: str) -> None:
    config, _ = two_configs
    args = {
        "before": ["--config", str(config), "config", "check"],
        "after": ["config", "check", "--config", str(config)],
        "group": ["config", "--config", str(config), "check"],
    }[where]
    result = _invoke(*args, env={"STAMPD_CONFIG": "/nonexistent/config.toml"})
    assert result.exit_code == 0, result.output
    assert f"configuration OK: {config}" in result.stderr


@pytest.mark.parametrize(
    "command",
    [["config", "check"], ["status"], ["ls"], ["show", "/x"], ["providers"], ["stamp", "/x"]],
)
def test_the_option_after_the_subcommand_wins(
    two_configs: tuple[Path, Path], command: list[str]
) -> None:
    config, missing = two_configs
    after_wins = _invoke("--config", str(config), *command, "--config", str(missing))
    assert after_wins.exit_code == ExitCode.USAGE, after_wins.output
    assert f"{missing}: no such configuration file" in after_wins.stderr
    before_loses = _invoke("--config", str(missing), *command, "--config", str(config))
    assert f"{missing}" not in before_loses.output


def test_status_reads_the_index_of_the_config_given_after_it(
    make_config: Callable[..., Path],
) -> None:
    config = make_config()
    result = _invoke("status", "--json", "--config", str(config))
    assert result.exit_code == ExitCode.DAEMON_UNREACHABLE, result.output
    document = json.loads(result.stdout)
    assert document["index"]["path"].startswith(str(config.parent / "state"))


def test_options_between_the_arguments_of_a_command(make_config: Callable[..., Path]) -> None:
    config = make_config()
    result = _invoke("ls", "/nowhere", "--config", str(config), "--json")
    # No index yet under this config's state_dir: the error names it.
    assert result.exit_code == 1, result.output
    assert str(config.parent / "state") in result.stderr


def test_debug_after_the_subcommand_shows_the_traceback() -> None:
    group = StampdGroup("stampd")

    @click.command("boom")
    def boom() -> None:
        assert cli_context().config_option == "given-after.toml"
        raise RuntimeError("a bug")

    group.add_command(boom)
    quiet = CliRunner().invoke(group, ["boom", "--config", "given-after.toml"])
    assert quiet.exit_code == ExitCode.INTERNAL
    assert "internal error: RuntimeError: a bug (rerun with --debug" in quiet.stderr
    loud = CliRunner().invoke(group, ["boom", "--config", "given-after.toml", "--debug"])
    assert isinstance(loud.exception, RuntimeError)  # re-raised: the traceback is printed


@pytest.mark.parametrize("command", list(_commands(cli)))
def test_every_command_lists_the_global_options_in_its_help(command: tuple[str, ...]) -> None:
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--config FILE" in result.stdout
    assert "--debug" in result.stdout
