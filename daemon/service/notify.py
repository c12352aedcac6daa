"""sd_notify without libsystemd: readiness, status, watchdog and stop messages to systemd.

The protocol (sd_notify(3); reference/watching-and-service.md §4.1) is one ``AF_UNIX``
datagram of newline-separated ``KEY=VALUE`` fields to the socket named by ``$NOTIFY_SOCKET``:
a path, or an abstract-namespace name written with a leading ``@``. Without the variable
(not under systemd, or ``Type=`` is not notify) every call does nothing. The systemd project
advises this small sender over linking libsystemd for it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from stampd.daemon.service.logs import get_logger

log = get_logger("stampd.daemon.service.notify")


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, address: str | bytes | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: The watchdog timeout systemd enforces (``WatchdogSec=``), or None when it is off.
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier the environment asks for (``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``)."""
        env = os.environ if environ is None else environ
        return cls(_address(env.get("NOTIFY_SOCKET", "")), watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the timeout, as sd_watchdog_enabled(3) recommends."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def send(self, **fields: str | int) -> bool:
        """Send one datagram; True if it went out. Failures are logged once, never raised."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
        except OSError as error:
            if not self._failed:  # a vanished manager would otherwise log at every ping
                log.warning("notify_failed", error=error.strerror or str(error))
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        # MONOTONIC_USEC is what Type=notify-reload (systemd ≥ 253) requires; 252 ignores it.
        return self.send(
            RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value: str) -> str | bytes | None:
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()  # the abstract namespace: a leading NUL byte
    return None  # unset, or a form this sender does not speak (vsock): ignore it


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    # WATCHDOG_PID names the process meant to ping; a child that inherited it must not.
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None
