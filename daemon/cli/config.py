"""``stampd config check``: validate the configuration and show what stampd will use."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.config.locate import config_path_from
from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.config.reader import config_to_dict
from stampd.daemon.service.scrub import scrub_url


@click.group("config")
def config_group() -> None:
    """Inspect the configuration file."""


@config_group.command("check")
@click.argument("file", required=False, metavar="[FILE]")
@json_option
@click.pass_context
def check_command(ctx: click.Context, file: str | None, as_json: bool) -> None:
    """Validate the configuration and print the effective settings.

    FILE overrides --config. Every check that `stampd run` makes before it starts is made
    (trust roots and secret files too), and every problem is listed, each on its own line
    naming its key; the exit code is 2 when the configuration is invalid. With --json, a
    failure is {"config", "ok": false, "problems": [{key, value, problem, hint}, ...]}.
    """
    # Imported here: the check loads the provider modules (httpx), which every other short
    # CLI call would otherwise pay for when this module is imported.
    from stampd.daemon.config.check import check_config  # noqa: PLC0415

    path = Path(file) if file is not None else config_file()
    try:
        checked = check_config(path)
    except ConfigError as error:
        if not as_json:
            raise  # the CLI's error path prints it, one line per problem, and exits 2
        emit_json(
            {
                "config": str(path.absolute()),
                "ok": False,
                "problems": [problem.to_dict() for problem in error.problems],
            }
        )
        say(f"stampd: {error}")
        ctx.exit(ExitCode.USAGE)
    config = checked.config
    effective = config_to_dict(config)
    for tsa in effective["timestamp"]["tsa"]:
        # A query string may carry an API key (DESIGN rule 7); the file itself still has it.
        tsa["url"] = scrub_url(tsa["url"])
    if as_json:
        emit_json({"config": str(config.source), "ok": True, "effective": effective})
    else:
        click.echo("\n".join(_toml_lines(effective)).lstrip("\n"))
    for warning in _warnings(config):
        say(f"warning: {warning}")
    for secret in checked.warnings:
        say(f"warning: {secret.line()}")
    say(f"configuration OK: {config.source}")


def config_file() -> Path:
    """The configuration file this invocation names: --config, $STAMPD_CONFIG, the default."""
    return config_path_from(cli_context().config_option, os.environ)


def _warnings(config: Config) -> Iterator[str]:
    """Settings that are valid but will not work as they are on this machine."""
    for index, watch in enumerate(config.watches):
        # Not an error: the directory may be created or mounted after the config is written.
        if not watch.path.is_dir():
            yield f"watch[{index}].path: {watch.path} is not a directory (yet)"
    if config.anchor.bitcoin is None and any("ots" in w.evidence for w in config.watches):
        yield UNCHECKED_ANCHORS


#: Why ``[anchor.bitcoin]`` matters (daemon/evidence/ots_judge.py): a calendar's upgrade is a
#: tree of ops that fits any message, so only the block header tells a real attestation from
#: one made for another commitment (reference/opentimestamps.md §5).
UNCHECKED_ANCHORS = (
    "anchor.bitcoin: not set: the Bitcoin attestations calendars return are recorded without"
    " checking them against the block header, so one made for another commitment would only"
    " show when `stampd verify` runs with a header source (set [anchor.bitcoin] to a bitcoind"
    " JSON-RPC URL; a pruned node is fine)"
)


def _toml_lines(table: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """``table`` as TOML: scalars first, then sub-tables and arrays of tables, in order."""
    nested = []
    for key, value in table.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value)
        ):
            nested.append((key, value))
        elif value is None:
            yield f"# {key} is not set"
        else:
            # JSON strings and arrays of strings are valid TOML as they are.
            yield f"{key} = {json.dumps(value, ensure_ascii=False)}"
    for key, value in nested:
        name = f"{prefix}{key}"
        for item in [value] if isinstance(value, Mapping) else value:
            header = f"[{name}]" if isinstance(value, Mapping) else f"[[{name}]]"
            yield ""
            yield header
            yield from _toml_lines(item, prefix=f"{name}.")
