"""``stampd providers``: each TSA's health, from the index and (if it runs) the daemon.

The index holds every attempt ever made, so counts survive restarts; the circuit breaker
lives in the running daemon, so its state is shown only when the daemon answers.
"""

from __future__ import annotations

import dataclasses

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.cli.status import daemon_state, index_reader
from stampd.daemon.service.replies import ProviderStatus, runner_status
from stampd.daemon.service.scrub import scrub_url
from stampd.store.index import queries
from stampd.store.index.connection import index_path
from stampd.store.kinds import EvidenceKind


@click.command("providers")
@json_option
def providers_command(as_json: bool) -> None:
    """Show each TSA's health: attempts, failures by class, breaker state, last success."""
    config = cli_context().config()
    stats: dict[str, queries.ProviderStats] = {}
    if index_path(config.daemon.state_dir).exists():
        with index_reader(config.daemon.state_dir) as conn:
            stats = queries.provider_stats(conn)
    daemon = daemon_state(config.daemon.control_socket)
    tsr = runner_status(daemon.status, EvidenceKind.TSR) if daemon.status else None
    live: dict[str, ProviderStatus] = {}
    if tsr is not None:
        live = {p["name"]: p for p in tsr.get("providers", [])}

    configured = [tsa.name for tsa in config.timestamp.tsa]
    names = configured + sorted(set(stats) - set(configured))
    # Without query string or userinfo: where API keys hide (DESIGN rule 7).
    urls = {tsa.name: scrub_url(tsa.url) for tsa in config.timestamp.tsa}
    entries = []
    for name in names:
        stat = stats.get(name)
        state = live.get(name)
        entries.append(
            {
                "name": name,
                "url": urls.get(name),
                "configured": name in urls,
                "breaker": state["breaker"] if state else None,
                "resting_s": state["resting_s"] if state else None,
                **(
                    dataclasses.asdict(stat)
                    if stat
                    else {
                        "attempts": 0,
                        "failures": {},
                        "last_success_at": None,
                        "last_failure_at": None,
                        "mean_latency_ms": None,
                    }
                ),
            }
        )
    if as_json:
        emit_json({"daemon_running": daemon.running, "providers": entries})
        return
    if not entries:
        say("no TSA configured ([[timestamp.tsa]]) and none ever tried")
        return
    if not daemon.running:
        say(f"daemon not running ({daemon.reason}): breaker states unknown")
    for entry in entries:
        breaker = entry["breaker"] or "-"
        if breaker == "open":
            breaker = f"open, resting {entry['resting_s']:.0f} s"
        where = entry["url"] or "no longer configured"
        click.echo(f"{entry['name']}  {where}")
        failures = sum(entry["failures"].values())
        by_class = ", ".join(f"{n} {c}" for c, n in sorted(entry["failures"].items()))
        click.echo(
            f"  attempts {entry['attempts']:,}, failures {failures:,}"
            + (f" ({by_class})" if by_class else "")
        )
        latency = entry["mean_latency_ms"]
        click.echo(
            f"  breaker {breaker}; last success {entry['last_success_at'] or 'never'}"
            + (f" (mean {latency:.0f} ms)" if latency is not None else "")
            + (f"; last failure {entry['last_failure_at']}" if entry["last_failure_at"] else "")
        )
