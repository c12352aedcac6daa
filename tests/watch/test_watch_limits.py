"""What inotify does not tell: exhausted watches and queue overflows (reference §2).

Both tests need root: the watch limit is lowered inside a user namespace of the daemon's own
(`user.max_inotify_watches`, which leaves the host alone), the queue length globally for the
moment the daemon creates its inotify instance (restored at once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.daemon_harness import STAMPD, RunningDaemon, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lowers kernel inotify limits")

MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


def _status(daemon: RunningDaemon) -> dict[str, object]:
    result = subprocess.run(
        [STAMPD, "--config", str(daemon.config), "status", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    document: dict[str, object] = json.loads(result.stdout)["daemon"]
    return document


def test_watch_limit_exhaustion_is_reported_and_covered_by_rescans(tmp_path: Path) -> None:
    unshare = require_tool("unshare")
    watched = tmp_path / "watched"
    for number in range(40):
        (watched / f"dir{number:02}").mkdir(parents=True)
    limit = 10
    daemon = RunningDaemon(
        tmp_path,
        daemon_extra='fallback_rescan = "1s"\n',
        prefix=[
            unshare,
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            f'echo {limit} > /proc/sys/user/max_inotify_watches && exec "$@"',
            "sh",
        ],
    ).start()
    try:
        daemon.wait_event("inotify_watch_limit_reached")
        warning = next(e for e in daemon.events if e["event"] == "inotify_watch_limit_reached")
        assert warning["directories"] == 41
        assert warning["watches"] <= limit
        assert "fs.inotify.max_user_watches" in warning["fix"]
        assert _status(daemon)["unwatched_dirs"] == 41 - warning["watches"]
        # The last directories got no watch: only the fallback rescans can see this file.
        late = watched / "dir39" / "late.txt"
        late.write_bytes(b"written where inotify cannot see")
        daemon.settle_until({late: b"written where inotify cannot see"})
    finally:
        assert daemon.stop() == 0


@contextmanager
def _short_inotify_queue(length: int) -> Iterator[None]:
    saved = MAX_QUEUED.read_text()
    MAX_QUEUED.write_text(str(length))
    try:
        yield
    finally:
        MAX_QUEUED.write_text(saved)


def test_queue_overflow_triggers_a_rescan_that_finds_every_file(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path, quiet="0.2s")
    with _short_inotify_queue(16):
        daemon.start()  # watchdog creates the inotify instance, with its queue, at start
    assert daemon.proc is not None
    try:
        burst = {daemon.watched / f"burst-{n:04}.txt": f"burst {n}".encode() for n in range(300)}
        # Stopped, the daemon reads nothing: the 16-event kernel queue must overflow.
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            for path, data in burst.items():
                path.write_bytes(data)
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        daemon.wait_event("inotify_overflow")
        wait_for(lambda: daemon.count("scan_finished") >= 2, 30, "the rescan", daemon)
        daemon.settle_until(burst, timeout=60)
        versions = daemon.versions()
        assert all(len(versions[str(path)]) == 1 for path in burst)
    finally:
        assert daemon.stop() == 0
