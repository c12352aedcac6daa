"""What stampd exports to Prometheus (DESIGN §9, reference/watching-and-service.md §6).

Three sources make up one scrape:

- instruments the daemon updates as things happen (:attr:`Metrics.events`,
  :attr:`Metrics.hash_bytes`, …): counters and histograms that live as long as the process,
  defined here;
- the running daemon's live state (queues, watches, breakers, scans), sampled through the
  ``live`` callable at scrape time, so no gauge is ever stale;
- the index (files, jobs, proofs, attempts, renewals due), read on a read-only connection at
  scrape time and cached for a few seconds: those counts survive restarts, and a scrape every
  few seconds must not walk a million-row index each time.

The last two are collectors in :mod:`stampd.daemon.service.metrics_families`; the HTTP
endpoint is :mod:`stampd.daemon.service.metrics_http`. :class:`Metrics` ties them together.

Naming follows prometheus.io/docs/practices/naming as the reference summarises it: the
``stampd_`` prefix, base units, ``_total`` for counters, ``*_timestamp_seconds`` for points in
time. Labels stay low-cardinality: watch roots, providers, kinds, states, reasons — never a
file path below a root, a digest or an error message (reference §6: "Do not use labels to
store dimensions with high cardinality").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from stampd.daemon.service.metrics_families import IndexCollector, LiveCollector, LiveState
from stampd.daemon.service.metrics_http import MetricsServer

#: Hashing one file takes from about a millisecond (a small file) to minutes (tens of GiB at
#: disk speed); the buckets span that range.
HASH_DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    180.0,
    600.0,
)
#: A provider request takes tens of milliseconds (a local TSA) to the request timeout ("10s" by
#: default, longer when configured).
STAMP_DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every metric stampd exports, on a registry of its own (never prometheus_client's
    global one, which would add process metrics and clash between instances in tests).

    The instruments are safe to update from any thread (prometheus-client locks them). The
    ``live`` callable runs in the HTTP server's thread at each scrape: it must be quick and
    safe to call from another thread (read counters and flags, never wait on the event loop).
    """

    def __init__(
        self,
        *,
        version: str,
        index_path: Path,
        live: Callable[[], LiveState],
        index_cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.events = Counter(
            "stampd_events",
            "Filesystem events received from inotify, by type.",
            ["type"],
            registry=registry,
        )
        self.inotify_overflows = Counter(
            "stampd_inotify_overflows",
            "inotify queue overflows: events were lost and every watch root is rescanned.",
            registry=registry,
        )
        self.hash_bytes = Counter(
            "stampd_hash_bytes", "Bytes of file content read and hashed.", registry=registry
        )
        self.hash_duration = Histogram(
            "stampd_hash_duration_seconds",
            "Time taken to hash one file (SHA-256 and SHA-512 in one read).",
            buckets=HASH_DURATION_BUCKETS,
            registry=registry,
        )
        self.stamp_requests = Counter(
            "stampd_stamp_requests",
            "Requests to evidence providers since the daemon started, by result"
            " (ok or the error class).",
            ["provider", "kind", "result"],
            registry=registry,
        )
        self.stamp_duration = Histogram(
            "stampd_stamp_request_duration_seconds",
            "Duration of one request to an evidence provider, failed ones included.",
            ["provider", "kind"],
            buckets=STAMP_DURATION_BUCKETS,
            registry=registry,
        )
        self.sidecar_write_failures = Counter(
            "stampd_sidecar_write_failures",
            "Sidecars that could not be written where configured, by reason.",
            ["reason"],
            registry=registry,
        )
        self.scans = Counter(
            "stampd_scans",
            "Full scans of the watch root completed since the daemon started.",
            ["root"],
            registry=registry,
        )
        self.subtree_scans = Counter(
            "stampd_subtree_scans",
            "Walks of one new or moved-in directory below the watch root (not full scans).",
            ["root"],
            registry=registry,
        )
        self._index = IndexCollector(index_path, cache_seconds=index_cache_seconds, clock=clock)
        registry.register(LiveCollector(version, live))
        registry.register(self._index)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric, as a scrape would get it."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve ``/metrics`` over HTTP on exactly ``host:port`` (port 0 picks a free one).

        Raises :class:`~stampd.daemon.service.metrics_http.MetricsError` when the address
        cannot be bound.
        """
        return MetricsServer(self.registry, host, port)

    def close(self) -> None:
        """Close the index connection the scrapes use (a later scrape would reopen it)."""
        self._index.close()
