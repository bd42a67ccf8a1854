"""A host cache the loops share, so that 10,000 hosts are not re-read at every wake-up."""

from __future__ import annotations

import time

from stratus.engine.runner import DbRunner
from stratus.model.records import Host

__all__ = ["HostCache"]


class HostCache:
    """Hosts by id: re-read whole at most every `max_age` seconds, one by one when missing.

    The loops only need a host's driver, options and state to act; a stale version is
    harmless (a conditional write then fails and the next refresh brings the new one).
    """

    def __init__(self, db: DbRunner, max_age: float) -> None:
        self._db = db
        self._max_age = max_age
        self._hosts: dict[int, Host] = {}
        self._read_at = -1e9

    async def all(self) -> list[Host]:
        if time.monotonic() - self._read_at > self._max_age:
            hosts = await self._db.call(self._db.store.all_hosts)
            self._hosts = {h.id: h for h in hosts}
            self._read_at = time.monotonic()
        return list(self._hosts.values())

    async def get(self, host_id: int) -> Host:
        host = self._hosts.get(host_id)
        if host is None:
            host = await self._db.call(self._db.store.get_host, host_id)
            self._hosts[host_id] = host
        return host

    async def reload(self, host_id: int) -> Host:
        """Read one host again (it was just added or changed by a request)."""
        self._hosts.pop(host_id, None)
        return await self.get(host_id)

    def put(self, host: Host) -> None:
        """Keep the record a write just returned."""
        self._hosts[host.id] = host

    def forget(self, host_id: int) -> None:
        self._hosts.pop(host_id, None)
