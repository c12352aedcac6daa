"""``stampd ls`` and ``show``: queries that read the index read-only (``status`` is
:mod:`.status`).

They work whether or not the daemon runs.
"""

from __future__ import annotations

import dataclasses
import sys

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.cli.paths import argument_path, shown
from stampd.daemon.cli.status import index_reader
from stampd.store.errors import ErrorClass, StampdError
from stampd.store.index import queries


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


@click.command("ls")
@click.argument("path", required=False, type=click.Path())
@click.option("--limit", type=click.IntRange(min=1), help="List at most this many files.")
@json_option
def ls_command(path: str | None, limit: int | None, as_json: bool) -> None:
    """List recorded files at or under PATH (default: everything) with their evidence."""
    # The whole configuration, validated: a bad file is reported here (exit 2), as by every
    # command but `status`, whose start-up is a goal (cli/status.py).
    state_dir = cli_context().config().daemon.state_dir
    prefix = argument_path(path) if path else None
    header = _stdout_is_terminal()
    with index_reader(state_dir) as conn:
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
    # The whole configuration, validated: a bad file is reported here (exit 2), as by every
    # command but `status`, whose start-up is a goal (cli/status.py).
    state_dir = cli_context().config().daemon.state_dir
    target = argument_path(path)
    with index_reader(state_dir) as conn:
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
