"""PathLocks.hold: every lock of a set of paths at once (daemon/evidence/locks.py).

The Finisher places a batch's sidecars under all their locks; a round adopting one sidecar
and the sidecar repair hold one. Neither may slip in while the set holds its lock, and two
holders of overlapping sets must not wait for each other in a circle.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from stampd.daemon.evidence.locks import PathLocks

STUCK_S = 10


def test_a_single_path_waits_while_a_set_holding_it_is_under_way() -> None:
    async def main() -> None:
        locks = PathLocks(stripes=8)
        paths = [Path(f"/srv/f{number}") for number in range(20)]
        order: list[str] = []
        async with locks.hold(paths):
            assert all(locks(path).locked() for path in paths)

            async def single() -> None:
                async with locks(paths[7]):
                    order.append("single")

            waiting = asyncio.create_task(single())
            await asyncio.sleep(0.02)
            order.append("set done")
        await asyncio.wait_for(waiting, STUCK_S)
        assert order == ["set done", "single"]
        assert not any(locks(path).locked() for path in paths)

    asyncio.run(main())


def test_overlapping_sets_taken_at_once_both_finish() -> None:
    async def main() -> None:
        locks = PathLocks(stripes=16)
        paths = [Path(f"/srv/f{number}") for number in range(40)]
        held = 0

        async def hold(chosen: list[Path]) -> None:
            nonlocal held
            async with locks.hold(chosen):
                held += 1
                await asyncio.sleep(0.01)

        # The same locks asked in opposite orders: taken in stripe order, neither deadlocks.
        await asyncio.wait_for(
            asyncio.gather(*(hold(paths if n % 2 else paths[::-1]) for n in range(6))), STUCK_S
        )
        assert held == 6

    asyncio.run(main())


def test_a_set_with_no_paths_holds_nothing() -> None:
    async def main() -> None:
        locks = PathLocks(stripes=4)
        async with locks.hold([]):
            assert not locks(Path("/srv/a")).locked()

    asyncio.run(main())
