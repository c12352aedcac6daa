"""`stampd run` as the benchmarks start it: a subprocess on a written configuration, ready
once it logs ``daemon_ready``, its log drained in the background so it never blocks on a
full pipe, and stopped with SIGTERM as systemd would.

The daemon runs with its bytecode cached, as an installed stampd does (pip compiles it at
install): PYTHONDONTWRITEBYTECODE is dropped from its environment and its cache goes to
PYTHONPYCACHEPREFIX under the temporary directory, filled once (``compileall``) before the
first start. Without that, a shell that sets PYTHONDONTWRITEBYTECODE would have every start
compile about a hundred modules, some 270 ms of this 2-core machine inside each figure."""

from __future__ import annotations

import compileall
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

STAMPD = str(Path(sys.executable).with_name("stampd"))
REPO = Path(__file__).resolve().parents[1]
PYCACHE = Path(tempfile.gettempdir()) / f"stampd-bench-pycache-{os.getuid()}"


def daemon_environment() -> dict[str, str]:
    """The environment of a benchmarked ``stampd run``: bytecode cached (see the docstring),
    the log unbuffered."""
    if not PYCACHE.exists():
        sys.pycache_prefix = str(PYCACHE)
        for package in ("daemon", "store"):
            compileall.compile_dir(REPO / package, quiet=1)
        sys.pycache_prefix = None
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def spawn_stampd(config: Path, *, stderr: int = subprocess.STDOUT) -> subprocess.Popen[str]:
    """Start ``stampd run`` on ``config``; its JSON log lines (stdout) are the caller's to read,
    then to :func:`drain`."""
    return subprocess.Popen(
        [STAMPD, "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=daemon_environment(),
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
