"""The ``/metrics`` endpoint of the running daemon: where it listens, and what it reads live.

``daemon.metrics`` names the address; an unusable one is a configuration error (exit 2 at
start, a refused reload later). The :class:`~stampd.daemon.service.metrics.Metrics` are made
on the first bind and kept across reloads, so counters never restart while the daemon runs.
:func:`live_state` is what a scrape reads of the components (on the scrape thread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stampd.daemon import __version__
from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigError
from stampd.store.errors import StampdError
from stampd.store.index.jobs import Attempt

# prometheus-client and its HTTP server (about 10 ms of imports) load only when
# daemon.metrics is set: in _bind, and in live_state, which only a scrape calls.
if TYPE_CHECKING:
    from stampd.daemon.evidence.runners import EvidenceRunners
    from stampd.daemon.service.health import HealthMonitor
    from stampd.daemon.service.metrics import Metrics
    from stampd.daemon.service.metrics_families import LiveState
    from stampd.daemon.service.metrics_http import MetricsServer
    from stampd.daemon.service.pause import PauseState
    from stampd.daemon.watch.intake import Intake
    from stampd.daemon.watch.recorder import Recorder
    from stampd.daemon.watch.rescans import Rescans
    from stampd.daemon.watch.runtime import Watches


class MetricsEndpoint:
    """The metrics and the HTTP server that serves them (when ``daemon.metrics`` is set)."""

    def __init__(self, *, index: Path) -> None:
        self._index = index
        self._live: Callable[[], LiveState] | None = None
        self._metrics: Metrics | None = None
        self._server: MetricsServer | None = None

    def counters(self) -> Metrics | None:
        """The counters to update, None while no endpoint was ever configured."""
        return self._metrics

    def url(self) -> str | None:
        """Where ``/metrics`` is served now (``status``, ``daemon_ready``)."""
        server = self._server
        return None if server is None else f"http://{_host(server.host)}:{server.port}/metrics"

    def start(self, config: Config, *, live: Callable[[], LiveState]) -> None:
        """Serve where ``config`` says (at start); a scrape reads ``live`` of the components.

        ``live`` comes here, not to the constructor: the evidence runners report their
        attempts to this endpoint, and the live state reads the runners.
        """
        self._live = live
        self._server = self._bind(config)

    def prepare(self, new: Config, old: Config) -> MetricsServer | None:
        """A reload changed ``daemon.metrics``: bind the new address, not yet in use
        (:meth:`replace`); ConfigError, with the old endpoint back, when it is unusable."""
        if self._server is not None and new.daemon.metrics is not None:
            # Rebinding the same port fails while the old server holds it: close it first,
            # and bring it back on the old address if the new one is unusable.
            self._server.close()
            self._server = None
            try:
                return self._bind(new)
            except ConfigError:
                self._server = self._bind(old)
                raise
        return self._bind(new)

    def replace(self, server: MetricsServer | None) -> None:
        """Put the server :meth:`prepare` bound in place of the current one."""
        if self._server is not None:
            self._server.close()
        self._server = server

    def close(self) -> None:
        """Stop serving (at shutdown)."""
        if self._server is not None:
            self._server.close()

    def on_attempts(self, kind: str, attempts: Sequence[Attempt]) -> None:
        """Count each provider attempt of an evidence runner's request round."""
        metrics = self._metrics
        if metrics is None:
            return
        for attempt in attempts:
            metrics.stamp_requests.labels(
                provider=attempt.provider, kind=kind, result=attempt.error_class or "ok"
            ).inc()
            metrics.stamp_duration.labels(provider=attempt.provider, kind=kind).observe(
                attempt.latency_ms / 1000
            )

    def _bind(self, config: Config) -> MetricsServer | None:
        if config.daemon.metrics is None:
            return None
        if self._metrics is None:
            from stampd.daemon.service.metrics import Metrics  # noqa: PLC0415 - see above

            assert self._live is not None, "start() comes first"
            self._metrics = Metrics(version=__version__, index_path=self._index, live=self._live)
        host, port = config.daemon.metrics
        try:
            return self._metrics.serve(host, port)
        except StampdError as error:
            raise ConfigError(error.message, hint=error.hint) from None


def live_state(
    *,
    watches: Watches,
    intake: Intake,
    recorder: Recorder,
    rescans: Rescans,
    pause: PauseState,
    runners: EvidenceRunners,
    health: HealthMonitor,
) -> LiveState:
    """What the metrics need from the running daemon (called on the scrape thread)."""
    from stampd.daemon.service.metrics_families import LiveState, RootState  # noqa: PLC0415

    return LiveState(
        roots=tuple(
            RootState(
                root=str(watch.root),
                watched=watch.root_dev is not None,
                problem=watch.root_problem.kind if watch.root_problem else None,
                directories=watch.directories,
                scanning=rescans.scanning == str(watch.root),
                last_scan_finished_at=watch.last_scan_at,
                last_scan_seconds=watch.last_scan_seconds,
            )
            for watch in watches
        ),
        inotify_watches=rescans.inotify_watches,
        unwatched_dirs=rescans.unwatched_dirs,
        settle_queue=watches.settling(),
        hash_queue=intake.hashing,
        record_queue=recorder.backlog(),
        paused=pause.paused,
        providers=runners.providers_up(),
        healthy=health.health.ok,
    )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
