"""What every local test peer shares: an HTTP server on an ephemeral loopback port, served
from a background thread, stopped promptly, usable as a context manager.

The fake TSAs, the fake OTS calendar and the fake bitcoind differ in what they answer; how
they start and stop is this one class. A peer sets ``_stopping`` while stopping so that a
deliberately slow or hanging handler wakes up instead of holding the shutdown.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackPeer:
    """Start, stop and ``with`` for a peer whose :meth:`_make_server` binds 127.0.0.1:0."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> ThreadingHTTPServer:
        """A server bound to an ephemeral loopback port, its handler reaching this peer."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The port it listens on; RuntimeError before :meth:`start`."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return int(self._server.server_address[1])

    def start(self) -> Self:
        """Bind an ephemeral port on loopback and serve in a background thread."""
        self._stopping.clear()
        self._server = self._make_server()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow or hanging handlers are released first so closing never waits."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # joins the worker threads
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
