"""``stampd config check``: validate the configuration and show what stampd will use."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.config import Config, config_to_dict, load_config
from stampd.daemon.logs import scrub_url


@click.group("config")
def config_group() -> None:
    """Inspect the configuration file."""


@config_group.command("check")
@click.argument("file", required=False, metavar="[FILE]")
@json_option
def check_command(file: str | None, as_json: bool) -> None:
    """Validate the configuration and print the effective settings.

    FILE overrides --config. Every problem of the file is listed, each naming its key;
    the exit code is 2 when the configuration is invalid.
    """
    config = load_config(Path(file)) if file is not None else cli_context().config()
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
    say(f"configuration OK: {config.source}")


def _warnings(config: Config) -> Iterator[str]:
    """Settings that are valid but will not work as they are on this machine."""
    for index, watch in enumerate(config.watches):
        # Not an error: the directory may be created or mounted after the config is written.
        if not watch.path.is_dir():
            yield f"watch[{index}].path: {watch.path} is not a directory (yet)"


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
