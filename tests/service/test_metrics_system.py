"""`/metrics` of a running `stampd run`: the series DESIGN §9 documents, with live values."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_harness import STAMPD, RunningDaemon, wait_for

DOCUMENTED = {
    "stampd_up",
    "stampd_healthy",
    "stampd_paused",
    "stampd_build_info",
    "stampd_settle_queue_length",
    "stampd_hash_queue_length",
    "stampd_record_queue_length",
    "stampd_watched_roots",
    "stampd_watch_root_ok",
    "stampd_watched_dirs",
    "stampd_inotify_watches",
    "stampd_unwatched_dirs",
    "stampd_inotify_overflows",
    "stampd_events",
    "stampd_scan_in_progress",
    "stampd_subtree_scans",
    "stampd_last_full_scan_success_timestamp_seconds",
    "stampd_full_scan_duration_seconds",
    "stampd_hash_bytes",
    "stampd_hash_duration_seconds",
    "stampd_files",
    "stampd_versions",
    "stampd_jobs",
    "stampd_proofs",
    "stampd_restamp_due",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name → its samples, and sample name (``stampd_hash_bytes_total``) → its own."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    scraped: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        scraped[family.name] = []
        for sample in family.samples:
            scraped[family.name].append((sample.labels, sample.value))
            if sample.name != family.name:
                scraped.setdefault(sample.name, []).append((sample.labels, sample.value))
    return scraped


def test_metrics_endpoint_shows_the_documented_series(tmp_path: Path) -> None:
    port = _free_port()
    daemon = RunningDaemon(tmp_path, daemon_extra=f'metrics = "127.0.0.1:{port}"\n').start()
    try:
        (daemon.watched / "sub").mkdir()
        for n in range(3):
            (daemon.watched / "sub" / f"f{n}.txt").write_text(f"file {n}\n" * (n + 1))
        wait_for(lambda: len(daemon.versions()) == 3, 15, "3 versions")
        daemon.cli("pause")
        metrics: dict[str, list[tuple[dict[str, str], float]]] = {}

        def indexed() -> bool:  # the index figures are cached for a few seconds
            metrics.update(_scrape(port))
            return ({}, 3.0) in metrics.get("stampd_versions", [])

        wait_for(indexed, 20, "stampd_versions 3")
        status = daemon.cli("status")
    finally:
        assert daemon.stop() == 0
    assert set(metrics) >= DOCUMENTED, sorted(DOCUMENTED - set(metrics))
    root = str(daemon.watched)

    def value(name: str, **labels: str) -> float:
        found = [v for sample_labels, v in metrics[name] if sample_labels == labels]
        assert found, (name, labels, metrics[name])
        return found[0]

    assert value("stampd_up") == 1
    assert value("stampd_healthy") == 1
    assert value("stampd_paused") == 1
    assert value("stampd_files", root=root, state="present") == 3
    assert value("stampd_watched_dirs", root=root) >= 1
    assert value("stampd_watch_root_ok", root=root) == 1
    assert value("stampd_subtree_scans_total", root=root) >= 1  # the walk of "sub"
    assert value("stampd_scans_total", root=root) == 1  # the start-up scan only
    assert value("stampd_hash_bytes_total") == sum(len(f"file {n}\n") * (n + 1) for n in range(3))
    assert value("stampd_events_total", type="created") >= 3
    # Labels are watch roots, kinds, states: never a file's path.
    values = {v for family in metrics.values() for labels, _ in family for v in labels.values()}
    assert not [v for v in values if "/sub/" in v or v.endswith(".txt")]
    assert f"metrics:  http://127.0.0.1:{port}/metrics" in status.stdout
    assert "paused:   since" in status.stdout


def test_a_port_in_use_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = RunningDaemon(tmp_path, daemon_extra=f'metrics = "127.0.0.1:{port}"\n')
        result = subprocess.run(
            [STAMPD, "--config", str(daemon.config), "run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"daemon.metrics: cannot listen on 127.0.0.1:{port}: Address already in use" in (
        result.stderr
    )
    assert not (tmp_path / "control.sock").exists()
