"""``stampd run``: the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import click

from stampd.daemon.cli.context import cli_context


@click.command("run")
def run_command() -> None:
    """Run the daemon in the foreground until SIGTERM or Ctrl-C."""
    # Imported here: the runtime (watchdog, the pipeline) is not needed by `status`, `ls` or
    # `digest`, and every short CLI call would otherwise pay for loading it.
    from stampd.daemon.logs import configure_logging  # noqa: PLC0415
    from stampd.daemon.service import run_daemon  # noqa: PLC0415

    state = cli_context()
    config = state.config()
    level = "debug" if state.debug else config.daemon.log_level
    configure_logging(log_format=config.daemon.log_format, level=level)
    run_daemon(config)
