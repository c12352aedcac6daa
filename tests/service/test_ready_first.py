"""READY does not wait for the watches, and nothing written before they are placed is lost.

Placing the inotify watches walks the whole tree (watchdog's recursive schedule lists every
directory, files included), so READY must not wait for it: issue 13 wants start → READY in
under a second whatever the tree's size (DESIGN §11). The guarantee that must still hold is
the reference's (reference/watching-and-service.md §3.5): nothing changed after READY is
missed. Each root's start-up scan begins only once its watches are in place, so a change made
before a directory's watch exists is found by that scan, and one made after is reported.

Here the placement is held (the real placement, started late) while READY is awaited and files
are written in the tree; then it is let go, and every file must be recorded exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stampd.daemon.config.reader import load_config
from stampd.daemon.service import lifecycle as service
from stampd.daemon.watch.watcher import Watcher


def _config(tmp_path: Path, watched: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "[daemon]\n"
        f'state_dir = "{tmp_path / "state"}"\n'
        f'control_socket = "{tmp_path / "control.sock"}"\n'
        "[[watch]]\n"
        f'path = "{watched}"\n'
        "evidence = []\n"
        'quiet = "100ms"\n'
    )
    return path


def _versions(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT f.path, COUNT(v.id) FROM files f JOIN versions v ON v.file_id = f.id"
            " GROUP BY f.path"
        ).fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return {}
    finally:
        conn.close()
    return {str(path): int(count) for path, count in rows}


async def _until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_ready_comes_before_the_watches_and_what_is_written_meanwhile_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = tmp_path / "watched"
    for name in ("a", "b"):
        (watched / name).mkdir(parents=True)
    (watched / "a" / "before.txt").write_text("there before the start\n")
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))

    # Hold the placement of every root's watches: on a tree of a million files it takes
    # seconds. Without the change the daemon places them before READY, on the loop; the
    # hold then times out and READY comes only after it.
    release = threading.Event()
    held = threading.Event()
    placed = threading.Event()
    real_schedule = Watcher._schedule

    def held_schedule(self: Watcher, root: Path) -> bool:
        held.set()
        release.wait(5)
        try:
            return real_schedule(self, root)
        finally:
            placed.set()

    monkeypatch.setattr(Watcher, "_schedule", held_schedule)
    messages: list[str] = []

    def ready() -> bool:
        with contextlib.suppress(BlockingIOError):  # nothing sent yet
            messages.append(notify.recv(4096).decode())
        return any("READY=1" in message.split("\n") for message in messages)

    written = {
        watched / "top.txt": "in the root, while its watch is not placed\n",
        watched / "a" / "during.txt": "below, while no watch is placed\n",
        watched / "b" / "during.txt": "another directory\n",
        watched / "c" / "new-dir.txt": "in a directory made meanwhile\n",
    }

    async def main() -> None:
        daemon = service.Daemon(load_config(_config(tmp_path, watched)))
        task = asyncio.create_task(daemon.run())
        try:
            await _until(ready, "READY=1", timeout=10)
            assert held.is_set() and not placed.is_set(), "READY waited for the watches"
            status = next(m for m in messages if "READY=1" in m.split("\n"))
            assert "STATUS=watching 1 of 1 roots; placing inotify watches" in status, status
            for path, text in written.items():
                path.parent.mkdir(exist_ok=True)
                path.write_text(text)
            (watched / "a" / "before.txt").write_text("changed before its watch was placed\n")
            release.set()
            await _until(placed.is_set, "the watches placed")
            after = watched / "b" / "after.txt"
            after.write_text("written once everything is watched\n")
            expected = {str(path) for path in [*written, after, watched / "a" / "before.txt"]}
            db = tmp_path / "state" / "index.sqlite"
            await _until(lambda: expected <= set(_versions(db)), "every file recorded")
            await asyncio.sleep(0.5)  # a second record (event and scan both) would come now
            versions = _versions(db)
            assert {path: versions[path] for path in expected} == dict.fromkeys(expected, 1)
        finally:
            release.set()
            daemon.request_stop("test")
            await task

    try:
        asyncio.run(main())
    finally:
        notify.close()
