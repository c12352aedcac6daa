"""``stampd status``, ``ls`` and ``show``: queries that read the index read-only.

They work whether or not the daemon runs; ``status`` also asks the daemon over the control
socket, shows its live state (health, queues, scans, inotify, TSAs: what the metrics export),
and says plainly when it is not there: it then still shows the index, and exits 3.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple, cast

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.cli.paths import argument_path, shown
from stampd.daemon.config.model import Config
from stampd.daemon.service import control_client
from stampd.daemon.service.replies import StatusReply, runner_status
from stampd.store import kinds
from stampd.store.errors import ErrorClass, StampdError
from stampd.store.index import queries
from stampd.store.index.connection import index_path, open_reader
from stampd.store.index.times import utc_now


@contextmanager
def index_reader(config: Config) -> Iterator[sqlite3.Connection]:
    conn = open_reader(index_path(config.daemon.state_dir))
    try:
        yield conn
    finally:
        conn.close()


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


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


def daemon_state(config: Config) -> DaemonState:
    """Ask the daemon for its ``status``; what it said, or why it did not."""
    try:
        reply = control_client.request(
            config.daemon.control_socket, {"command": "status"}, timeout=2.0
        )
    except control_client.DaemonUnreachableError as error:
        return DaemonState(running=False, reason=error.message)
    if not isinstance(reply, dict) or not reply.get("ok"):
        return DaemonState(running=True, reason="the daemon answered with an error", reply=reply)
    status = {key: value for key, value in reply.items() if key != "ok"}
    return DaemonState(running=True, status=cast(StatusReply, status))


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{count:,} {name}" for name, count in sorted(counts.items())) or "none"


@click.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Show the daemon, the watches, and counts of files, proofs and jobs.

    Exits 3 when the daemon is not reachable (the index part is shown all the same).
    """
    config = cli_context().config()
    daemon = daemon_state(config)
    path = index_path(config.daemon.state_dir)
    summary: queries.StatusSummary | None = None
    if path.exists():
        with index_reader(config) as conn:
            summary = queries.status_summary(conn, now=utc_now())
    exit_code = ExitCode.OK if daemon.running else ExitCode.DAEMON_UNREACHABLE
    live = daemon.status

    if as_json:
        emit_json(
            {
                "daemon": daemon.to_json(),
                "index": {"path": str(path), "exists": summary is not None},
                "summary": dataclasses.asdict(summary) if summary else None,
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
        runner = runner_status(live, kind.name) if live else None
        if runner is not None:
            resting = [
                p["name"] for p in runner.get("providers", []) if p.get("breaker") != "closed"
            ]
            rest = f"; resting: {', '.join(resting)}" if resting else ""
            click.echo(f"{kind.name + ':':<9} {runner.get('in_flight', 0)} in progress{rest}")
    raise click.exceptions.Exit(exit_code)


def _echo_pending_anchors(summary: queries.StatusSummary) -> None:
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


@click.command("ls")
@click.argument("path", required=False, type=click.Path())
@click.option("--limit", type=click.IntRange(min=1), help="List at most this many files.")
@json_option
def ls_command(path: str | None, limit: int | None, as_json: bool) -> None:
    """List recorded files at or under PATH (default: everything) with their evidence."""
    config = cli_context().config()
    prefix = argument_path(path) if path else None
    header = _stdout_is_terminal()
    with index_reader(config) as conn:
        rows = queries.list_files(conn, prefix, limit=limit)
        if as_json:
            emit_json({"files": [dataclasses.asdict(row) for row in rows]})
            return
        count = 0
        for row in rows:
            if count == 0 and header:
                # For a person only: a script reading the lines gets data from the first one.
                click.echo(_ls_line("STATE", "SIZE", "EVIDENCE", "PATH"))
            count += 1
            evidence = " ".join(f"{kind}:{status}" for kind, status in sorted(row.proofs.items()))
            if row.pending_jobs:
                evidence = f"{evidence} {row.pending_jobs} pending".strip()
            click.echo(_ls_line(row.state, _size(row.size), evidence or "-", row.path))
    if count == 0:
        where = f" under {shown(prefix)}" if prefix else ""
        say(f"nothing recorded{where} yet")


def _ls_line(state: str, size: str, evidence: str, path: str) -> str:
    return f"{state:<10} {size:>10}  {evidence:<24} {path}"


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


class NotIndexedError(StampdError):
    """A path the index has never recorded."""

    error_class = ErrorClass.NOT_INDEXED


@click.command("show")
@click.argument("path", type=click.Path())
@json_option
def show_command(path: str, as_json: bool) -> None:
    """Show every version of PATH with its proofs (and where each waits for its anchor),
    jobs and attempts."""
    config = cli_context().config()
    target = argument_path(path)
    with index_reader(config) as conn:
        detail = queries.file_detail(conn, target)
    if detail is None:
        # Exit 1 with one line, or with --json the {"error": ...} document (cli/app.py).
        raise NotIndexedError(
            f"{shown(target)} is not in the index",
            hint="it is not under a [[watch]], or has not settled yet;"
            " `stampd stamp PATH` records a watched file now",
        )
    if as_json:
        emit_json({"file": dataclasses.asdict(detail)})
        return
    click.echo(f"{detail.path}")
    click.echo(f"  watch:      {detail.watch}")
    click.echo(f"  state:      {detail.state}")
    if detail.problem:
        click.echo(f"  problem:    {detail.problem_class}: {detail.problem}")
    click.echo(f"  first seen: {detail.first_seen_at}")
    for version in detail.versions:
        marker = " (current)" if version.current else ""
        click.echo(
            f"  version {version.id}{marker}: {_size(version.size)}, hashed {version.hashed_at}"
        )
        click.echo(f"    sha256 {version.sha256}")
        click.echo(f"    sha512 {version.sha512}")
        for proof in version.proofs:
            when = f" at {proof.gen_time}" if proof.gen_time else ""
            by = f" by {proof.authority}" if proof.authority else ""
            click.echo(f"    proof {proof.kind} {proof.status} from {proof.provider}{when}{by}")
            # Where a pending proof waits: ask that calendar for that commitment by hand.
            for wait in proof.commitments:
                if wait.anchored_at is None:
                    state = f"pending {wait.recorded_at}"
                else:
                    state = f"anchored {wait.anchored_at}"
                click.echo(f"      calendar {wait.provider} commitment {wait.commitment} {state}")
        for job in version.jobs:
            error = f", last error {job.last_error_class}" if job.last_error_class else ""
            click.echo(f"    job {job.kind} {job.action}: {job.state}, {job.tries} tries{error}")
            for attempt in job.attempts:
                outcome = attempt.error_class or "ok"
                status = f" HTTP {attempt.http_status}" if attempt.http_status else ""
                click.echo(
                    f"      attempt {attempt.started_at} {attempt.provider}: {outcome}{status}"
                    + (f" — {attempt.message}" if attempt.message else "")
                )
