"""The Watcher alone, over real inotify: what reaches the handler, and in which order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from stampd.daemon.watch.watcher import Change, Watcher


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_an_overflow_is_reported_after_the_events_read_before_it(tmp_path: Path) -> None:
    """watchdog logs an overflow on its reading thread while earlier events may still wait in
    the observer's queue. Reported at once, the settler would clear its "open for write" flags
    before a late ``modified`` set one again, and that file would wait for a lost close for an
    hour (the CI failure of test_queue_overflow_triggers_a_rescan_that_finds_every_file)."""
    seen: list[str] = []
    first_delivered = threading.Event()
    release = threading.Event()

    def deliver(change: Change) -> None:
        seen.append(f"{change.kind} {change.path.name}")
        first_delivered.set()
        release.wait(10)  # hold the dispatch thread: later events stay queued

    watcher = Watcher([tmp_path], deliver=deliver, on_overflow=lambda: seen.append("overflow"))
    watcher.start_observer()
    watcher.place()
    try:
        (tmp_path / "a.txt").write_bytes(b"a")
        assert first_delivered.wait(10)
        (tmp_path / "b.txt").write_bytes(b"b")
        queue = watcher._observer.event_queue

        def b_closed_queued() -> bool:
            return any(
                event.event_type == "closed" and str(event.src_path).endswith("b.txt")
                for event, _ in list(queue.queue)
            )

        _wait(b_closed_queued, "b.txt's close in the observer queue")
        # What watchdog's reading thread logs on IN_Q_OVERFLOW (reference §2).
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert "overflow" not in seen, "reported before the events queued ahead of it"
        release.set()
        _wait(lambda: "overflow" in seen, "the overflow report")
    finally:
        release.set()
        watcher.stop()
    overflow_at = seen.index("overflow")
    assert {"created b.txt", "modified b.txt", "closed b.txt"} <= set(seen[:overflow_at]), seen
