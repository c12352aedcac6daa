"""What every ``stampd`` command shares: the global options and the configuration, loaded once.

``--config FILE`` and ``--debug`` are accepted before and after the subcommand (DESIGN §8):
``stampd --config F status`` and ``stampd status --config F`` mean the same. Both places carry
the same two options (:func:`add_global_options`), whose callbacks store into the one
:class:`CliContext`; the group's options are parsed first, so the ones given after the
subcommand win.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from stampd.daemon.config.locate import Locations
    from stampd.daemon.config.model import Config

CONFIG_HELP = "Configuration file (default: $STAMPD_CONFIG, else /etc/stampd/config.toml)."
DEBUG_HELP = "Show tracebacks and debug logging."


class CliContext:
    """Global options of one ``stampd`` invocation.

    A plain class rather than a dataclass: a dataclass compiles its generated methods when
    the module is imported (~0.6 ms here), which every `stampd` call would pay.
    """

    def __init__(self, config_option: str | None = None, debug: bool = False) -> None:
        self.config_option = config_option
        self.debug = debug
        self._config: Config | None = None
        self._locations: Locations | None = None

    def config(self) -> Config:
        """The configuration named by ``--config`` / ``STAMPD_CONFIG`` / the default path."""
        if self._config is None:
            # Imported on first use: `stampd digest` and `verify --tsr` never read a
            # configuration, and the reader costs every start ~17 ms.
            from stampd.daemon.config.locate import config_path_from  # noqa: PLC0415
            from stampd.daemon.config.reader import load_config  # noqa: PLC0415

            self._config = load_config(config_path_from(self.config_option, os.environ))
        return self._config

    def locations(self) -> Locations:
        """Where that configuration's daemon keeps its state and its control socket: all that
        ``status`` reads of it, without validating the rest of the file
        (:mod:`stampd.daemon.config.locate`; a third of its start-up, DESIGN §11)."""
        if self._locations is None:
            from stampd.daemon.config.locate import (  # noqa: PLC0415
                Locations,
                config_path_from,
                load_locations,
            )

            if self._config is not None:
                daemon = self._config.daemon
                self._locations = Locations(daemon.state_dir, daemon.control_socket)
            else:
                self._locations = load_locations(config_path_from(self.config_option, os.environ))
        return self._locations

    def use_config_file(self, value: str) -> None:
        """Take ``--config FILE``; a later one replaces an earlier one."""
        self.config_option = value
        self._config = None
        self._locations = None


def cli_context() -> CliContext:
    """The :class:`CliContext` of the running command."""
    # ensure_object looks up the parents first; a command invoked on its own (outside the
    # `stampd` group) gets a fresh context with the defaults.
    return click.get_current_context().ensure_object(CliContext)


def _store_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliContext).use_config_file(value)


def _store_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # A flag cannot be switched off again: `stampd --debug status` keeps debugging.
    if value:
        ctx.ensure_object(CliContext).debug = True


def global_options() -> list[click.Parameter]:
    """Fresh ``--config`` and ``--debug`` options; they store into the :class:`CliContext`.

    ``expose_value=False``: no command receives them as arguments, so adding them to a
    command changes nothing in its signature.
    """
    return [
        click.Option(
            ["--config"],
            metavar="FILE",
            help=CONFIG_HELP,
            expose_value=False,
            callback=_store_config,
        ),
        click.Option(
            ["--debug"],
            is_flag=True,
            help=DEBUG_HELP,
            expose_value=False,
            callback=_store_debug,
        ),
    ]


def add_global_options(command: click.Command) -> None:
    """Give ``command`` — and, for a group, each command in it — ``--config`` and ``--debug``."""
    if not any("--config" in param.opts for param in command.params):
        command.params.extend(global_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)
