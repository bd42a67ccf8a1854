"""The dispatcher: walks every VM that has driver work through its life-cycle.

Level-triggered: it looks in the store for VMs in a transient state (or with an action)
that no task of this process is working on, so after a crash or restart it simply finds
the VMs that were half-way and finishes them; no separate recovery path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from stratus.drivers.base import NicSpec
from stratus.engine.batcher import ChangeBatcher
from stratus.engine.config import EngineConfig
from stratus.engine.drivers import DriverSet
from stratus.engine.hostcache import HostCache
from stratus.engine.loop import Tasks, run_loop
from stratus.engine.resources import ResourceResolver
from stratus.engine.runner import DbRunner
from stratus.engine.steps import StepContext, run_step
from stratus.model.errors import Conflict, NotFound, StratusError
from stratus.model.lifecycle import TRANSIENT_STATES, VmState
from stratus.model.records import Host, Vm
from stratus.store import VmChange

__all__ = ["Dispatcher"]

#: called before an instance boots on a host with the NICs it gets (metadata proxies)
BeforeBoot = Callable[[Host, tuple[NicSpec, ...]], Awaitable[None]]

log = logging.getLogger(__name__)
_IDLE_POLL = 1.0
_MAX_STEPS = 16  # a VM's walk per task; the next scan picks up anything left


class Dispatcher:
    def __init__(
        self,
        db: DbRunner,
        batcher: ChangeBatcher,
        drivers: DriverSet,
        config: EngineConfig,
        hosts: HostCache,
        on_change: Callable[[Vm], None] = lambda vm: None,
        resolver: ResourceResolver | None = None,
        before_boot: BeforeBoot | None = None,
    ) -> None:
        self._db = db
        self._resolver = resolver
        self._before_boot = before_boot
        self._batcher = batcher
        self._drivers = drivers
        self._config = config
        self._on_change = on_change
        self._in_flight: set[int] = set()
        self._tasks = Tasks()
        self._slots = asyncio.Semaphore(config.dispatch_concurrency)
        self._wakeup = asyncio.Event()
        self._hosts = hosts
        self._first_scan = True

    def wake(self) -> None:
        self._wakeup.set()

    def busy(self, vm_id: int) -> bool:
        """True while a task of this process works on the VM."""
        return vm_id in self._in_flight

    async def run(self) -> None:
        await run_loop("dispatcher scan", self._scan, self._wakeup, _IDLE_POLL)

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def _scan(self) -> None:
        # Take no more VMs than there are free slots: memory stays bounded however many
        # VMs wait, and the rest are found by the next scan (woken as each walk ends).
        free = self._config.dispatch_concurrency - len(self._in_flight)
        if free <= 0:
            return
        vms = await self._db.call(
            self._db.store.vms_with_work, exclude=frozenset(self._in_flight), limit=free
        )
        if self._first_scan and vms:
            log.info("resuming %d VMs left in transient states", len(vms))
        self._first_scan = False
        if not vms:
            return
        for vm in vms:
            if vm.id in self._in_flight:
                continue
            self._in_flight.add(vm.id)
            self._tasks.spawn(self._walk(vm), name=f"vm-{vm.id}")

    async def _walk(self, vm: Vm) -> None:
        """Run the VM's steps until it reaches a state without work."""
        try:
            async with self._slots:
                for _ in range(_MAX_STEPS):
                    if not _has_work(vm):
                        return
                    change = await self._step(vm)
                    try:
                        vm = await self._batcher.apply(change)
                    except Conflict:  # changed meanwhile (a user's recover...): re-read
                        vm = await self._db.call(self._db.store.get_vm, vm.id)
                        continue
                    self._on_change(vm)
        except NotFound:
            pass
        except Exception:
            log.exception("dispatching VM %d failed", vm.id)
        finally:
            self._in_flight.discard(vm.id)
            self._wakeup.set()

    async def _step(self, vm: Vm) -> VmChange:
        host_id = vm.host_id
        if host_id is None and vm.state is VmState.EPILOG:  # ending a STOPPED/UNDEPLOYED VM:
            history = await self._db.call(self._db.store.history, vm.id)  # clean up its
            host_id = history[-1].host_id if history else None  # directory where it last ran
        try:
            host = await self._host(host_id)
        except NotFound:
            if vm.host_id is not None:
                raise
            host = None  # that host was deleted since: nothing left to clean up there
        target = await self._host(vm.target_host_id)
        try:
            ctx = StepContext(
                host=self._drivers.host_info(host) if host else None,
                driver=self._drivers.get(host.driver) if host else None,
                target=self._drivers.host_info(target) if target else None,
                target_driver=self._drivers.get(target.driver) if target else None,
                timeouts=self._config.timeouts,
            )
            if self._resolver is not None and vm.state in _DEPLOY_STATES:
                resources = await self._db.call(self._resolver.resolve, vm)
                ctx = dataclasses.replace(ctx, resources=resources)
                boots_on = target if vm.state is VmState.MIGRATING else host
                if self._before_boot is not None and boots_on and vm.state is not VmState.PROLOG:
                    await self._before_boot(boots_on, resources.nics)
        except StratusError as exc:  # the host's driver cannot be loaded, an image is gone...
            return VmChange(vm.id, vm.version, VmState.FAILED, str(exc), failed_state=vm.state)
        return await run_step(vm, ctx)

    async def _host(self, host_id: int | None) -> Host | None:
        return None if host_id is None else await self._hosts.get(host_id)


# The steps that start an instance, and so need its disks, NICs and context.
_DEPLOY_STATES = frozenset({VmState.PROLOG, VmState.BOOT, VmState.MIGRATING})


def _has_work(vm: Vm) -> bool:
    if vm.state in TRANSIENT_STATES:
        return True
    return vm.state is VmState.RUNNING and vm.action is not None
