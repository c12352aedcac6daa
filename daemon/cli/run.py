"""``stampd run``: the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import click

from stampd.daemon.cli.config import config_file
from stampd.daemon.cli.context import cli_context


@click.command("run")
def run_command() -> None:
    """Run the daemon in the foreground until SIGTERM or Ctrl-C.

    The configuration is checked first as `stampd config check` does, trust roots and secret
    files included: a bad one is refused with every problem listed (exit 2) before the index
    or the control socket is created.
    """
    # Imported here: the runtime (watchdog, the pipeline) is not needed by `status`, `ls` or
    # `digest`, and every short CLI call would otherwise pay for loading it.
    from stampd.daemon.config.check import check_config  # noqa: PLC0415
    from stampd.daemon.service.lifecycle import run_daemon  # noqa: PLC0415
    from stampd.daemon.service.logs import configure_logging  # noqa: PLC0415

    state = cli_context()
    # The daemon reads the TSAs' files again when it builds them (a few milliseconds, even for
    # the whole system bundle), and logs a world-readable secret then.
    config = check_config(config_file()).config
    level = "debug" if state.debug else config.daemon.log_level
    configure_logging(log_format=config.daemon.log_format, level=level)
    run_daemon(config)
