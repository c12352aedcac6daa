"""How the CLI talks: one JSON document on stdout with ``--json``, everything else on stderr.

Modelled on pip-audit: machine output never mixes with messages, and an error under
``--json`` is still a JSON document, so a script can always parse stdout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: ``ctx.meta`` key set by commands that were asked for JSON output.
JSON_META_KEY = "stampd.json"


def _json_default(value: object) -> object:
    # os.PathLike, not pathlib.Path: every command imports this module, and pathlib costs
    # `stampd --version` and `--help` ~5 ms to load (a Path is a PathLike; fspath is str(path)).
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_option(func: F) -> F:
    """Add ``--json`` to a query command and remember it for error reporting."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.meta[JSON_META_KEY] = True
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=remember,
        expose_value=True,
        is_eager=True,
        help="Print exactly one JSON document on stdout (messages go to stderr).",
    )(func)


def emit_json(document: object) -> None:
    """Write ``document`` as the one JSON document of this invocation."""
    # Imported here: `--version`, `--help` and a plain `digest` never print JSON (~1 ms).
    import json  # noqa: PLC0415

    click.echo(json.dumps(document, indent=2, default=_json_default, ensure_ascii=False))


def say(message: str) -> None:
    """A human message: stderr, so stdout stays clean for data."""
    click.echo(message, err=True)
