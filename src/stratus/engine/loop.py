"""The shape every engine loop shares: run a body on an interval, or at once when woken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["run_loop"]

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
