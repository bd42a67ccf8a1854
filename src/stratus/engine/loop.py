"""The shape every engine loop shares: run a body on an interval, or at once when woken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine

__all__ = ["Tasks", "run_loop"]

log = logging.getLogger(__name__)


async def run_loop(
    name: str, body: Callable[[], Awaitable[object]], wakeup: asyncio.Event, interval: float
) -> None:
    """Run `body` forever; an error is logged and the loop goes on (it never dies silently)."""
    while True:
        wakeup.clear()
        try:
            await body()
        except Exception:
            log.exception("%s failed", name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), interval)


class Tasks:
    """Background tasks a loop starts (one per VM or host); `cancel()` ends them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
