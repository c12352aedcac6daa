"""The metric families sampled at scrape time: the daemon's live state and the index's counts.

Two collectors make up this part of a scrape (the instruments the daemon updates as things
happen live in :mod:`stampd.daemon.service.metrics`):

- :class:`LiveCollector`: what only the running daemon knows (queues, watches, breakers,
  scans), sampled through a ``live`` callable at each scrape, so no gauge is ever stale;
- :class:`IndexCollector`: the index's counts (files, jobs, proofs, attempts, renewals due),
  read on a read-only connection and cached for a few seconds: those counts survive restarts,
  and a scrape every few seconds must not walk a million-row index each time.

Labels stay low-cardinality (reference/watching-and-service.md §6): watch roots, providers,
kinds, states, reasons; never a file path below a root, a digest or an error message.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from stampd.daemon.service.logs import get_logger
from stampd.store.errors import IndexUnavailableError
from stampd.store.index.counts import MetricCounts, metric_counts
from stampd.store.index.database import open_reader

log = get_logger("stampd.daemon.service.metrics")

#: How long a scrape waits for a locked index before serving the last values it read: a
#: scrape must answer within Prometheus' timeout (10 s by default), the writer's 10 s is too long.
INDEX_BUSY_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class RootState:
    """One watch root as the running daemon sees it."""

    #: The watch path. A label: watch roots are few, unlike the files below them.
    root: str
    #: Whether the inotify watch on the root itself is in place.
    watched: bool
    #: Directories counted by the last scan of this root.
    directories: int
    scanning: bool
    #: Unix time the last complete full scan finished; None before the first one ends.
    last_scan_finished_at: float | None
    #: How long that scan took, in seconds.
    last_scan_seconds: float | None
    #: Why the root records nothing (daemon/watch/roots.py ``RootProblem.kind``), None when fine.
    problem: str | None = None


@dataclass(frozen=True)
class LiveState:
    """What only the running daemon knows, sampled at scrape time."""

    roots: tuple[RootState, ...]
    #: inotify watches held; None when unknown (no inotify backend).
    inotify_watches: int | None
    #: Directories without an inotify watch (the limit was reached), covered by rescans only.
    unwatched_dirs: int
    settle_queue: int
    hash_queue: int
    record_queue: int
    paused: bool
    #: (provider name, up) where up means its circuit breaker is closed.
    providers: tuple[tuple[str, bool], ...]
    healthy: bool


class LiveCollector:
    """The daemon's live state, sampled at each scrape."""

    def __init__(self, version: str, live: Callable[[], LiveState]) -> None:
        self._version = version
        self._live = live

    def describe(self) -> list[Metric]:
        """The live families without samples (prometheus_client's collector protocol)."""
        # The registry learns the names from here (needed for `?name[]=` filtering) without
        # calling live() at registration time.
        return _live_families(self._version, None)

    def collect(self) -> list[Metric]:
        """The live families, sampled now; a failing sampler leaves only stampd_healthy 0."""
        try:
            state: LiveState | None = self._live()
        except Exception:
            # A broken sampler must not break the scrape: stampd_healthy 0 says it instead.
            log.exception("metrics_live_state_failed")
            state = None
        return _live_families(self._version, state)


class IndexCollector:
    """The index's counts, read on a read-only connection and cached for ``cache_seconds``."""

    def __init__(
        self,
        path: Path,
        *,
        cache_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._path = path
        self._cache_seconds = cache_seconds
        self._clock = clock
        # A count of its own rather than a Counter instrument: the registry collects those
        # before this collector, so a failure would show only in the next scrape.
        self._errors = 0
        # Scrapes arrive on concurrent server threads; one of them reads, the others wait
        # for its result instead of repeating the work.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._counts: MetricCounts | None = None
        self._read_at: float | None = None
        self._failing = False

    def describe(self) -> list[Metric]:
        """The index families without samples (prometheus_client's collector protocol)."""
        return _index_families(None, 0)

    def collect(self) -> list[Metric]:
        """The index families from the cached counts (refreshed when stale)."""
        counts = self.counts()
        return _index_families(counts, self._errors)

    def counts(self) -> MetricCounts | None:
        """The cached counts, refreshed when older than the cache period; None until the
        index has been read once."""
        with self._lock:
            now = self._clock()
            # A clock that went backwards (time.time() is wall time) also refreshes.
            if self._read_at is not None and 0 <= now - self._read_at < self._cache_seconds:
                return self._counts
            # Failures wait for the cache period too: a missing or locked index is not retried
            # by every scrape.
            self._read_at = now
            try:
                # The cursor only carries over on the same connection: a reopened index may
                # be another file (moved aside and rebuilt), so it is counted afresh.
                previous = self._counts.cursor if self._counts and self._conn else None
                if self._conn is None:
                    self._conn = open_reader(self._path)
                    self._conn.execute(f"PRAGMA busy_timeout = {INDEX_BUSY_TIMEOUT_MS}")
                self._counts = metric_counts(
                    self._conn, now=datetime.fromtimestamp(now, UTC), previous=previous
                )
            except (IndexUnavailableError, sqlite3.Error) as error:
                self._errors += 1
                self._close_connection()
                if not self._failing:  # one line per outage, not one per scrape
                    log.warning(
                        "metrics_index_unreadable",
                        path=str(self._path),
                        error=str(error),
                        hint="serving the last values read until the index can be read again",
                    )
                self._failing = True
            else:
                self._failing = False
            return self._counts

    def close(self) -> None:
        """Close the read-only connection; the next refresh reopens it."""
        with self._lock:
            self._close_connection()

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _gauge(
    name: str, documentation: str, labels: Sequence[str] = (), samples: Iterable[Any] = ()
) -> GaugeMetricFamily:
    """A gauge family with ``samples`` of ``(label values, value)``."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for label_values, value in samples:
        family.add_metric(list(label_values), float(value))
    return family


def _live_families(version: str, state: LiveState | None) -> list[Metric]:
    """The live part of a scrape; ``state`` None when it could not be sampled (then only
    build_info, up and healthy 0 carry samples)."""
    families: list[Metric] = [
        _gauge(
            "stampd_build_info",
            "Always 1; the version label names the running stampd.",
            ["version"],
            [((version,), 1)],
        ),
        _gauge("stampd_up", "1 while the stampd daemon answers scrapes.", (), [((), 1)]),
        _gauge(
            "stampd_healthy",
            "1 when the daemon's health check passes (the one behind the systemd watchdog).",
            (),
            [((), 1 if state is not None and state.healthy else 0)],
        ),
    ]
    s = state
    roots = s.roots if s is not None else ()
    families += [
        _gauge(
            "stampd_paused",
            "1 while stamping is paused, 0 otherwise.",
            (),
            [((), int(s.paused))] if s else [],
        ),
        _gauge(
            "stampd_watched_roots",
            "Watch roots that have their inotify watch in place.",
            (),
            [((), sum(root.watched for root in roots))] if s else [],
        ),
        _gauge(
            "stampd_watch_root_ok",
            "1 when the watch root exists, is a readable directory and has its inotify watch;"
            " 0 when it records nothing: `stampd status` says why and what to do.",
            ["root"],
            [((root.root,), int(root.watched and root.problem is None)) for root in roots],
        ),
        _gauge(
            "stampd_watched_dirs",
            "Directories under the watch root, as counted by its last scan.",
            ["root"],
            [((root.root,), root.directories) for root in roots],
        ),
        _gauge(
            "stampd_inotify_watches",
            "inotify watches held by the daemon (compare with fs.inotify.max_user_watches).",
            (),
            [((), s.inotify_watches)] if s and s.inotify_watches is not None else [],
        ),
        _gauge(
            "stampd_unwatched_dirs",
            "Directories without an inotify watch (limit reached), seen only by rescans.",
            (),
            [((), s.unwatched_dirs)] if s else [],
        ),
        _gauge(
            "stampd_settle_queue_length",
            "Changed files waiting to settle (closed and quiet) before they are hashed.",
            (),
            [((), s.settle_queue)] if s else [],
        ),
        _gauge(
            "stampd_hash_queue_length",
            "Settled files waiting to be hashed.",
            (),
            [((), s.hash_queue)] if s else [],
        ),
        _gauge(
            "stampd_record_queue_length",
            "Hashed files waiting to be recorded in the index.",
            (),
            [((), s.record_queue)] if s else [],
        ),
        _gauge(
            "stampd_provider_up",
            "1 when the provider takes requests, 0 while its circuit breaker rests it.",
            ["provider"],
            [((name,), int(up)) for name, up in (s.providers if s else ())],
        ),
        _gauge(
            "stampd_scan_in_progress",
            "1 while a full scan of the watch root runs.",
            ["root"],
            [((root.root,), int(root.scanning)) for root in roots],
        ),
        _gauge(
            "stampd_last_full_scan_success_timestamp_seconds",
            "Unix time the last complete full scan of the watch root finished.",
            ["root"],
            [
                ((root.root,), root.last_scan_finished_at)
                for root in roots
                if root.last_scan_finished_at is not None
            ],
        ),
        _gauge(
            "stampd_full_scan_duration_seconds",
            "How long the last complete full scan of the watch root took.",
            ["root"],
            [
                ((root.root,), root.last_scan_seconds)
                for root in roots
                if root.last_scan_seconds is not None
            ],
        ),
    ]
    return families


def _index_families(counts: MetricCounts | None, read_errors: int) -> list[Metric]:
    """The index part of a scrape; no samples before the index was first read."""
    c = counts
    errors = CounterMetricFamily(
        "stampd_index_read_errors",
        "Failed reads of the index for metrics; the last values read are served meanwhile.",
        value=read_errors,
    )
    attempts = CounterMetricFamily(
        "stampd_stamp_attempts",
        "Provider attempts recorded in the index (all time, across restarts), by outcome:"
        " ok or the error class.",
        labels=["provider", "error_class"],
    )
    for (provider, error_class), count in c.attempts.items() if c else ():
        attempts.add_metric([provider, error_class], count)
    return [
        _gauge(
            "stampd_files",
            "Files in the index by watch root and state (present, missing, unreadable).",
            ["root", "state"],
            c.files.items() if c else (),
        ),
        _gauge(
            "stampd_versions",
            "File versions (content states) recorded in the index.",
            (),
            [((), c.versions)] if c else [],
        ),
        _gauge(
            "stampd_jobs",
            "Evidence jobs in the index by evidence kind and state.",
            ["kind", "state"],
            c.jobs.items() if c else (),
        ),
        _gauge(
            "stampd_jobs_backing_off",
            "Pending jobs that failed at least once and wait to be retried, by evidence kind.",
            ["kind"],
            [((kind,), count) for kind, count in c.jobs_backing_off.items()] if c else [],
        ),
        _gauge(
            "stampd_proofs",
            "Proofs in the index by evidence kind and status.",
            ["kind", "status"],
            c.proofs.items() if c else (),
        ),
        attempts,
        errors,
        _gauge(
            "stampd_restamp_due",
            "Complete proofs whose signing certificate chain expires within the window:"
            " renew them before then.",
            ["window"],
            [((window,), count) for window, count in c.restamp_due.items()] if c else [],
        ),
        _gauge(
            "stampd_cert_expiry_timestamp_seconds",
            "Unix time the newest signing chain of the TSA expires (latest notAfter over its"
            " complete tsr proofs).",
            ["provider"],
            [((name,), moment.timestamp()) for name, moment in c.cert_expiry.items()] if c else [],
        ),
        _gauge(
            "stampd_ots_pending_upgrade",
            "OpenTimestamps proofs still waiting for their Bitcoin attestation (upgrade).",
            (),
            [((), c.ots_pending_upgrade)] if c else [],
        ),
        _gauge(
            "stampd_ots_oldest_pending_seconds",
            "How long the oldest OpenTimestamps proof still pending has waited for its Bitcoin"
            " attestation, in seconds (0 when none is pending); hours are normal, days are not.",
            (),
            [((), c.ots_oldest_pending_seconds)] if c else [],
        ),
    ]
