"""Engine tests run async (anyio's pytest plugin, asyncio backend) on a started Harness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stratus.store import Store
from tests.engine.harness import Harness


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def h(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness(sqlite_store, tmp_path) as harness:
        yield harness
