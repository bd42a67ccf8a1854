"""An engine on a real SQLite store with the dummy driver, run in the test's event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stratus.drivers.dummy import DummyDriver, DummyWorld
from stratus.engine.config import EngineConfig, Timeouts
from stratus.engine.core import Engine
from stratus.model.lifecycle import Operation, RecoverMode, VmState
from stratus.model.records import Host, HostState, Vm
from stratus.scheduler import SchedulerConfig
from stratus.store import Store

FAST = EngineConfig(
    scheduler=SchedulerConfig(policy="packing"),
    timeouts=Timeouts(probe=1.0, deploy=1.5, shutdown=0.4, operation=1.5, migrate=1.5),
    schedule_interval=0.05,
    monitor_interval=0.2,
    batch_window=0.002,
    failover_cooldown=1.0,
)

SMALL = 'NAME = "t"\nCPU = 1\nMEMORY = 512\n'


class Harness:
    """Drives an Engine the way the API does, and waits for outcomes with deadlines."""

    def __init__(self, store: Store, data_dir: Path, config: EngineConfig = FAST) -> None:
        self.store = store
        self.engine = Engine(store, config=config, data_dir=data_dir)
        driver = self.engine.drivers.get("dummy")
        assert isinstance(driver, DummyDriver)
        self.world: DummyWorld = driver.world

    async def __aenter__(self) -> Harness:
        await self.engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.stop()

    async def add_host(
        self,
        name: str,
        *,
        cpu: float = 8,
        memory: int = 16384,
        labels: dict[str, str] | None = None,
        **options: Any,
    ) -> Host:
        await self.engine.add_host(
            name, "dummy", cpu=cpu, memory=memory, labels=labels or {}, options=options
        )
        return await self.wait_host(name, HostState.MONITORED)

    async def submit(self, text: str = SMALL, **kw: Any) -> Vm:
        return (await self.engine.submit(text, **kw)).vms[0]

    async def op(
        self,
        vm_id: int,
        operation: str,
        *,
        host: str | None = None,
        hard: bool = False,
        live: bool = False,
        recover: str | None = None,
    ) -> Vm:
        return await self.engine.operate(
            vm_id,
            Operation(operation),
            host=host,
            hard=hard,
            live=live,
            recover=RecoverMode(recover) if recover else None,
        )

    async def wait(self, vm_id: int, state: VmState, timeout: float = 10.0) -> Vm:
        deadline = time.monotonic() + timeout
        while True:
            vm = self.store.get_vm(vm_id)
            if vm.state is state and (vm.action is None or state is not VmState.RUNNING):
                return vm
            if time.monotonic() > deadline:
                raise AssertionError(f"VM {vm_id} is {vm.state} ({vm.reason}), not {state}")
            await asyncio.sleep(0.02)

    async def wait_host(self, name: str, state: HostState, timeout: float = 10.0) -> Host:
        deadline = time.monotonic() + timeout
        while True:
            host = self.store.get_host(name)
            if host.state is state:
                return host
            if time.monotonic() > deadline:
                raise AssertionError(f"host {name} is {host.state} ({host.reason}), not {state}")
            await asyncio.sleep(0.02)

    async def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout} s")
            await asyncio.sleep(0.02)

    def transitions(self, vm_id: int) -> list[tuple[str, str]]:
        events = self.store.events(object_type="vm", object_id=vm_id, limit=1000)
        return [(e.from_state, e.to_state) for e in events]
