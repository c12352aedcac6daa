"""The daemon's runtime root: one asyncio loop that owns the index writer and the control socket.

Start-up order follows DESIGN §9: state directory, index (migrations), watches registered,
control socket, then ``daemon_ready``. SIGTERM and SIGINT stop it cleanly: the control
socket is removed and the index is checkpointed and closed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stampd.daemon import __version__
from stampd.daemon.config import Config
from stampd.daemon.control import ControlServer
from stampd.daemon.logs import get_logger
from stampd.store.errors import FileAccessError
from stampd.store.index import Index, index_path, utc_now

log = get_logger("stampd.daemon")

#: The state directory holds the index and every proof ever obtained: owner and group only.
STATE_DIR_MODE = 0o750


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state directory if needed (systemd's StateDirectory= usually has)."""
    try:
        state_dir.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as error:
        raise FileAccessError(
            f"daemon.state_dir: cannot create {state_dir}: {error.strerror}",
            hint="create it and make it writable by the user stampd runs as",
        ) from error
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise FileAccessError(
            f"daemon.state_dir: {state_dir} is not writable by this user",
            hint="fix its owner or mode, or point daemon.state_dir elsewhere",
        )


class Daemon:
    """What ``stampd run`` runs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_at = utc_now()
        self._stop = asyncio.Event()

    async def _status(self, _request: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "config": str(self.config.source),
            "watches": [str(watch.path) for watch in self.config.watches],
        }

    def request_stop(self, signame: str) -> None:
        """Ask the loop to shut down (called from a signal handler)."""
        log.info("daemon_stopping", signal=signame)
        self._stop.set()

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT."""
        state_dir = self.config.daemon.state_dir
        prepare_state_dir(state_dir)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)

        with Index.open(index_path(state_dir)) as index:
            for watch in self.config.watches:
                index.ensure_watch(watch.path)
                if not watch.path.is_dir():
                    log.warning(
                        "watch_root_missing",
                        path=str(watch.path),
                        hint="create the directory; it is picked up once it exists",
                    )
            control = ControlServer(self.config.daemon.control_socket, {"status": self._status})
            await control.start()
            try:
                log.info(
                    "daemon_ready",
                    version=__version__,
                    pid=os.getpid(),
                    state_dir=str(state_dir),
                    control_socket=str(self.config.daemon.control_socket),
                    watches=[str(watch.path) for watch in self.config.watches],
                )
                await self._stop.wait()
            finally:
                await control.close()
        log.info("daemon_stopped")


def run_daemon(config: Config) -> None:
    """Blocking entry point for ``stampd run``."""
    asyncio.run(Daemon(config).run())
