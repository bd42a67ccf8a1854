"""The monitor loop: probe each host on an interval and reconcile its VMs with what it runs.

A host that stops answering goes to ERROR and its RUNNING VMs to UNKNOWN; when it answers
again they return to RUNNING (or POWEROFF / FAILED if the instance is off or gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from stratus.drivers.base import InstanceInfo, InstanceState, ProbeResult
from stratus.engine.batcher import ChangeBatcher
from stratus.engine.config import EngineConfig
from stratus.engine.drivers import DriverSet, with_deadline
from stratus.engine.hostcache import HostCache
from stratus.engine.loop import Tasks, run_loop
from stratus.engine.runner import DbRunner
from stratus.model.errors import Conflict, NotFound, StratusError
from stratus.model.lifecycle import VmState
from stratus.model.records import Host, HostState, Vm
from stratus.store import VmChange

__all__ = ["Monitor"]

log = logging.getLogger(__name__)
_TICK = 0.5
_DEPLOYING = (VmState.PROLOG, VmState.BOOT, VmState.MIGRATING)
_PROBES_AT_ONCE = 16  # spreads a round of probes instead of running hundreds at once


class Monitor:
    def __init__(
        self,
        db: DbRunner,
        batcher: ChangeBatcher,
        drivers: DriverSet,
        config: EngineConfig,
        hosts: HostCache,
        busy: Callable[[int], bool],
        on_host_change: Callable[[], None],
    ) -> None:
        self._hosts = hosts
        self._woken: set[int] = set()
        self._db = db
        self._batcher = batcher
        self._drivers = drivers
        self._config = config
        self._busy = busy  # is the dispatcher working on this VM?
        self._on_host_change = on_host_change
        self._next_probe: dict[int, float] = {}  # host id -> when it is due (monotonic)
        self._slots = asyncio.Semaphore(_PROBES_AT_ONCE)
        self._probing: set[int] = set()
        self._tasks = Tasks()
        self._wakeup = asyncio.Event()

    def wake(self, host_id: int | None = None) -> None:
        """Probe now (one host, or all of them)."""
        if host_id is None:
            self._next_probe.clear()
        else:
            self._next_probe.pop(host_id, None)
            self._woken.add(host_id)
        self._wakeup.set()

    async def run(self) -> None:
        await run_loop("monitor tick", self._tick, self._wakeup, _TICK)

    async def stop(self) -> None:
        await self._tasks.cancel()

    async def _tick(self) -> None:
        now = time.monotonic()
        woken, self._woken = self._woken, set()
        for host_id in woken:  # added or changed by a request: read it again
            with contextlib.suppress(NotFound):
                await self._hosts.reload(host_id)
        for host in await self._hosts.all():
            due = now >= self._next_probe.get(host.id, 0.0)
            if host.state is HostState.OFFLINE or host.id in self._probing or not due:
                continue
            # Jitter keeps hosts added together from being probed together forever: a burst
            # of probes at once is what made API latency spike every interval.
            interval = self._config.monitor_interval
            self._next_probe[host.id] = now + interval * random.uniform(0.8, 1.2)
            self._probing.add(host.id)
            self._tasks.spawn(self._probe(host), name=f"probe-{host.name}")

    async def _probe(self, host: Host) -> None:
        async with self._slots:
            await self._probe_now(host)

    async def _probe_now(self, host: Host) -> None:
        try:
            started = datetime.now(UTC)
            try:
                driver = self._drivers.get(host.driver)
                call = driver.probe(self._drivers.host_info(host))
                result = await with_deadline(call, self._config.timeouts.probe, "probe")
            except StratusError as exc:
                await self._host_lost(host, str(exc))
            else:
                await self._host_answered(host, result, started)
        except (NotFound, Conflict):  # deleted or changed meanwhile: read it again next tick
            self._hosts.forget(host.id)
            self._woken.add(host.id)
        except Exception:
            log.exception("probing host %s failed", host.name)
        finally:
            self._probing.discard(host.id)

    async def _host_answered(self, host: Host, result: ProbeResult, started: datetime) -> None:
        state = previous = host.state
        if state in (HostState.INIT, HostState.ERROR):
            state = HostState.MONITORED
        vms = await self._db.call(self._db.store.vms_on_host, host.id)
        orphans = _orphans(vms, result.instances)
        known = host.monitoring.get("ORPHANS") or []
        for deploy_id in orphans:
            if deploy_id not in known:
                log.warning(
                    "host %s runs instance %s that Stratus did not make", host.name, deploy_id
                )
        monitoring: dict[str, Any] = {
            **result.attributes,
            "CPU": result.cpu,
            "MEMORY": result.memory,
            "FREE_MEMORY_MEASURED": result.free_memory,
            "LOAD": result.load,
            "INSTANCES": len(result.instances),
            "ORPHANS": orphans,
        }
        reason = "" if state is HostState.MONITORED else host.reason
        host = await self._db.call(
            self._db.store.update_host,
            host.id,
            host.version,
            state=state,
            reason=reason,
            monitoring=monitoring,
            last_monitored=datetime.now(UTC),
        )
        self._hosts.put(host)
        if state is not previous:
            log.info("host %s is %s", host.name, state)
            self._on_host_change()
        await self._reconcile(host, vms, result, started)

    async def _host_lost(self, host: Host, error: str) -> None:
        if host.state is not HostState.ERROR or host.reason != error:
            updated = await self._db.call(
                self._db.store.update_host,
                host.id,
                host.version,
                state=HostState.ERROR,
                reason=error,
            )
            self._hosts.put(updated)
            if host.state is not HostState.ERROR:
                log.warning("host %s stopped answering: %s", host.name, error)
        why = f"host {host.name} stopped answering: {error}"
        vms = await self._db.call(self._db.store.vms_on_host, host.id)
        for vm in vms:
            if vm.state is VmState.RUNNING and vm.action is None and vm.host_id == host.id:
                await self._change(vm, VmState.UNKNOWN, why)

    async def _reconcile(
        self, host: Host, vms: list[Vm], result: ProbeResult, started: datetime
    ) -> None:
        """Compare the VMs on the host with its instances (only VMs older than the probe)."""
        for vm in vms:
            if vm.host_id != host.id or vm.action is not None or self._busy(vm.id):
                continue
            if vm.updated >= started:
                continue  # changed after the probe began: the probe cannot speak for it
            if vm.state not in (VmState.RUNNING, VmState.UNKNOWN) or not vm.deploy_id:
                continue
            info = result.instances.get(vm.deploy_id)
            if info is None:
                await self._change(
                    vm,
                    VmState.FAILED,
                    f"instance {vm.deploy_id} vanished from host {host.name}",
                    failed_state=vm.state,
                )
            elif info.state is InstanceState.OFF:
                await self._change(
                    vm, VmState.POWEROFF, "powered off from inside the guest", deploy_id=None
                )
            elif vm.state is VmState.UNKNOWN:
                await self._change(vm, VmState.RUNNING, f"host {host.name} answers again")

    async def _change(self, vm: Vm, state: VmState, reason: str, **fields: Any) -> None:
        with contextlib.suppress(Conflict):  # it moved on meanwhile: the next probe looks again
            await self._batcher.apply(VmChange(vm.id, vm.version, state, reason, **fields))


def _orphans(vms: list[Vm], instances: Mapping[str, InstanceInfo]) -> list[str]:
    """Instances on the host that no VM of Stratus owns: not a VM's deploy id, and not
    tagged with (extra "vm_id") a VM placed there. An untagged one is not called an orphan
    while a VM on the host is being deployed: it may be that VM's, not yet recorded."""
    known = {vm.deploy_id for vm in vms if vm.deploy_id}
    placed = {str(vm.id) for vm in vms}
    deploying = any(vm.deploy_id is None and vm.state in _DEPLOYING for vm in vms)
    orphans = []
    for deploy_id, info in instances.items():
        tag = info.extra.get("vm_id")
        if deploy_id in known or (tag is not None and str(tag) in placed):
            continue
        if tag is None and deploying:
            continue
        orphans.append(deploy_id)
    return sorted(orphans)
