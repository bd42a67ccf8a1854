"""The engine's handle on drivers: one instance per driver name, and deadlines on calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TypeVar

from stratus.drivers.base import Driver, HostInfo
from stratus.drivers.registry import load_driver_class
from stratus.engine.secrets import SecretBox
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


def host_info(host: Host, secrets: Mapping[str, str] | None = None) -> HostInfo:
    """What a driver gets of a host; `secrets` are its opened credentials (none by default)."""
    return HostInfo(
        id=host.id,
        name=host.name,
        options=dict(host.options),
        labels=dict(host.labels),
        secrets=dict(secrets or {}),
    )


class DriverSet:
    """Driver objects by name, created on first use (unknown names fail at once), and the
    one place that opens hosts' credentials to hand them to their driver."""

    def __init__(self, data_dir: Path, secrets: SecretBox | None = None) -> None:
        self._data_dir = data_dir
        self._drivers: dict[str, Driver] = {}
        self.secrets = secrets or SecretBox(data_dir)
        # host id -> (sealed text, opened): each sealing is unique, so a host's credentials
        # are decrypted once per change, not on every probe and step
        self._opened: dict[int, tuple[str, dict[str, str]]] = {}

    def host_info(self, host: Host) -> HostInfo:
        """The host as its driver sees it, credentials opened (SecretsError if they cannot be)."""
        if not host.sealed_secrets:
            return host_info(host)
        cached = self._opened.get(host.id)
        if cached is None or cached[0] != host.sealed_secrets:
            opened = self.secrets.open(host.sealed_secrets, f"host {host.name}")
            cached = self._opened[host.id] = (host.sealed_secrets, opened)
        return host_info(host, cached[1])

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
        self._opened.clear()
