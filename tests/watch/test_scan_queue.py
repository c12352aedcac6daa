"""Coalescing of scan requests: a full scan absorbs its root's subtrees, a subtree absorbs
what is below it, and nothing is walked twice for one burst (daemon/watch/scan_queue.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from stampd.daemon.watch.scan import ScanReport
from stampd.daemon.watch.scan_queue import ScanQueue, ScanRequest
from stampd.daemon.watch.scan_tracker import FullScanTracker

A = Path("/srv/a")
B = Path("/srv/b")


def _drain(queue: ScanQueue) -> list[ScanRequest]:
    async def drain() -> list[ScanRequest]:
        got = []
        while len(queue):
            request = await queue.get()
            assert request is not None
            got.append(request)
        return got

    return asyncio.run(drain())


def test_a_full_scan_absorbs_the_subtrees_of_its_root_before_and_after() -> None:
    queue = ScanQueue()
    queue.request(A, A / "x")
    queue.request(A)
    queue.request(A, A / "y")
    queue.request(B, B / "z")
    assert _drain(queue) == [ScanRequest(A), ScanRequest(B, B / "z")]


def test_a_subtree_absorbs_what_lies_below_it_in_either_order() -> None:
    queue = ScanQueue()
    queue.request(A, A / "p" / "q" / "r")  # events of a moved tree come in any order
    queue.request(A, A / "p")
    queue.request(A, A / "p" / "q")
    queue.request(A, A / "pp")  # a sibling whose name starts alike is not below /srv/a/p
    queue.request(A, A / "p")
    assert _drain(queue) == [ScanRequest(A, A / "p"), ScanRequest(A, A / "pp")]


def test_a_burst_of_mkdirs_is_one_walk_each_and_roots_take_turns() -> None:
    queue = ScanQueue()
    for n in range(3):
        queue.request(A, A / f"d{n}")
    queue.request(B)
    assert _drain(queue) == [
        ScanRequest(A, A / "d0"),
        ScanRequest(B),
        ScanRequest(A, A / "d1"),
        ScanRequest(A, A / "d2"),
    ]


def test_too_many_subtrees_become_one_full_scan() -> None:
    queue = ScanQueue(max_subtrees=3)
    for n in range(5):
        queue.request(A, A / f"d{n}")
    assert _drain(queue) == [ScanRequest(A)]


def test_the_root_itself_or_a_path_outside_it_asks_for_a_full_scan() -> None:
    queue = ScanQueue()
    queue.request(A, A)
    queue.request(B, Path("/elsewhere"))
    assert _drain(queue) == [ScanRequest(A), ScanRequest(B)]


def test_get_waits_for_a_request_and_returns_none_once_closed() -> None:
    async def scenario() -> tuple[ScanRequest | None, ScanRequest | None]:
        queue = ScanQueue()
        waiting = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        queue.request(A, A / "new")
        first = await waiting
        queue.request(A)
        queue.close()
        return first, await queue.get()

    assert asyncio.run(scenario()) == (ScanRequest(A, A / "new"), None)


def test_a_deep_request_makes_the_pending_full_scan_deep_and_stays_one_walk() -> None:
    queue = ScanQueue()
    queue.request(A)
    queue.request(A, deep=True)
    queue.request(A)
    queue.request(B)
    assert _drain(queue) == [ScanRequest(A, deep=True), ScanRequest(B)]


def test_a_rescan_waits_for_a_full_scan_that_starts_after_it_asked() -> None:
    async def scenario() -> list[str]:
        tracker = FullScanTracker()
        seen: list[str] = []
        tracker.started(A)  # a walk is running when the rescan asks
        ticket = tracker.ticket(A)
        waiter = asyncio.create_task(tracker.wait(A, ticket))
        await tracker.finished(A, _report(A, files=1))
        await asyncio.sleep(0)
        seen.append("done" if waiter.done() else "waiting")  # that walk began before it asked
        tracker.started(A)
        await tracker.finished(A, _report(A, files=2))
        report = await waiter
        assert report is not None
        seen.append(f"{report.files} files")
        gone = asyncio.create_task(tracker.wait(B, tracker.ticket(B)))
        await tracker.forget(B)  # a reload removed the watch: nobody waits forever
        seen.append(str(await gone))
        return seen

    assert asyncio.run(scenario()) == ["waiting", "2 files", "None"]


def _report(root: Path, *, files: int) -> ScanReport:
    return ScanReport(root, 1, files, 0, 0, 0, 0, 0.1)
