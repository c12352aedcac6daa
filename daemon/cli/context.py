"""What every ``stampd`` command shares: the global options and the configuration, loaded once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import click

from stampd.daemon.config import Config, config_path_from, load_config


@dataclass
class CliContext:
    """Global options of one ``stampd`` invocation."""

    config_option: str | None
    debug: bool
    _config: Config | None = field(default=None, init=False, repr=False)

    def config(self) -> Config:
        """The configuration named by ``--config`` / ``STAMPD_CONFIG`` / the default path."""
        if self._config is None:
            self._config = load_config(config_path_from(self.config_option, os.environ))
        return self._config


def cli_context() -> CliContext:
    """The :class:`CliContext` of the running command."""
    ctx = click.get_current_context()
    found = ctx.find_object(CliContext)
    if found is None:  # only when a command is invoked outside the `stampd` group
        found = CliContext(config_option=None, debug=False)
        ctx.obj = found
    return found
