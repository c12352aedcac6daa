"""Who is waiting for which full scan: ``stampd rescan`` returns once its walks are done.

A rescan request asks for a full scan of some roots (daemon/watch/scan_queue.py), which run one
at a time after whatever is running now. The request takes a *ticket* per root — the number
of the next full scan of that root to start — and waits until that many have finished;
then it knows every file of the root was looked at after it asked, and what that walk found.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from stampd.daemon.watch.scan import ScanReport


class FullScanTracker:
    """Full scans started and finished per root, and the last report of each (on the loop)."""

    def __init__(self) -> None:
        self._started: dict[Path, int] = {}
        self._finished: dict[Path, int] = {}
        self._reports: dict[Path, ScanReport] = {}
        self._changed = asyncio.Condition()

    def ticket(self, root: Path) -> int:
        """The number of the first full scan of ``root`` that starts after now."""
        return self._started.get(root, 0) + 1

    def started(self, root: Path) -> None:
        self._started[root] = self._started.get(root, 0) + 1

    async def finished(self, root: Path, report: ScanReport) -> None:
        self._finished[root] = self._finished.get(root, 0) + 1
        self._reports[root] = report
        async with self._changed:
            self._changed.notify_all()

    async def forget(self, root: Path) -> None:
        """``root`` is no longer watched (a reload removed it): its waiters stop waiting."""
        self._finished[root] = self._started[root] = 1 << 62
        self._reports.pop(root, None)
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, root: Path, ticket: int) -> ScanReport | None:
        """Wait until the full scan numbered ``ticket`` of ``root`` has finished; its report
        (None when the root stopped being watched meanwhile)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._finished.get(root, 0) >= ticket)
        return self._reports.get(root)
