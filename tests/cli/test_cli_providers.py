"""`stampd providers`: each TSA's record from the attempts table, with or without the daemon."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from stampd.daemon.cli.app import cli
from stampd.store.index.database import Index, index_path
from stampd.store.index.jobs import Attempt, NewProof, complete_job, fail_job
from tests.conftest import settled

TSAS = (
    '[[timestamp.tsa]]\nname = "first"\nurl = "http://127.0.0.1:9/a"\n'
    '[[timestamp.tsa]]\nname = "second"\nurl = "http://127.0.0.1:9/b"\n'
)


def _run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def _attempts(config: Path) -> None:
    """Two jobs: one failed at `first` (timeout, then 503), one done by `second`
    after `first` answered garbage; plus an attempt at a TSA no longer configured."""
    state = config.parent / "state"
    state.mkdir(exist_ok=True)
    with Index.open(index_path(state)) as index:
        watch = index.ensure_watch(config.parent / "watched")
        recorded = index.record_settled(
            [
                settled(
                    watch,
                    config.parent / "watched" / n,
                    sha256=d * 64,
                    sha512=d * 128,
                    evidence=("tsr",),
                )
                for n, d in (("a", "1"), ("b", "2"))
            ]
        )
        job_a, job_b = recorded[0].job_ids[0], recorded[1].job_ids[0]
        fail_job(
            index,
            job_id=job_a,
            attempts=[
                Attempt("first", "2026-11-22T10:00:00.000000Z", 1000.0, "timeout"),
                Attempt("first", "2026-11-22T10:01:00.000000Z", 12.0, "http_status", 503),
                Attempt("retired", "2026-11-22T10:02:00.000000Z", 9.0, "network"),
            ],
            error_class="http_status",
            message="first: http_status",
            next_try_at="2026-11-22T11:00:00.000000Z",
        )
        complete_job(
            index,
            job_id=job_b,
            version_id=recorded[1].version_id,
            proof=NewProof("tsr", "second", "sha256", "2" * 64, None, None, None, None, "f" * 64),
            attempts=[
                Attempt("first", "2026-11-22T10:03:00.000000Z", 5.0, "parse", 200),
                Attempt("second", "2026-11-22T10:04:00.000000Z", 40.0, None, 200),
                Attempt("second", "2026-11-22T10:05:00.000000Z", 60.0, None, 200),
            ],
        )


def test_providers_without_an_index_lists_the_configured_tsas(
    make_config: Callable[..., Path],
) -> None:
    config = make_config(TSAS)
    result = _run(config, "providers", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["daemon_running"] is False
    assert [(p["name"], p["attempts"], p["breaker"]) for p in document["providers"]] == [
        ("first", 0, None),
        ("second", 0, None),
    ]


def test_providers_counts_attempts_and_failures_by_class(
    make_config: Callable[..., Path],
) -> None:
    config = make_config(TSAS)
    _attempts(config)
    document = json.loads(_run(config, "providers", "--json").stdout)
    by_name = {p["name"]: p for p in document["providers"]}
    assert list(by_name) == ["first", "second", "retired"]
    assert by_name["first"]["attempts"] == 3
    assert by_name["first"]["failures"] == {"timeout": 1, "http_status": 1, "parse": 1}
    assert by_name["first"]["last_success_at"] is None
    assert by_name["first"]["last_failure_at"] == "2026-11-22T10:03:00.000000Z"
    assert by_name["second"]["failures"] == {}
    assert by_name["second"]["last_success_at"] == "2026-11-22T10:05:00.000000Z"
    assert by_name["second"]["mean_latency_ms"] == 50.0
    assert by_name["retired"]["configured"] is False


def test_providers_text(make_config: Callable[..., Path]) -> None:
    config = make_config(TSAS)
    _attempts(config)
    result = _run(config, "providers")
    assert result.exit_code == 0
    assert "breaker states unknown" in result.stderr
    assert "attempts 3, failures 3 (1 http_status, 1 parse, 1 timeout)" in result.stdout
    assert "last success never" in result.stdout
    assert "last success 2026-11-22T10:05:00.000000Z (mean 50 ms)" in result.stdout
    assert "retired  no longer configured" in result.stdout


def test_show_lists_the_attempts_of_each_job(make_config: Callable[..., Path]) -> None:
    config = make_config(TSAS)
    _attempts(config)
    result = _run(config, "show", str(config.parent / "watched" / "a"))
    assert result.exit_code == 0, result.output
    assert "job tsr obtain: pending, 1 tries, last error http_status" in result.stdout
    assert "first: timeout" in result.stdout
    assert "first: http_status HTTP 503" in result.stdout
