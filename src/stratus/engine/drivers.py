"""The engine's handle on drivers: one instance per driver name, and deadlines on calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from stratus.drivers.base import Driver, HostInfo
from stratus.drivers.registry import load_driver_class
from stratus.model.errors import DriverTimeout
from stratus.model.records import Host

__all__ = ["DriverSet", "host_info", "with_deadline"]

T = TypeVar("T")


async def with_deadline(call: Awaitable[T], seconds: float, what: str) -> T:
    """Await a driver call, turning a missed deadline into DriverTimeout."""
    try:
        return await asyncio.wait_for(call, timeout=seconds)
    except TimeoutError as exc:
        raise DriverTimeout(f"{what} did not finish within {seconds:g} s") from exc


def host_info(host: Host) -> HostInfo:
    return HostInfo(
        id=host.id, name=host.name, options=dict(host.options), labels=dict(host.labels)
    )


class DriverSet:
    """Driver objects by name, created on first use (unknown names fail at once)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._drivers: dict[str, Driver] = {}

    def get(self, name: str) -> Driver:
        driver = self._drivers.get(name)
        if driver is None:
            driver = load_driver_class(name)(self._data_dir)
            self._drivers[name] = driver
        return driver

    def add(self, driver: Driver) -> None:
        """Use this driver object for its name (tests inject configured drivers)."""
        self._drivers[driver.name] = driver

    async def close(self) -> None:
        for driver in self._drivers.values():
            await driver.close()
        self._drivers.clear()
