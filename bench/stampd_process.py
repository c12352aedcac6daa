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


def start_stampd(config: Path) -> subprocess.Popen[str]:
    """Start ``stampd run`` on ``config`` and return once it is ready."""
    proc = subprocess.Popen(
        [STAMPD, "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"daemon_ready"' in line:
            break
    log = proc.stdout
    threading.Thread(target=lambda: [None for _ in log], daemon=True).start()
    return proc


def stop_stampd(proc: subprocess.Popen[str], *, timeout: float) -> None:
    """SIGTERM, then wait for the clean shutdown (what was hashed is committed first)."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=timeout)
