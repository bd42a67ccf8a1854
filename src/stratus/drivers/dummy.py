"""A simulated hypervisor for scale tests and fault injection.

Its "hosts" and instances live in a small SQLite file (the dummy world) under the data
dir, so, like a real hypervisor, they survive a crash of the daemon. Tests flip failure
switches in that file (`DummyWorld.set_fault`) or in the host's options:

    latency=SECONDS        every operation takes that long (latency_<op> for one op)
    unreachable=yes        the host does not answer (probe and every operation)
    fail_<op>=yes          the operation fails (fail_deploy, fail_suspend...)
    refuse_<op>=CODE       it fails with that cloud error code, e.g.
                           refuse_deploy=InsufficientInstanceCapacity (failover)
    refuse_types=T1,T2     deploys of those instance types (DeploySpec.instance_type) fail
                           with InsufficientInstanceCapacity, as a cloud out of one type
    hang_<op>=yes          the operation never returns (the engine's deadline ends it)
    ignore_shutdown=yes    the guest ignores ACPI shutdown (graceful shutdown times out)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratus.drivers.base import (
    DeploySpec,
    Driver,
    HostInfo,
    InstanceInfo,
    InstanceState,
    ProbeResult,
)
from stratus.drivers.cloud_errors import CloudError
from stratus.model.errors import DriverError, DriverTimeout, HostUnreachable

__all__ = ["DummyDriver", "DummyWorld", "WorldInstance"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    deploy_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    vm_id INTEGER NOT NULL,
    state TEXT NOT NULL,           -- running, paused, off, destroyed
    cpu REAL NOT NULL,
    memory INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_host ON instances(host, state);
CREATE INDEX IF NOT EXISTS instances_vm ON instances(vm_id);
CREATE TABLE IF NOT EXISTS faults (host TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (host, name));
"""
_TRUE = {"1", "yes", "true", "on"}
_FAULT_CACHE_SECONDS = 0.2


@dataclass(frozen=True)
class WorldInstance:
    deploy_id: str
    request_id: str
    host: str
    vm_id: int
    state: str
    cpu: float
    memory: int


class DummyWorld:
    """The simulated hosts' state: instances and failure switches, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Autocommit mode; one connection shared under a lock (calls are short).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # survives a process crash, not a power cut
        self._db.executescript(_SCHEMA)
        self._faults: dict[str, dict[str, str]] = {}
        self._faults_read = 0.0

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._db.cursor()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- failure switches -------------------------------------------------------------
    def set_fault(self, host: str, name: str, value: str | bool = True) -> None:
        """Turn a failure switch on (value) for a host; see the module docstring."""
        text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        with self._cursor() as cur:
            cur.execute("INSERT OR REPLACE INTO faults VALUES (?, ?, ?)", (host, name, text))
        self._faults_read = 0.0

    def clear_fault(self, host: str, name: str | None = None) -> None:
        with self._cursor() as cur:
            if name is None:
                cur.execute("DELETE FROM faults WHERE host = ?", (host,))
            else:
                cur.execute("DELETE FROM faults WHERE host = ? AND name = ?", (host, name))
        self._faults_read = 0.0

    def faults(self, host: str) -> dict[str, str]:
        now = time.monotonic()
        if now - self._faults_read > _FAULT_CACHE_SECONDS:
            with self._cursor() as cur:
                rows = cur.execute("SELECT host, name, value FROM faults").fetchall()
            table: dict[str, dict[str, str]] = {}
            for h, name, value in rows:
                table.setdefault(h, {})[name] = value
            self._faults, self._faults_read = table, now
        return self._faults.get(host, {})

    # -- instances ----------------------------------------------------------------------
    def instances(
        self, *, host: str | None = None, vm_id: int | None = None, live_only: bool = True
    ) -> list[WorldInstance]:
        """Instances, optionally of one host or VM; `live_only` hides destroyed ones."""
        sql = (
            "SELECT deploy_id, request_id, host, vm_id, state, cpu, memory FROM instances WHERE 1=1"
        )
        args: list[Any] = []
        if host is not None:
            sql += " AND host = ?"
            args.append(host)
        if vm_id is not None:
            sql += " AND vm_id = ?"
            args.append(vm_id)
        if live_only:
            sql += " AND state != 'destroyed'"
        with self._cursor() as cur:
            rows = cur.execute(sql + " ORDER BY created", args).fetchall()
        return [WorldInstance(*row) for row in rows]

    def get(self, deploy_id: str) -> WorldInstance | None:
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT deploy_id, request_id, host, vm_id, state, cpu, memory FROM instances"
                " WHERE deploy_id = ?",
                (deploy_id,),
            ).fetchone()
        return WorldInstance(*row) if row else None

    def by_request(self, request_id: str) -> WorldInstance | None:
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT deploy_id, request_id, host, vm_id, state, cpu, memory FROM instances"
                " WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        return WorldInstance(*row) if row else None

    def create(self, host: str, spec: DeploySpec) -> WorldInstance:
        deploy_id = f"dummy-{spec.request_id}"
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (deploy_id, spec.request_id, host, spec.vm_id, spec.cpu, spec.memory, time.time()),
            )
        return WorldInstance(
            deploy_id, spec.request_id, host, spec.vm_id, "running", spec.cpu, spec.memory
        )

    def set_state(self, deploy_id: str, state: str, *, host: str | None = None) -> None:
        """Change an instance (tests use it to make a guest power off or vanish)."""
        with self._cursor() as cur:
            if host is None:
                cur.execute(
                    "UPDATE instances SET state = ? WHERE deploy_id = ?", (state, deploy_id)
                )
            else:
                cur.execute(
                    "UPDATE instances SET state = ?, host = ? WHERE deploy_id = ?",
                    (state, host, deploy_id),
                )


class DummyDriver(Driver):
    """Simulated hypervisor; see the module docstring for its switches."""

    name = "dummy"

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.world = DummyWorld(data_dir / "dummy-world.sqlite")

    async def close(self) -> None:
        self.world.close()

    # -- helpers ------------------------------------------------------------------------
    def _switch(self, host: HostInfo, name: str) -> str | None:
        value = self.world.faults(host.name).get(name)
        if value is None:
            option = host.options.get(name)
            value = None if option is None else str(option)
        return value

    async def _enter(self, host: HostInfo, op: str) -> None:
        """Apply latency and failure switches for one operation on one host."""
        if (self._switch(host, "unreachable") or "").lower() in _TRUE:
            raise HostUnreachable(f"host {host.name} does not answer (simulated)")
        latency = self._switch(host, f"latency_{op}") or self._switch(host, "latency")
        if latency:
            await asyncio.sleep(float(latency))
        if (self._switch(host, f"hang_{op}") or "").lower() in _TRUE:
            await asyncio.sleep(365 * 24 * 3600)  # the engine's deadline cancels this
        if (self._switch(host, f"fail_{op}") or "").lower() in _TRUE:
            raise DriverError(f"{op} failed on {host.name} (simulated failure)")
        refused = self._switch(host, f"refuse_{op}")  # a cloud's error code, e.g. capacity
        if refused:
            raise CloudError(f"{op} refused by {host.name}: {refused} (simulated)", code=refused)

    def _live(self, host: HostInfo, deploy_id: str) -> WorldInstance:
        inst = self.world.get(deploy_id)
        if inst is None or inst.state == "destroyed" or inst.host != host.name:
            raise DriverError(f"instance {deploy_id} does not exist on {host.name}")
        return inst

    @staticmethod
    def _info(inst: WorldInstance) -> InstanceInfo:
        state = {
            "running": InstanceState.RUNNING,
            "paused": InstanceState.PAUSED,
            "off": InstanceState.OFF,
        }.get(inst.state, InstanceState.ERROR)
        return InstanceInfo(
            deploy_id=inst.deploy_id,
            state=state,
            cpu_usage=inst.cpu if state is InstanceState.RUNNING else 0.0,
            memory_usage=inst.memory if state is not InstanceState.OFF else 0,
            address=f"{inst.host}.dummy",
        )

    # -- Driver -------------------------------------------------------------------------
    async def probe(self, host: HostInfo) -> ProbeResult:
        await self._enter(host, "probe")
        cpu = float(host.options.get("cpu", 8))
        memory = int(host.options.get("memory", 16384))
        live = await asyncio.to_thread(self.world.instances, host=host.name)
        used = sum(i.memory for i in live if i.state in ("running", "paused"))
        load = sum(i.cpu for i in live if i.state == "running")
        return ProbeResult(
            cpu=cpu,
            memory=memory,
            free_memory=max(memory - used, 0),
            load=round(load, 2),
            attributes={"HYPERVISOR": "dummy", "ARCH": "x86_64"},
            instances={i.deploy_id: self._info(i) for i in live},
        )

    async def prepare(self, host: HostInfo, spec: DeploySpec) -> None:
        await self._enter(host, "prolog")

    async def deploy(self, host: HostInfo, spec: DeploySpec) -> InstanceInfo:
        await self._enter(host, "deploy")
        refused_types = (self._switch(host, "refuse_types") or "").replace(",", " ").split()
        if spec.instance_type and spec.instance_type in refused_types:
            raise CloudError(
                f"{host.name} has no capacity for {spec.instance_type} (simulated)",
                code="InsufficientInstanceCapacity",
            )
        existing = self.world.by_request(spec.request_id)
        if existing is not None:  # a retried request: never start a second instance
            if existing.state == "destroyed":
                raise DriverError(f"instance of request {spec.request_id} was destroyed")
            return self._info(existing)
        if spec.checkpoint is not None and not spec.checkpoint.startswith("dummy-checkpoint:"):
            raise DriverError(f"checkpoint {spec.checkpoint!r} is not a dummy checkpoint")
        return self._info(self.world.create(host.name, spec))

    async def shutdown(self, host: HostInfo, deploy_id: str, timeout: float) -> None:
        await self._enter(host, "shutdown")
        inst = self.world.get(deploy_id)
        if inst is None or inst.state in ("destroyed", "off"):
            return
        if (self._switch(host, "ignore_shutdown") or "").lower() in _TRUE:
            await asyncio.sleep(timeout)
            raise DriverTimeout(f"{deploy_id} ignored the shutdown request for {timeout:g} s")
        self.world.set_state(deploy_id, "off")

    async def destroy(self, host: HostInfo, deploy_id: str) -> None:
        await self._enter(host, "destroy")
        if self.world.get(deploy_id) is not None:
            self.world.set_state(deploy_id, "destroyed")

    async def reboot(self, host: HostInfo, deploy_id: str, hard: bool) -> None:
        await self._enter(host, "reboot")
        if self._live(host, deploy_id).state != "running":
            raise DriverError(f"instance {deploy_id} is not running")

    async def suspend(self, host: HostInfo, deploy_id: str) -> None:
        await self._enter(host, "suspend")
        inst = self._live(host, deploy_id)
        if inst.state == "running":
            self.world.set_state(deploy_id, "paused")

    async def resume(self, host: HostInfo, deploy_id: str) -> InstanceInfo:
        await self._enter(host, "resume")
        inst = self._live(host, deploy_id)
        if inst.state == "paused":
            self.world.set_state(deploy_id, "running")
        return self._info(self._live(host, deploy_id))

    async def save(self, host: HostInfo, deploy_id: str) -> str:
        await self._enter(host, "save")
        inst = self.world.get(deploy_id)
        if inst is None:
            raise DriverError(f"instance {deploy_id} does not exist on {host.name}")
        self.world.set_state(deploy_id, "destroyed")
        return f"dummy-checkpoint:{deploy_id}"

    async def live_migrate(
        self, source: HostInfo, deploy_id: str, target: HostInfo
    ) -> InstanceInfo:
        await self._enter(source, "live_migrate")
        await self._enter(target, "live_migrate")
        inst = self.world.get(deploy_id)
        if inst is not None and inst.host == target.name and inst.state != "destroyed":
            return self._info(inst)  # already moved: a retried call
        self._live(source, deploy_id)
        self.world.set_state(deploy_id, "running", host=target.name)
        return self._info(self._live(target, deploy_id))

    async def cleanup(
        self,
        host: HostInfo,
        vm_id: int,
        request_id: str,
        deploy_id: str | None,
        *,
        keep_disks: bool = False,
    ) -> None:
        await self._enter(host, "cleanup")
        for inst in (self.world.by_request(request_id), self.world.get(deploy_id or "")):
            if inst is not None and inst.host == host.name and inst.state != "destroyed":
                self.world.set_state(inst.deploy_id, "destroyed")
