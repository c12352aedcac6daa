"""The HTTP endpoint of the metrics: ``/metrics`` served from a background thread.

prometheus_client's ``start_http_server`` would do, but its serving thread polls for shutdown
every 0.5 s (each close, each reload of ``daemon.metrics``, each test would wait that long), it
logs every scrape to stderr (not stampd's structured log), and a failed bind must become a
one-line error naming ``daemon.metrics`` (DESIGN §4 rule 2). So the server is built here from
the same parts: a threading WSGI server of the address's family and prometheus' WSGI app.
"""

from __future__ import annotations

import errno
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from stampd.daemon.config.sections import format_address
from stampd.daemon.service.logs import get_logger
from stampd.store.errors import ErrorClass, StampdError

log = get_logger("stampd.daemon.service.metrics")


class MetricsError(StampdError):
    """The metrics endpoint could not be served (its address cannot be bound)."""

    error_class = ErrorClass.METRICS


def listen_error(host: str, port: int, error: OSError) -> MetricsError:
    """A one-line error for a failed bind of the metrics endpoint, naming the config key,
    the address and the reason, with what to do about it."""
    address = format_address(host, port)
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        hint = "choose another port or stop what uses it"
    elif error.errno == errno.EACCES:
        hint = "ports below 1024 need privileges: choose a port above 1023"
    else:
        hint = "use an address of this machine, like 127.0.0.1, in daemon.metrics"
    return MetricsError(f"daemon.metrics: cannot listen on {address}: {reason}", hint=hint)


class _QuietHandler(WSGIRequestHandler):
    """Request handler that leaves the access log out: a scrape every few seconds would
    flood the journal, and it is not stampd's structured log."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class _Server4(ThreadingWSGIServer):
    address_family = socket.AF_INET


class _Server6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """The HTTP endpoint of one :class:`Metrics`, served from a background thread."""

    #: How often the serving loop checks for :meth:`close` (socketserver polls; the default
    #: 0.5 s would make every shutdown wait that long).
    _POLL_SECONDS = 0.05

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            # What prometheus_client's start_http_server does, by hand: its serving thread polls
            # for shutdown every 0.5 s, so each close() would wait that long. The family follows
            # the address ("::1" needs AF_INET6), and the socket binds exactly that address.
            family = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0][0]
            server_class = _Server6 if family == socket.AF_INET6 else _Server4
            self._server = server_class((host, port), _QuietHandler)
        except OSError as error:
            raise listen_error(host, port, error) from error
        self._server.set_app(make_wsgi_app(registry))
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": self._POLL_SECONDS},
            name="stampd-metrics",
            daemon=True,
        )
        self._thread.start()
        self._closed = False
        log.info("metrics_listening", host=host, port=self.port)

    def close(self) -> None:
        """Stop serving and release the port; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
