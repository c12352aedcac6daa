"""The Prometheus export: real HTTP over loopback, a real index, scraped and parsed."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from stampd.daemon.service.metrics import Metrics
from stampd.daemon.service.metrics_families import LiveState, RootState
from stampd.daemon.service.metrics_http import MetricsError, MetricsServer
from stampd.store.index.counts import metric_counts
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import Attempt, NewProof, cancel_job, complete_job, fail_job
from stampd.store.index.schema import JOB_STATES
from stampd.store.index.times import format_time
from tests.conftest import settled

ROOT = "/srv/records"
OTHER_ROOT = "/srv/scans"
#: The scrape's "now" (the injected clock): the index's not_after values are relative to it.
NOW = datetime(2030, 1, 1, tzinfo=UTC)
FILES = {name: f"{ROOT}/invoice-{name}.pdf" for name in "abcde"}
TIMEOUT_MESSAGE = "alpha timed out after 10s at http://tsa.example/secret-path"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _live(**changes: object) -> LiveState:
    values: dict[str, object] = {
        "roots": (
            RootState(ROOT, True, 12, False, 1_900_000_000.0, 42.5),
            RootState(OTHER_ROOT, False, 0, True, None, None),
        ),
        "inotify_watches": 12,
        "unwatched_dirs": 3,
        "settle_queue": 7,
        "hash_queue": 2,
        "record_queue": 1,
        "paused": False,
        "providers": (("alpha", True), ("beta", False)),
        "healthy": True,
    }
    values.update(changes)
    return LiveState(**values)  # type: ignore[arg-type]


def _attempt(provider: str, error_class: str | None = None) -> Attempt:
    message = TIMEOUT_MESSAGE if error_class else None
    return Attempt(provider, format_time(NOW), 12.5, error_class, None, message)  # type: ignore[arg-type]


def _proof(provider: str, digest: str, not_after: datetime, kind: str = "tsr") -> NewProof:
    return NewProof(
        kind, provider, "sha256", digest, None, None, None, format_time(not_after), "f" * 64
    )


def _build_index(path: Path) -> None:
    """Five files under ROOT (four present, one missing), their jobs, proofs and attempts.

    a: tsr by alpha, chain expires in 5 days (due in 7d and 30d) after beta failed (network)
    b: tsr by beta, expires in 20 days (due in 30d only)
    c: tsr failed once (alpha and beta timed out: backing off), ots pending with a pending
       calendar proof; then the file goes missing
    d: tsr by alpha, expires in 400 days (the latest of alpha: its cert expiry)
    e: tsr by alpha, expired yesterday (past renewal, so in no window)
    """
    with Index.open(path) as index:
        watch = index.ensure_watch(Path(ROOT))
        index.ensure_watch(Path(OTHER_ROOT))
        recorded = {}
        for ino, name in enumerate("abcde", start=10):
            (recorded[name],) = index.record_settled(
                [
                    settled(
                        watch,
                        Path(FILES[name]),
                        sha256=name * 64,
                        sha512=name * 128,
                        evidence=["tsr", "ots"] if name == "c" else ["tsr"],
                        ino=ino,
                    )
                ]
            )

        def done(name: str, provider: str, expires: timedelta, attempts: list[Attempt]) -> None:
            job = recorded[name]
            proof = _proof(provider, name * 64, NOW + expires)
            assert complete_job(
                index,
                job_id=job.job_ids[0],
                version_id=job.version_id,
                proof=proof,
                attempts=attempts,
            )

        done("a", "alpha", timedelta(days=5), [_attempt("beta", "network"), _attempt("alpha")])
        done("b", "beta", timedelta(days=20), [_attempt("beta")])
        done("d", "alpha", timedelta(days=400), [_attempt("alpha")])
        done("e", "alpha", timedelta(days=-1), [_attempt("alpha")])
        fail_job(
            index,
            job_id=recorded["c"].job_ids[0],
            attempts=[_attempt("alpha", "timeout"), _attempt("beta", "timeout")],
            error_class="timeout",
            message=TIMEOUT_MESSAGE,
            next_try_at=format_time(NOW + timedelta(minutes=5)),
        )
        # OpenTimestamps is not implemented yet, so no store API writes a pending calendar
        # proof; this is the row it will write (status pending until the Bitcoin upgrade).
        with index.write() as conn:
            conn.execute(
                "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
                " created_at, updated_at) VALUES (?, 'ots', 'calendar', 'pending', 'sha256',"
                " ?, ?, ?)",
                (recorded["c"].version_id, "c" * 64, format_time(NOW), format_time(NOW)),
            )
        assert index.mark_missing([Path(FILES["c"])]) == 1


class Clock:
    """An injected clock: the test moves time, nothing sleeps."""

    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_metrics(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Metrics]]:
    created: list[Metrics] = []

    def make(live: Callable[[], LiveState] = _live, *, index: Path | None = None) -> Metrics:
        metrics = Metrics(
            version="9.8.7",
            index_path=index or index_path(tmp_path),
            live=live,
            index_cache_seconds=10.0,
            clock=clock,
        )
        created.append(metrics)
        return metrics

    yield make
    for metrics in created:
        metrics.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Metrics], MetricsServer]]:
    servers: list[MetricsServer] = []

    def start(metrics: Metrics) -> MetricsServer:
        server = metrics.serve("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _get(port: int, path: str = "/metrics") -> str:
    # trust_env=False: a proxy from the environment must not intercept loopback.
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(f"http://127.0.0.1:{port}{path}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def _samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _series(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    """One metric's samples keyed by their label values (in label-name order)."""
    return {
        tuple(value for _key, value in labels): value
        for (sample, labels), value in samples.items()
        if sample == name
    }


def test_a_scrape_over_http_reports_what_the_index_holds(
    tmp_path: Path, make_metrics: Callable[..., Metrics], serve: Callable[[Metrics], MetricsServer]
) -> None:
    _build_index(index_path(tmp_path))
    server = serve(make_metrics())
    samples = _samples(_get(server.port))

    assert _series(samples, "stampd_files") == {
        (ROOT, "present"): 4,
        (ROOT, "missing"): 1,
        (ROOT, "unreadable"): 0,
        (OTHER_ROOT, "present"): 0,
        (OTHER_ROOT, "missing"): 0,
        (OTHER_ROOT, "unreadable"): 0,
    }
    assert _series(samples, "stampd_versions") == {(): 5}
    assert _series(samples, "stampd_jobs") == {
        ("tsr", "pending"): 1,
        ("tsr", "running"): 0,
        ("tsr", "done"): 4,
        ("tsr", "cancelled"): 0,
        ("ots", "pending"): 1,
        ("ots", "running"): 0,
        ("ots", "done"): 0,
        ("ots", "cancelled"): 0,
    }
    # Two pending jobs; only the tsr one has failed before.
    assert _series(samples, "stampd_jobs_backing_off") == {("tsr",): 1, ("ots",): 0}
    assert _series(samples, "stampd_proofs") == {
        ("tsr", "complete"): 4,
        ("tsr", "pending"): 0,
        ("tsr", "invalid"): 0,
        ("ots", "complete"): 0,
        ("ots", "pending"): 1,
        ("ots", "invalid"): 0,
    }
    # Labels sort by name: (error_class, provider).
    assert _series(samples, "stampd_stamp_attempts_total") == {
        ("ok", "alpha"): 3,
        ("timeout", "alpha"): 1,
        ("network", "beta"): 1,
        ("timeout", "beta"): 1,
        ("ok", "beta"): 1,
    }
    assert _series(samples, "stampd_restamp_due") == {("7d",): 1, ("30d",): 2}
    assert _series(samples, "stampd_cert_expiry_timestamp_seconds") == {
        ("alpha",): (NOW + timedelta(days=400)).timestamp(),
        ("beta",): (NOW + timedelta(days=20)).timestamp(),
    }
    assert _series(samples, "stampd_ots_pending_upgrade") == {(): 1}
    assert _series(samples, "stampd_index_read_errors_total") == {(): 0}
    families = {family.name: family for family in text_string_to_metric_families(_get(server.port))}
    assert families["stampd_stamp_attempts"].type == "counter"
    assert families["stampd_files"].type == "gauge"
    assert all(family.documentation for family in families.values())


def test_the_age_of_the_oldest_pending_anchor_is_exported(
    tmp_path: Path,
    make_metrics: Callable[..., Metrics],
    serve: Callable[[Metrics], MetricsServer],
    clock: Clock,
) -> None:
    # The index's one pending ots proof was obtained at NOW; the scrape is 90 minutes later.
    _build_index(index_path(tmp_path))
    clock.now = (NOW + timedelta(minutes=90)).timestamp()
    samples = _samples(_get(serve(make_metrics()).port))
    assert _series(samples, "stampd_ots_oldest_pending_seconds") == {(): 5400.0}
    # Once it is upgraded (the row is extended in place), nothing waits: 0, not an absent series.
    with Index.open(index_path(tmp_path)) as index, index.write() as conn:
        conn.execute("UPDATE proofs SET status = 'complete' WHERE kind = 'ots'")
    clock.now += 60
    samples = _samples(_get(serve(make_metrics()).port))
    assert _series(samples, "stampd_ots_oldest_pending_seconds") == {(): 0.0}


def test_the_live_part_reflects_the_daemon_state(
    make_metrics: Callable[..., Metrics], serve: Callable[[Metrics], MetricsServer]
) -> None:
    state = _live(paused=True)
    server = serve(make_metrics(lambda: state))
    samples = _samples(_get(server.port))

    assert _series(samples, "stampd_build_info") == {("9.8.7",): 1}
    assert _series(samples, "stampd_up") == {(): 1}
    assert _series(samples, "stampd_healthy") == {(): 1}
    assert _series(samples, "stampd_paused") == {(): 1}
    assert _series(samples, "stampd_settle_queue_length") == {(): 7}
    assert _series(samples, "stampd_hash_queue_length") == {(): 2}
    assert _series(samples, "stampd_record_queue_length") == {(): 1}
    assert _series(samples, "stampd_provider_up") == {("alpha",): 1, ("beta",): 0}
    assert _series(samples, "stampd_watched_roots") == {(): 1}
    assert _series(samples, "stampd_watched_dirs") == {(ROOT,): 12, (OTHER_ROOT,): 0}
    assert _series(samples, "stampd_inotify_watches") == {(): 12}
    assert _series(samples, "stampd_unwatched_dirs") == {(): 3}
    assert _series(samples, "stampd_scan_in_progress") == {(ROOT,): 0, (OTHER_ROOT,): 1}
    # A root whose first scan has not finished has no scan time yet, rather than a fake 0.
    assert _series(samples, "stampd_last_full_scan_success_timestamp_seconds") == {
        (ROOT,): 1_900_000_000.0
    }
    assert _series(samples, "stampd_full_scan_duration_seconds") == {(ROOT,): 42.5}
    # OTHER_ROOT has no inotify watch: not ok, even before its check says why.
    assert _series(samples, "stampd_watch_root_ok") == {(ROOT,): 1, (OTHER_ROOT,): 0}

    state = _live(healthy=False, settle_queue=0, inotify_watches=None)
    samples = _samples(_get(server.port))
    assert _series(samples, "stampd_healthy") == {(): 0}
    assert _series(samples, "stampd_settle_queue_length") == {(): 0}
    assert _series(samples, "stampd_inotify_watches") == {}


def test_a_watched_root_that_became_unreadable_is_not_ok(
    make_metrics: Callable[..., Metrics], serve: Callable[[Metrics], MetricsServer]
) -> None:
    """The inotify watch outlives a chmod 000 of the root: watched, yet nothing is recorded."""
    roots = (RootState(ROOT, True, 12, False, None, None, problem="unreadable"),)
    server = serve(make_metrics(lambda: _live(roots=roots)))
    samples = _samples(_get(server.port))
    assert _series(samples, "stampd_watch_root_ok") == {(ROOT,): 0}
    assert _series(samples, "stampd_watched_roots") == {(): 1}


def test_a_failing_live_sampler_reports_unhealthy_instead_of_failing_the_scrape(
    make_metrics: Callable[..., Metrics], serve: Callable[[Metrics], MetricsServer]
) -> None:
    def broken() -> LiveState:
        raise RuntimeError("the loop is gone")

    server = serve(make_metrics(broken))
    with structlog.testing.capture_logs() as logs:
        samples = _samples(_get(server.port))
    assert _series(samples, "stampd_healthy") == {(): 0}
    assert _series(samples, "stampd_up") == {(): 1}
    assert _series(samples, "stampd_build_info") == {("9.8.7",): 1}
    assert _series(samples, "stampd_settle_queue_length") == {}
    failures = [entry for entry in logs if entry["event"] == "metrics_live_state_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"


def test_labels_never_carry_file_paths_digests_or_error_text(
    tmp_path: Path, make_metrics: Callable[..., Metrics], serve: Callable[[Metrics], MetricsServer]
) -> None:
    _build_index(index_path(tmp_path))
    metrics = make_metrics()
    metrics.events.labels("created").inc()
    metrics.scans.labels(ROOT).inc()
    text = _get(serve(metrics).port)
    label_values = {value for _name, labels in _samples(text) for _key, value in labels}

    assert ROOT in label_values  # the check below is not vacuous
    assert {value for value in label_values if "/" in value} <= {ROOT, OTHER_ROOT}
    for name in "abcde":
        assert FILES[name] not in text
        assert name * 64 not in text
    assert TIMEOUT_MESSAGE not in text
    assert "secret-path" not in text


def test_without_an_index_the_scrape_works_and_the_counts_appear_once_it_exists(
    tmp_path: Path,
    clock: Clock,
    make_metrics: Callable[..., Metrics],
    serve: Callable[[Metrics], MetricsServer],
) -> None:
    path = index_path(tmp_path)
    server = serve(make_metrics())
    samples = _samples(_get(server.port))
    assert _series(samples, "stampd_files") == {}
    assert _series(samples, "stampd_index_read_errors_total") == {(): 1}
    assert _series(samples, "stampd_settle_queue_length") == {(): 7}

    _build_index(path)
    clock.now += 9  # still inside the cache period: neither a new read nor a new error
    samples = _samples(_get(server.port))
    assert _series(samples, "stampd_files") == {}
    assert _series(samples, "stampd_index_read_errors_total") == {(): 1}

    clock.now += 2
    samples = _samples(_get(server.port))
    assert _series(samples, "stampd_files")[ROOT, "present"] == 4
    assert _series(samples, "stampd_index_read_errors_total") == {(): 1}


def _without_created(samples: Samples) -> Samples:
    # prometheus_client stamps each instrument's creation time: different for every Metrics.
    return {key: value for key, value in samples.items() if not key[0].endswith("_created")}


def test_index_counts_are_cached_then_brought_up_to_date_incrementally(
    tmp_path: Path, clock: Clock, make_metrics: Callable[..., Metrics]
) -> None:
    path = index_path(tmp_path)
    _build_index(path)
    metrics = make_metrics()
    first = _samples(metrics.render().decode())
    assert _series(first, "stampd_versions") == {(): 5}

    with Index.open(path) as index:
        watch = index.ensure_watch(Path(ROOT))
        (new,) = index.record_settled(
            [
                settled(
                    watch,
                    Path(f"{ROOT}/new.pdf"),
                    sha256="f" * 64,
                    sha512="0",
                    ino=99,
                    evidence=("ots",),  # the index knows every kind; this job gets cancelled
                )
            ]
        )
        # A cancelled job that had been tried: no longer pending, so not backing off.
        cancel_job(
            index,
            job_id=new.job_ids[0],
            attempts=[_attempt("calendar", "network")],
            error_class="network",
            message="content gone",
        )
        job_id, version_id = index.conn.execute(
            "SELECT id, version_id FROM jobs WHERE kind = 'tsr' AND state = 'pending'"
        ).fetchone()
        later_expiry = NOW + timedelta(days=500)
        assert complete_job(
            index,
            job_id=job_id,
            version_id=version_id,
            proof=_proof("alpha", "c" * 64, later_expiry),
            attempts=[_attempt("alpha")],
        )
    clock.now += 5  # inside the cache period: the counts of the first read
    assert _series(_samples(metrics.render().decode()), "stampd_versions") == {(): 5}

    clock.now += 5
    later = _samples(metrics.render().decode())
    assert _series(later, "stampd_versions") == {(): 6}
    jobs = _series(later, "stampd_jobs")
    assert (jobs["tsr", "done"], jobs["tsr", "pending"]) == (5, 0)
    assert (jobs["ots", "pending"], jobs["ots", "cancelled"], jobs["ots", "done"]) == (1, 1, 0)
    assert _series(later, "stampd_jobs_backing_off") == {("tsr",): 0, ("ots",): 0}
    assert _series(later, "stampd_stamp_attempts_total")["ok", "alpha"] == 4
    assert _series(later, "stampd_cert_expiry_timestamp_seconds")[("alpha",)] == (
        later_expiry.timestamp()
    )
    # Reading only what was added since gives what a first read of the whole index gives.
    assert _without_created(later) == _without_created(_samples(make_metrics().render().decode()))


def test_a_failed_index_read_serves_the_last_values_and_is_counted(
    tmp_path: Path, clock: Clock, make_metrics: Callable[..., Metrics]
) -> None:
    path = index_path(tmp_path)
    _build_index(path)
    metrics = make_metrics()
    first = _samples(metrics.render().decode())
    assert _series(first, "stampd_index_read_errors_total") == {(): 0}

    # A read that fails (here: a table the query needs is gone) keeps the last counts.
    with Index.open(path) as index, index.write() as conn:
        conn.execute("ALTER TABLE attempts RENAME TO attempts_aside")
    clock.now += 10
    failed = _samples(metrics.render().decode())
    assert _series(failed, "stampd_index_read_errors_total") == {(): 1}
    assert _without_created(failed).items() - _without_created(first).items() == {
        (("stampd_index_read_errors_total", ()), 1.0)
    }

    with Index.open(path) as index, index.write() as conn:
        conn.execute("ALTER TABLE attempts_aside RENAME TO attempts")
        conn.execute("UPDATE files SET state = 'unreadable' WHERE path = ?", (FILES["a"],))
    clock.now += 10
    recovered = _samples(metrics.render().decode())
    assert _series(recovered, "stampd_files")[ROOT, "unreadable"] == 1
    assert _series(recovered, "stampd_stamp_attempts_total")["ok", "alpha"] == 3
    assert _series(recovered, "stampd_index_read_errors_total") == {(): 1}


def test_after_a_failed_read_the_index_is_counted_afresh(
    tmp_path: Path, clock: Clock, make_metrics: Callable[..., Metrics]
) -> None:
    """A reopened index may be another file, even one with more rows than the last one."""
    path = index_path(tmp_path)
    with Index.open(path) as index:
        watch = index.ensure_watch(Path(ROOT))
        index.record_settled([settled(watch, Path(FILES["a"]), sha256="a" * 64, sha512="0")])
    metrics = make_metrics()
    assert _series(_samples(metrics.render().decode()), "stampd_versions") == {(): 1}
    with Index.open(path) as index, index.write() as conn:
        conn.execute("ALTER TABLE attempts RENAME TO attempts_aside")
    clock.now += 10
    metrics.render()

    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()
    _build_index(path)
    clock.now += 10
    replaced = _samples(metrics.render().decode())
    assert _series(replaced, "stampd_versions") == {(): 5}
    fresh = _samples(make_metrics().render().decode())
    assert _without_created(replaced) == {
        **_without_created(fresh),
        ("stampd_index_read_errors_total", ()): 1.0,
    }


def test_a_cursor_from_a_larger_index_is_not_trusted(tmp_path: Path) -> None:
    """An index moved aside and rebuilt has fewer rows: its totals are counted afresh."""
    big, small = tmp_path / "big.sqlite", tmp_path / "small.sqlite"
    _build_index(big)
    with Index.open(small) as index:
        watch = index.ensure_watch(Path(ROOT))
        index.record_settled([settled(watch, Path(FILES["a"]), sha256="a" * 64, sha512="0")])
    readers = [open_reader(big), open_reader(small)]
    try:
        stale = metric_counts(readers[0], now=NOW).cursor
        counted = metric_counts(readers[1], now=NOW, previous=stale)
        assert counted == metric_counts(readers[1], now=NOW)
        assert counted.attempts == {}
        assert counted.jobs == {("tsr", state): int(state == "pending") for state in JOB_STATES}
    finally:
        for reader in readers:
            reader.close()


def test_instruments_updated_by_the_daemon_show_in_the_scrape(
    make_metrics: Callable[..., Metrics], serve: Callable[[Metrics], MetricsServer]
) -> None:
    metrics = make_metrics()
    server = serve(metrics)
    metrics.events.labels(type="created").inc()
    metrics.events.labels(type="created").inc()
    metrics.events.labels(type="moved").inc()
    metrics.inotify_overflows.inc()
    metrics.hash_bytes.inc(4096)
    metrics.hash_duration.observe(0.02)
    metrics.stamp_requests.labels(provider="alpha", kind="tsr", result="timeout").inc()
    metrics.stamp_duration.labels(provider="alpha", kind="tsr").observe(10.0)
    metrics.sidecar_write_failures.labels(reason="read_only").inc()
    metrics.scans.labels(root=ROOT).inc()
    metrics.subtree_scans.labels(root=ROOT).inc()
    samples = _samples(_get(server.port))

    assert _series(samples, "stampd_events_total") == {("created",): 2, ("moved",): 1}
    assert _series(samples, "stampd_inotify_overflows_total") == {(): 1}
    assert _series(samples, "stampd_hash_bytes_total") == {(): 4096}
    assert _series(samples, "stampd_hash_duration_seconds_count") == {(): 1}
    buckets = _series(samples, "stampd_hash_duration_seconds_bucket")
    assert buckets[("0.01",)] == 0 and buckets[("0.05",)] == 1 and buckets[("600.0",)] == 1
    assert _series(samples, "stampd_stamp_requests_total") == {("tsr", "alpha", "timeout"): 1}
    assert _series(samples, "stampd_stamp_request_duration_seconds_sum") == {("tsr", "alpha"): 10}
    assert _series(samples, "stampd_sidecar_write_failures_total") == {("read_only",): 1}
    assert _series(samples, "stampd_scans_total") == {(ROOT,): 1}
    assert _series(samples, "stampd_subtree_scans_total") == {(ROOT,): 1}


def test_a_scrape_can_ask_for_single_metrics_by_name(
    tmp_path: Path, make_metrics: Callable[..., Metrics], serve: Callable[[Metrics], MetricsServer]
) -> None:
    # prometheus_client filters by the names a collector describes: the live and index
    # collectors must describe theirs without sampling anything.
    _build_index(index_path(tmp_path))
    server = serve(make_metrics())
    text = _get(server.port, "/metrics?name[]=stampd_settle_queue_length&name[]=stampd_files")
    assert {family.name for family in text_string_to_metric_families(text)} == {
        "stampd_settle_queue_length",
        "stampd_files",
    }
    assert _series(_samples(text), "stampd_settle_queue_length") == {(): 7}
    assert _series(_samples(text), "stampd_files")[ROOT, "present"] == 4


def test_a_port_in_use_is_a_one_line_error_naming_the_address(
    make_metrics: Callable[..., Metrics],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsError) as info:
            make_metrics().serve("127.0.0.1", port)
    assert info.value.message == (
        f"daemon.metrics: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert info.value.hint == "choose another port or stop what uses it"
    assert info.value.error_class == "metrics"


def test_an_address_of_another_machine_is_refused(make_metrics: Callable[..., Metrics]) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    with pytest.raises(MetricsError, match=r"cannot listen on 192\.0\.2\.1:9464: ") as info:
        make_metrics().serve("192.0.2.1", 9464)
    assert "127.0.0.1" in (info.value.hint or "")


def test_close_stops_serving_and_frees_the_port(make_metrics: Callable[..., Metrics]) -> None:
    metrics = make_metrics()
    server = metrics.serve("127.0.0.1", 0)
    port = server.port
    assert port != 0
    assert "stampd_up 1.0" in _get(port)
    server.close()
    server.close()  # twice is harmless
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as client:
        client.get(f"http://127.0.0.1:{port}/metrics")
    again = metrics.serve("127.0.0.1", port)
    try:
        assert again.port == port
        assert "stampd_up 1.0" in _get(port)
    finally:
        again.close()


def test_an_ipv6_address_is_served_on_exactly_that_address(
    make_metrics: Callable[..., Metrics],
) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    server = make_metrics().serve("::1", 0)
    try:
        with httpx.Client(trust_env=False, timeout=10) as client:
            response = client.get(f"http://[::1]:{server.port}/metrics")
        assert "stampd_up 1.0" in response.text
        # Bound to ::1 only: the IPv4 loopback on the same port is not this server.
        with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False) as client:
            client.get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()


def test_the_daemon_loads_prometheus_client_only_when_metrics_are_configured() -> None:
    """prometheus-client and its HTTP server are imports every start would pay for (issue 13:
    start → READY); without ``daemon.metrics`` nothing uses them."""
    probe = (
        "import sys\n"
        "import stampd.daemon.service.lifecycle\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
