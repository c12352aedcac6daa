"""Commands that ask the running daemon to act: ``stamp``, ``rescan``, ``reload``, ``pause``,
``resume``. Each sends one request over the control socket (DESIGN §8).

When the daemon cannot be reached they say so in one line and exit 3; the query commands
(``status``, ``ls``, ``show``) go on working from the index.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from stampd.daemon import control
from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.cli.paths import argument_path, shown
from stampd.daemon.config import ConfigError
from stampd.daemon.config_problems import ConfigProblem
from stampd.store.errors import StampdError

#: Paths per ``stamp`` request: each reply comes after its files are hashed and recorded, so
#: a long list goes in batches and the terminal shows progress between them.
STAMP_BATCH = 50
#: Hashing a batch of large files takes a while; this only bounds a daemon that hangs.
STAMP_TIMEOUT_S = 600.0
#: A reload re-reads trust files and secrets; a few seconds at most.
RELOAD_TIMEOUT_S = 60.0


class DaemonRefusedError(StampdError):
    """The daemon answered, and said no."""

    error_class = "refused"

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "the daemon refused")), hint=error.get("hint"))
        #: The daemon's own class for it (``forbidden``, ``bad_request``, …).
        self.reply_class = str(error.get("error_class", "refused"))

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "error_class": self.reply_class}


def ask_daemon(payload: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Send one request; the reply without its ``ok``, or the daemon's error raised."""
    config = cli_context().config()
    reply = control.request(config.daemon.control_socket, payload, timeout=timeout)
    if not isinstance(reply, dict):
        raise control.DaemonUnreachableError(
            f"the daemon at {config.daemon.control_socket} sent an unexpected reply"
        )
    if not reply.get("ok"):
        error = reply.get("error")
        error = error if isinstance(error, dict) else {}
        if error.get("error_class") == "config":
            # The daemon's reply lists every problem ({key, value, problem, hint}), as
            # `config check` does; keep them for `stampd reload --json`.
            raise ConfigError(
                str(error.get("message")),
                hint=error.get("hint"),
                problems=[
                    ConfigProblem(
                        p.get("key"), p.get("value"), str(p.get("problem")), p.get("hint")
                    )
                    for p in error.get("problems") or []
                    if isinstance(p, dict)
                ],
            )
        raise DaemonRefusedError(error)
    return {key: value for key, value in reply.items() if key != "ok"}


@click.command("stamp")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@json_option
def stamp_command(paths: tuple[str, ...], as_json: bool) -> None:
    """Record PATHS now, without waiting for them to settle, and queue their evidence.

    For files you know are complete (the daemon otherwise waits for the watch's quiet period).
    Exits 1 if any path could not be recorded.
    """
    # The socket carries paths in their escaped form, as every path stampd prints.
    targets = [shown(argument_path(path)) for path in paths]
    results: list[dict[str, Any]] = []
    show_progress = not as_json and sys.stderr.isatty() and len(targets) > STAMP_BATCH
    for start in range(0, len(targets), STAMP_BATCH):
        batch = targets[start : start + STAMP_BATCH]
        reply = ask_daemon({"command": "stamp", "paths": batch}, timeout=STAMP_TIMEOUT_S)
        results.extend(reply["results"])
        if show_progress:
            click.echo(f"\rstamped {len(results):,} of {len(targets):,}", err=True, nl=False)
    if show_progress:
        click.echo(err=True)
    failed = [result for result in results if not result.get("recorded")]
    if as_json:
        emit_json({"results": results})
    else:
        for result in results:
            click.echo(_stamp_line(result))
    if failed:
        if not as_json:
            say(f"stampd: {len(failed)} of {len(results)} paths not recorded")
        raise click.exceptions.Exit(ExitCode.FAILURE)


def _stamp_line(result: dict[str, Any]) -> str:
    if not result.get("recorded"):
        error = result.get("error", {})
        hint = f" ({error['hint']})" if error.get("hint") else ""
        return f"refused    {result['path']}: {error.get('message')}{hint}"
    queued = ", ".join(result.get("queued") or []) or (
        "nothing (the watch records versions only)"
        if result.get("outcome") in ("new_file", "new_version")
        else "nothing new (same content as before)"
    )
    return (
        f"{result['outcome']:<10} {result['path']}: version {result['version_id']},"
        f" sha256 {result['sha256'][:16]}…, queued: {queued}"
    )


@click.command("rescan")
@click.argument("path", required=False, type=click.Path())
@json_option
def rescan_command(path: str | None, as_json: bool) -> None:
    """Walk the watches again (or only the one holding PATH) to find what inotify missed."""
    payload: dict[str, Any] = {"command": "rescan"}
    if path is not None:
        payload["path"] = shown(argument_path(path))
    reply = ask_daemon(payload)
    if as_json:
        emit_json(reply)
        return
    for root in reply["scans_requested"]:
        click.echo(f"rescan requested: {root}")
    for root in reply["roots_missing"]:
        click.echo(f"not scanned:      {root} (the directory does not exist)")
    if reply.get("paused"):
        say("stampd: the daemon is paused; the scan runs after `stampd resume`")


@click.command("reload")
@json_option
def reload_command(as_json: bool) -> None:
    """Re-read the configuration (as SIGHUP does) and wait for the result.

    A configuration the daemon refuses exits 2 with the reason; the old one stays in force.
    """
    reply = ask_daemon({"command": "reload"}, timeout=RELOAD_TIMEOUT_S)
    if as_json:
        emit_json(reply)
        return
    changes = reply["changes"]
    click.echo(f"reloaded {reply['config']}: {len(changes) or 'no'} changes")
    for change in changes:
        click.echo(f"  {change}")


@click.command("pause")
@json_option
def pause_command(as_json: bool) -> None:
    """Hold hashing, scans and stamping; watching goes on and nothing is lost.

    Until `stampd resume` or a restart.
    """
    reply = ask_daemon({"command": "pause"})
    if as_json:
        emit_json(reply)
        return
    click.echo(f"paused since {reply['since']}; `stampd resume` continues")


@click.command("resume")
@json_option
def resume_command(as_json: bool) -> None:
    """Continue after `stampd pause`."""
    reply = ask_daemon({"command": "resume"})
    if as_json:
        emit_json(reply)
        return
    was = reply.get("was_paused_since")
    click.echo(f"resumed (paused since {was})" if was else "not paused; nothing to do")
