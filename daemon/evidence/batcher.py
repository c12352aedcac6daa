"""Requests of one kind gathered into batches, for strategies that take many jobs at once.

OpenTimestamps puts every file of a window under one merkle tree and sends its root once to
the calendars; batch mode puts a batch under one TSA token (DESIGN §5, "Batching"). Each job's
round still runs on its own (adopt, reuse, sidecar, proof row): only the request to the
providers is shared. A round hands its request to the :class:`Batcher` and waits for its own
outcome; the batch goes out when it is full or when the strategy's window has passed since
its first request, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from stampd.daemon.evidence.strategy import Outcome, ProofRequest

#: Sends one batch; returns one outcome per request, in order.
SendBatch = Callable[[Sequence[ProofRequest]], Awaitable[Sequence[Outcome]]]


class Batcher:
    """Collects requests and sends them ``size`` at a time, or after ``window`` seconds."""

    def __init__(self, send: SendBatch, *, size: int, window: float) -> None:
        self._send = send
        self._size = size
        self._window = window
        self._waiting: list[tuple[ProofRequest, asyncio.Future[Outcome]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, request: ProofRequest) -> Outcome:
        """The outcome for ``request``, once its batch has been sent."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.append((request, future))
        if len(self._waiting) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A round cancelled while it waited (shutdown) has nothing left to ask for.
        waiting = [(request, future) for request, future in self._waiting if not future.done()]
        batch, self._waiting = waiting[: self._size], waiting[self._size :]
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self._window, self._flush)
        if batch:
            task = asyncio.create_task(self._deliver(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: list[tuple[ProofRequest, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes = await self._send([request for request, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # every round of the batch learns of it, and backs off
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def close(self) -> None:
        """Stop: batches not sent yet are dropped (their jobs stay pending in the index)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, future in self._waiting:
            future.cancel()
        self._waiting = []
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
