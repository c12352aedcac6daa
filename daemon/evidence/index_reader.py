"""The job runners' read-only connection to the index, on a thread of its own (DESIGN §3).

Which jobs are due, which proofs already exist for a digest, where a file is now: the runners
ask these on a reader connection rather than through the writer's thread
(daemon/watch/recorder.py), so they never wait behind a scan's batch of thousands of versions.
WAL lets a reader see every committed write at once without blocking the writer. The
connection lives on one thread: a ``sqlite3`` connection is not meant for concurrent use.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from stampd.store.index.database import open_reader

_T = TypeVar("_T")


class IndexReader:
    """Runs read-only queries on one connection, opened on first use, on its own thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def __call__(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        """``query(conn)`` on the reader's thread."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stampd-reader")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, query)

    def _run(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._conn is None:
            self._conn = open_reader(self._path)
        return query(self._conn)

    def close(self) -> None:
        """Close the connection and stop the thread (a query under way finishes first); the
        next query opens them again."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.submit(self._close).result()
            thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
