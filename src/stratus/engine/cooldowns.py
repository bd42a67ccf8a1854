"""Cool-downs: hosts (or offerings) a cloud refused recently, kept out of placements.

In memory on purpose: after a restart the worst case is one more refused attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from stratus.scheduler import Unavailable

__all__ = ["MAX_FAILOVERS", "Cooldowns"]

MAX_FAILOVERS = 5  # refused deploys of one VM before it FAILS instead of trying elsewhere


@dataclass(frozen=True)
class _Entry:
    until: float
    reason: str


class Cooldowns:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._entries: dict[tuple[int, str | None], _Entry] = {}

    def add(self, host_id: int, offering: str | None, reason: str) -> None:
        """Keep that host (or one offering on it) out of placements for a while."""
        self._entries[(host_id, offering)] = _Entry(self._clock() + self._seconds, reason)

    def active(self) -> list[Unavailable]:
        """What is still cooling down (expired entries are dropped)."""
        now = self._clock()
        self._entries = {key: e for key, e in self._entries.items() if e.until > now}
        return [Unavailable(h, offering, e.reason) for (h, offering), e in self._entries.items()]
