"""Group commit of VM state changes: many tasks, one transaction per short window.

Every state change still is one conditional row update plus one event row; batching only
shares the transaction (and its fsync) between the changes that arrive together.
"""

from __future__ import annotations

import asyncio
import logging

from stratus.engine.runner import DbRunner
from stratus.model.errors import Conflict
from stratus.model.records import Vm
from stratus.store import VmChange

__all__ = ["ChangeBatcher"]

log = logging.getLogger(__name__)
_MAX_BATCH = 2000


class ChangeBatcher:
    def __init__(self, db: DbRunner, window: float) -> None:
        self._db = db
        self._window = window
        self._queue: list[tuple[VmChange, asyncio.Future[Vm]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="change-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            await self.flush()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def apply(self, change: VmChange) -> Vm:
        """Apply one change in the next batch; raises Conflict if the VM moved on."""
        if self._task is None:  # not started (tests, one-off tools): apply directly
            return self._unwrap(change, (await self._db.call(self._db.store.apply, [change]))[0])
        future: asyncio.Future[Vm] = asyncio.get_running_loop().create_future()
        self._queue.append((change, future))
        self._wakeup.set()
        return await future

    async def flush(self) -> None:
        while self._queue:
            await self._flush_once()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._window)  # let the changes of this instant gather
            self._wakeup.clear()
            while self._queue:
                await self._flush_once()

    async def _flush_once(self) -> None:
        batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
        try:
            results = await self._db.call(self._db.store.apply, [c for c, _ in batch])
        except Exception as exc:  # the whole transaction failed: every waiter learns why
            log.exception("applying %d VM changes failed", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (change, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            try:
                future.set_result(self._unwrap(change, result))
            except Conflict as exc:
                future.set_exception(exc)

    @staticmethod
    def _unwrap(change: VmChange, result: Vm | Conflict) -> Vm:
        if isinstance(result, Conflict):
            raise result
        return result
