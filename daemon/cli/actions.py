"""Commands that ask the running daemon to act: ``stamp``, ``rescan``, ``upgrade``, ``reload``,
``pause``, ``resume``. Each sends one request over the control socket (DESIGN §8).

When the daemon cannot be reached they say so in one line and exit 3; the query commands
(``status``, ``ls``, ``show``) go on working from the index.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.cli.paths import argument_path, shown
from stampd.daemon.config.problems import ConfigError, ConfigProblem
from stampd.daemon.service import control_client
from stampd.daemon.service.replies import (
    ControlError,
    PauseReply,
    ReloadReply,
    RescanReply,
    ResumeReply,
    StampRefusal,
    StampReply,
    StampResult,
    StatusReply,
    UpgradeReply,
)
from stampd.store.errors import ErrorClass, StampdError

#: Paths per ``stamp`` request: each reply comes after its files are hashed and recorded, so
#: a long list goes in batches and the terminal shows progress between them.
STAMP_BATCH = 50
#: Hashing a batch of large files takes a while; this only bounds a daemon that hangs.
STAMP_TIMEOUT_S = 600.0
#: A rescan waits for whole walks of the watches: bounded only against a daemon that hangs.
RESCAN_TIMEOUT_S = 24 * 3600.0
#: How often the progress line asks the daemon what it is walking.
PROGRESS_INTERVAL_S = 0.5
#: A reload re-reads trust files and secrets; a few seconds at most.
RELOAD_TIMEOUT_S = 60.0


class DaemonRefusedError(StampdError):
    """The daemon answered, and said no."""

    error_class = ErrorClass.REFUSED

    def __init__(self, error: ControlError) -> None:
        super().__init__(str(error.get("message", "the daemon refused")), hint=error.get("hint"))
        #: The daemon's own class for it (``forbidden``, ``bad_request``, …).
        self.reply_class = str(error.get("error_class", ErrorClass.REFUSED))

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "error_class": self.reply_class}


def ask_daemon(payload: dict[str, Any], *, timeout: float = 10.0) -> dict[str, object]:
    """Send one request; the reply without its ``ok``, or the daemon's error raised.

    The caller reads the reply as its command's type of daemon/service/replies.py.
    """
    config = cli_context().config()
    reply = control_client.request(config.daemon.control_socket, payload, timeout=timeout)
    if not isinstance(reply, dict):
        raise control_client.DaemonUnreachableError(
            f"the daemon at {config.daemon.control_socket} sent an unexpected reply"
        )
    if not reply.get("ok"):
        sent = reply.get("error")
        error = cast(ControlError, sent if isinstance(sent, dict) else {})
        if error.get("error_class") == ErrorClass.CONFIG:
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
    results: list[StampResult | StampRefusal] = []
    show_progress = not as_json and sys.stderr.isatty() and len(targets) > STAMP_BATCH
    for start in range(0, len(targets), STAMP_BATCH):
        batch = targets[start : start + STAMP_BATCH]
        reply = cast(
            StampReply, ask_daemon({"command": "stamp", "paths": batch}, timeout=STAMP_TIMEOUT_S)
        )
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


def _stamp_line(result: StampResult | StampRefusal) -> str:
    if not result["recorded"]:
        error = result["error"]
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
@click.option(
    "--no-wait", is_flag=True, help="Only ask for the scans; do not wait for what they find."
)
@json_option
def rescan_command(path: str | None, no_wait: bool, as_json: bool) -> None:
    """Walk the watches again (or only the one holding PATH) to find what inotify missed.

    Also checks that every stamped file's sidecars are in place and hold its proofs: a
    sidecar deleted or overwritten is written again from the archive, and one left behind by
    a rename is moved to the archive. Waits for the walks and the repairs, then says what
    they found (progress on a terminal).
    """
    payload: dict[str, Any] = {"command": "rescan", "wait": not no_wait}
    if path is not None:
        payload["path"] = shown(argument_path(path))
    if no_wait or as_json or not sys.stderr.isatty():
        reply = cast(RescanReply, ask_daemon(payload, timeout=RESCAN_TIMEOUT_S))
    else:
        with _scan_progress():
            reply = cast(RescanReply, ask_daemon(payload, timeout=RESCAN_TIMEOUT_S))
    if as_json:
        emit_json(reply)
        return
    if not reply.get("waited"):
        for root in reply["scans_requested"]:
            click.echo(f"rescan requested: {root}")
    for scan in reply.get("scans", []):
        changed = f"{scan['candidates']:,} new or changed, {scan['missing']:,} gone"
        problem = f"; {scan['problem']}" if scan.get("problem") else ""
        click.echo(
            f"rescanned {scan['root']}: {scan['files']:,} files in {scan['directories']:,}"
            f" directories ({changed}) in {scan['seconds']:.1f} s{problem}"
        )
    sidecars = reply.get("sidecars")
    if sidecars is not None:
        click.echo(
            f"sidecars: {sidecars['repaired']:,} repaired ({sidecars['written']:,} written from"
            f" the archive, {sidecars['adopted']:,} adopted, {sidecars['retired']:,} left by"
            " renames moved to the archive)"
            + (
                f"; {sidecars['problems']:,} could not be repaired, see the log"
                if sidecars["problems"]
                else ""
            )
        )
    for root in reply["roots_missing"]:
        click.echo(f"not scanned: {root} (the directory does not exist)")
    if reply.get("paused"):
        say("stampd: the daemon is paused; the scan runs after `stampd resume`")


@contextmanager
def _scan_progress() -> Iterator[None]:
    """While the rescan runs, show on stderr what the daemon is walking (its ``status``)."""
    socket_path = cli_context().config().daemon.control_socket
    done = threading.Event()

    def show() -> None:
        while not done.wait(PROGRESS_INTERVAL_S):
            try:
                status = control_client.request(socket_path, {"command": "status"}, timeout=2.0)
            except StampdError:
                continue
            if not isinstance(status, dict):
                continue
            live = cast(StatusReply, status)
            if live.get("scanning"):
                files = live.get("scan_files") or 0
                click.echo(f"\rscanning {live['scanning']}: {files:,} files", err=True, nl=False)

    thread = threading.Thread(target=show, name="stampd-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        click.echo("\r\033[K", err=True, nl=False)  # clear the progress line


@click.command("upgrade")
@click.argument("paths", metavar="[PATH]...", nargs=-1, type=click.Path())
@json_option
def upgrade_command(paths: tuple[str, ...], as_json: bool) -> None:
    """Try every pending upgrade now (or those of the files at or under PATHs).

    A pending proof (an .ots whose Bitcoin block is not confirmed yet) is upgraded on a
    back-off of up to upgrade_max; this makes those jobs due at once and wakes the daemon.
    `stampd status` and `stampd show PATH` then tell how it went.
    """
    payload: dict[str, Any] = {"command": "upgrade"}
    if paths:
        payload["paths"] = [shown(argument_path(path)) for path in paths]
    reply = cast(UpgradeReply, ask_daemon(payload))
    if as_json:
        emit_json(reply)
        return
    made, already = reply["made_due"], reply["already_due"]
    where = "" if reply["paths"] is None else f" of {', '.join(reply['paths'])}"
    if made + already == 0:
        click.echo(f"no pending upgrades{where}: nothing to do")
        return
    jobs = "job" if made == 1 else "jobs"
    also = f" ({already:,} due already)" if already else ""
    click.echo(f"{made:,} pending upgrade {jobs}{where} made due now{also}")
    if reply["paused"]:
        say("stampd: the daemon is paused; the upgrades run after `stampd resume`")
    elif not reply["running"]:
        say(
            "stampd: no evidence kind with upgrades runs in this configuration (a watch with"
            ' evidence = ["ots"]): the jobs wait until it does'
        )


@click.command("reload")
@json_option
def reload_command(as_json: bool) -> None:
    """Re-read the configuration (as SIGHUP does) and wait for the result.

    A configuration the daemon refuses exits 2 with the reason; the old one stays in force.
    """
    reply = cast(ReloadReply, ask_daemon({"command": "reload"}, timeout=RELOAD_TIMEOUT_S))
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
    reply = cast(PauseReply, ask_daemon({"command": "pause"}))
    if as_json:
        emit_json(reply)
        return
    click.echo(f"paused since {reply['since']}; `stampd resume` continues")


@click.command("resume")
@json_option
def resume_command(as_json: bool) -> None:
    """Continue after `stampd pause`."""
    reply = cast(ResumeReply, ask_daemon({"command": "resume"}))
    if as_json:
        emit_json(reply)
        return
    was = reply.get("was_paused_since")
    click.echo(f"resumed (paused since {was})" if was else "not paused; nothing to do")
