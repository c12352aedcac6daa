"""`stampd run` as the benchmarks start it: a subprocess on a written configuration, ready
once it logs ``daemon_ready``, its log drained in the background so it never blocks on a
full pipe, and stopped with SIGTERM as systemd would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

STAMPD = str(Path(sys.executable).with_name("stampd"))


def spawn_stampd(config: Path, *, stderr: int = subprocess.STDOUT) -> subprocess.Popen[str]:
    """Start ``stampd run`` on ``config``; its JSON log lines (stdout) are the caller's to read,
    then to :func:`drain`."""
    return subprocess.Popen(
        [STAMPD, "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def drain(proc: subprocess.Popen[str]) -> None:
    """Read the rest of the daemon's log in the background, so it never blocks on a full pipe."""
    log = proc.stdout
    if log is not None:
        threading.Thread(target=lambda: [None for _ in log], daemon=True).start()


def start_stampd(config: Path) -> subprocess.Popen[str]:
    """Start ``stampd run`` on ``config`` and return once it is ready."""
    proc = spawn_stampd(config)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"daemon_ready"' in line:
            break
    drain(proc)
    return proc


def stop_stampd(proc: subprocess.Popen[str], *, timeout: float) -> None:
    """SIGTERM, then wait for the clean shutdown (what was hashed is committed first)."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=timeout)
