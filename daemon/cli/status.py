"""``stampd status``: the daemon's live state, and the index at a glance.

It works whether or not the daemon runs: it asks the daemon over the control socket and shows
its live state (health, queues, scans, inotify, TSAs: what the metrics export), says plainly
when it is not there, and then still shows the index (read-only), and exits 3.

Apart from ``ls`` and ``show`` (:mod:`.query`), and reading only the two settings it needs of
the configuration, so that it starts with little more than click, the control client and
SQLite (DESIGN §11: CLI start ≤ 100 ms over ``python -c pass``; bench/bench_cli.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option
from stampd.daemon.service import control_client
from stampd.store import kinds
from stampd.store.index.connection import index_path, open_reader
from stampd.store.index.summary import StatusSummary, status_summary
from stampd.store.index.times import utc_now

if TYPE_CHECKING:
    # Types only: the reply's TypedDicts cost each start ~1.5 ms to create.
    from stampd.daemon.service.replies import RunnerStatus, StatusReply


@contextmanager
def index_reader(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the index in ``state_dir``, closed on leaving."""
    conn = open_reader(index_path(state_dir))
    try:
        yield conn
    finally:
        conn.close()


class DaemonState(NamedTuple):
    """What the CLI knows of the daemon: its ``status`` reply, or why there is none.

    A NamedTuple rather than a frozen dataclass: it is built when ``status`` starts, and a
    dataclass compiles its generated methods at import (~0.6 ms of that start-up).
    """

    running: bool
    #: The daemon's live state, when it answered ``status``.
    status: StatusReply | None = None
    #: Why there is no live state: not reachable, or it answered with an error.
    reason: str | None = None
    #: The error reply, when the daemon answered with one.
    reply: object = None

    def to_json(self) -> dict[str, object]:
        """The ``daemon`` part of ``stampd status --json``: the reply, or the reason."""
        if self.status is not None:
            return {"running": True, **self.status}
        if not self.running:
            return {"running": False, "reason": self.reason}
        return {"running": True, "reason": self.reason, "reply": self.reply}


def daemon_state(control_socket: Path) -> DaemonState:
    """Ask the daemon at ``control_socket`` for its ``status``; what it said, or why not."""
    try:
        reply = control_client.request(control_socket, {"command": "status"}, timeout=2.0)
    except control_client.DaemonUnreachableError as error:
        return DaemonState(running=False, reason=error.message)
    if not isinstance(reply, dict) or not reply.get("ok"):
        return DaemonState(running=True, reason="the daemon answered with an error", reply=reply)
    status = {key: value for key, value in reply.items() if key != "ok"}
    return DaemonState(running=True, status=cast("StatusReply", status))


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {name}" for name, count in sorted(counts.items())) or "none"


@click.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Show the daemon, the watches, and counts of files, proofs and jobs.

    Exits 3 when the daemon is not reachable (the index part is shown all the same).
    """
    # Only where the state and the socket are: the rest of the file is not read (see
    # CliContext.locations); `stampd config check` validates it all.
    state_dir, control_socket = cli_context().locations()
    daemon = daemon_state(control_socket)
    path = index_path(state_dir)
    summary: StatusSummary | None = None
    if path.exists():
        with index_reader(state_dir) as conn:
            summary = status_summary(conn, now=utc_now())
    exit_code = ExitCode.OK if daemon.running else ExitCode.DAEMON_UNREACHABLE
    live = daemon.status

    if as_json:
        emit_json(
            {
                "daemon": daemon.to_json(),
                "index": {"path": str(path), "exists": summary is not None},
                "summary": summary.to_json() if summary else None,
            }
        )
        raise click.exceptions.Exit(exit_code)

    if daemon.running:
        pid, since = (live.get("pid"), live.get("started_at")) if live else (None, None)
        click.echo(f"daemon:   running, pid {pid}, since {since}")
        if live is not None:
            _echo_live(live)
    else:
        click.echo(f"daemon:   not running — {daemon.reason}")
    if summary is None:
        click.echo(f"index:    none yet at {path} — the daemon creates it when it first starts")
        raise click.exceptions.Exit(exit_code)
    click.echo(f"index:    {path}")
    click.echo(f"watches:  {len(summary.watches)}")
    roots = _root_problems(live)
    for watch in summary.watches:
        problem = f"  [{roots[watch.path]}]" if watch.path in roots else ""
        click.echo(f"  {watch.path}  ({_counts_text(watch.files)}){problem}")
    if summary.empty:
        click.echo("nothing recorded yet: no file has settled under a watch")
        raise click.exceptions.Exit(exit_code)
    click.echo(f"files:    {_counts_text(summary.files)}")
    last = f" (last recorded {summary.last_recorded_at})" if summary.last_recorded_at else ""
    click.echo(f"versions: {summary.versions:,}{last}")
    proofs = "; ".join(
        f"{kind} {_counts_text(by_status)}" for kind, by_status in sorted(summary.proofs.items())
    )
    click.echo(f"proofs:   {proofs or 'none yet'}")
    click.echo(f"jobs:     {_counts_text(summary.jobs)}")
    if summary.jobs_backing_off:
        click.echo(
            f"          {summary.jobs_backing_off:,} backing off after failures"
            f" ({_counts_text(summary.backoff_errors)}), next retry {summary.next_retry_at}"
            " — see `stampd providers`"
        )
    _echo_pending_anchors(summary)
    for kind in kinds.available():
        runner = _runner_status(live, kind.name) if live else None
        if runner is not None:
            resting = [
                p["name"] for p in runner.get("providers", []) if p.get("breaker") != "closed"
            ]
            rest = f"; resting: {', '.join(resting)}" if resting else ""
            click.echo(f"{kind.name + ':':<9} {runner.get('in_flight', 0)} in progress{rest}")
    raise click.exceptions.Exit(exit_code)


def _echo_pending_anchors(summary: StatusSummary) -> None:
    """One line per kind with proofs waiting for their anchor, and how long the oldest has."""
    for kind, pending in sorted(summary.pending_anchors.items()):
        if pending.count:
            age = pending.oldest_age_s
            waited = "" if age is None else f", the oldest waiting {_age(age)}"
            click.echo(
                f"anchors:  {pending.count:,} {kind} pending{waited}"
                f" (since {pending.oldest_at}) — `stampd upgrade` tries them now"
            )


def _age(seconds: int) -> str:
    """``3d 4h``, ``5h 12m``, ``7m``: how long a proof has waited, to the useful unit."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


def _runner_status(status: StatusReply, kind: str) -> RunnerStatus | None:
    """``replies.runner_status`` without importing the replies' TypedDicts at run time."""
    reply: Mapping[str, object] = status  # the per-kind keys are not among its fields
    entry = reply.get(kind)
    return cast("RunnerStatus", entry) if isinstance(entry, dict) else None


def _root_problems(live: StatusReply | None) -> dict[str, str]:
    """Watch root → what is wrong with it, as the running daemon sees it."""
    scans = live.get("scans", []) if live else []
    return {
        str(scan.get("root")): scan.get("problem") or "not watched"
        for scan in scans
        if isinstance(scan, dict) and not scan.get("ok", True)
    }


def _echo_live(daemon: StatusReply) -> None:
    """The daemon's own view, at a glance: the same figures the metrics export."""
    sent: Mapping[str, object] = daemon  # what the daemon sent, whatever its version
    if "healthy" not in sent:
        return  # an older daemon
    if daemon["healthy"]:
        click.echo("health:   ok")
    else:
        # One problem a line: a watch root's carries what to do, and may be long.
        first, *rest = daemon.get("problems") or ["(no reason given)"]
        click.echo(f"health:   UNHEALTHY — {first}")
        for problem in rest:
            click.echo(f"          {problem}")
        if daemon.get("watchdog_pinged"):
            click.echo(
                "          (systemd's watchdog is still pinged: restarting stampd would not"
                " fix this)"
            )
    if daemon.get("paused_since"):
        click.echo(f"paused:   since {daemon['paused_since']} (`stampd resume` continues)")
    click.echo(
        f"queues:   {daemon.get('settling', 0):,} settling, {daemon.get('hashing', 0):,} hashing,"
        f" {daemon.get('recording', 0):,} recording"
    )
    if daemon.get("scanning"):
        files = daemon.get("scan_files") or 0
        click.echo(f"scan:     {daemon['scanning']}: {files:,} files so far")
    directories = sum(scan.get("directories", 0) for scan in daemon.get("scans", []))
    watches = daemon.get("inotify_watches")
    inotify = f"{watches:,} watches" if watches is not None else "watches not counted yet"
    unwatched = daemon.get("unwatched_dirs", 0)
    lacking = f", {unwatched:,} directories without a watch" if unwatched else ""
    click.echo(
        f"inotify:  {inotify} for {directories:,} directories{lacking},"
        f" {daemon.get('inotify_overflows', 0)} overflows"
    )
    if daemon.get("metrics"):
        click.echo(f"metrics:  {daemon['metrics']}")
