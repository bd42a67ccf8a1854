"""The scheduler loop: snapshot pending VMs and hosts, call the pure `plan()`, record it.

Placed VMs go to PROLOG on their host (or, for a resched, MIGRATING to the new host);
unplaced ones keep the plan's reason, shown by `vm show`. A VM that has waited longer
than the pending timeout fails with that reason.

A VM placed on a catalogued cloud keeps its instance type and price in `info` ("offering",
"price_per_hour"): the driver runs that type when the template names none, and each cycle
adds up those prices into the spend per provider (for the budgets) and counts the types
per host (for the per-type quotas).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from stratus.engine.batcher import ChangeBatcher
from stratus.engine.config import EngineConfig
from stratus.engine.cooldowns import Cooldowns
from stratus.engine.drivers import DriverSet
from stratus.engine.loop import run_loop
from stratus.engine.runner import DbRunner
from stratus.model.errors import Conflict, StratusError
from stratus.model.lifecycle import Action, VmState
from stratus.model.records import Host, Vm
from stratus.scheduler import HostSnapshot, PendingVm, Placement, plan
from stratus.store import VmChange

__all__ = ["SchedulerLoop"]

log = logging.getLogger(__name__)
_APPLY_CHUNK = 2000  # placements written per transaction (bounds memory and lock time)


class SchedulerLoop:
    def __init__(
        self,
        db: DbRunner,
        batcher: ChangeBatcher,
        drivers: DriverSet,
        config: EngineConfig,
        on_placed: Callable[[], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cooldowns: Cooldowns | None = None,
    ) -> None:
        self._db = db
        self._cooldowns = cooldowns
        self._batcher = batcher
        self._drivers = drivers
        self._config = config
        self._on_placed = on_placed
        self._clock = clock
        self._wakeup = asyncio.Event()
        #: the last cycle's figures, for logs and benchmarks
        self.last_cycle: dict[str, float] = {}

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        await run_loop("scheduling cycle", self.cycle, self._wakeup, self._config.schedule_interval)

    async def cycle(self) -> int:
        """One scheduling cycle; returns how many VMs it placed."""
        started = time.perf_counter()
        store = self._db.store
        vms = await self._db.call(store.pending_vms)
        if not vms:
            return 0
        hosts = await self._db.call(store.all_hosts)
        by_id = {h.id: h for h in hosts}
        pending = [_pending(vm) for vm in vms]
        snapshot = HostSnapshot.from_hosts(hosts)
        cooling = self._cooldowns.active() if self._cooldowns else []
        spend, type_usage = await self._cloud_usage(hosts)
        work = functools.partial(plan, unavailable=cooling, spend=spend, type_usage=type_usage)
        result = await asyncio.to_thread(work, pending, snapshot, self._config.scheduler)
        planned = time.perf_counter()
        vm_by_id = {vm.id: vm for vm in vms}
        placed = 0
        for start in range(0, len(result.placements), _APPLY_CHUNK):
            chunk = result.placements[start : start + _APPLY_CHUNK]
            changes = [self._placement_change(vm_by_id[p.vm_id], p, by_id) for p in chunk]
            results = await self._db.call(store.apply, changes)
            placed += sum(1 for r in results if not isinstance(r, Conflict))
            self._on_placed()
        await self._record_pending(vm_by_id, result.pending)
        self.last_cycle = {
            "pending": len(vms),
            "placed": placed,
            "plan_seconds": planned - started,
            "cycle_seconds": time.perf_counter() - started,
        }
        if placed:
            log.info("placed %d of %d pending VMs", placed, len(vms))
        return placed

    async def _cloud_usage(
        self, hosts: list[Host]
    ) -> tuple[dict[str, float], dict[int, dict[str, int]]]:
        """(spend per provider in USD/h, instance types per host) of the VMs on public hosts."""
        public = {h.id: h for h in hosts if _attribute(h, "PUBLIC_CLOUD") == "YES"}
        spend: dict[str, float] = {}
        usage: dict[int, dict[str, int]] = {}
        if not public:
            return spend, usage
        for host_id, info in await self._db.call(self._db.store.placed_info, list(public)):
            host = public[host_id]
            provider = _attribute(host, "PROVIDER") or host.driver
            price = info.get("price_per_hour")
            if isinstance(price, int | float):
                spend[provider] = spend.get(provider, 0.0) + float(price)
            offering = info.get("offering")
            if isinstance(offering, str) and offering:
                types = usage.setdefault(host_id, {})
                types[offering] = types.get(offering, 0) + 1
        return spend, usage

    def _placement_change(self, vm: Vm, placement: Placement, hosts: dict[int, Host]) -> VmChange:
        host = hosts[placement.host_id]
        if vm.state is VmState.RUNNING:  # resched: move it to the better host
            current = hosts.get(vm.host_id or -1)
            live = current is not None and current.driver == host.driver and self._can_live(host)
            return VmChange(
                vm.id,
                vm.version,
                VmState.MIGRATING,
                f"resched: {placement.reason}",
                action=Action.LIVE_MIGRATE if live else Action.MIGRATE,
                target_host_id=host.id,
                resched=False,
                bump_op_seq=True,
            )
        info = {k: v for k, v in vm.info.items() if k not in ("offering", "price_per_hour")}
        if placement.offering:
            info["offering"] = placement.offering
        if placement.price_per_hour:
            info["price_per_hour"] = placement.price_per_hour
        return VmChange(
            vm.id,
            vm.version,
            VmState.PROLOG,
            placement.reason,
            action=Action.DEPLOY,
            host_id=host.id,
            info=info,
            bump_op_seq=True,
            open_history=(host.id, placement.reason),
        )

    def _can_live(self, host: Host) -> bool:
        try:
            self._drivers.get(host.driver).check_supported("live_migrate")
        except StratusError:
            return False
        return True

    async def _record_pending(self, vms: dict[int, Vm], reasons: dict[int, str]) -> None:
        timeout = self._config.pending_timeout
        now = self._clock()
        expired: list[VmChange] = []
        changed: dict[int, str] = {}
        for vm_id, reason in reasons.items():
            vm = vms[vm_id]
            if vm.state is not VmState.PENDING:
                continue
            if timeout and (now - vm.updated).total_seconds() > timeout:
                why = f"no host fitted within {timeout:g} s: {reason}"
                expired.append(
                    VmChange(vm.id, vm.version, VmState.FAILED, why, failed_state=VmState.PENDING)
                )
            elif vm.reason != reason:
                changed[vm_id] = reason
        if changed:
            await self._db.call(self._db.store.set_vm_reasons, changed)
        if expired:
            await self._db.call(self._db.store.apply, expired)


def _attribute(host: Host, name: str) -> str | None:
    """A host's label, else what its probe reported (as the scheduler's snapshot reads it)."""
    value = host.labels.get(name, host.monitoring.get(name))
    return None if value is None else str(value)


def _pending(vm: Vm) -> PendingVm:
    exclude = frozenset({vm.host_id}) if vm.host_id is not None else frozenset()
    return PendingVm(
        id=vm.id,
        cpu=vm.cpu,
        memory=vm.memory,
        requirements=vm.requirements,
        rank=vm.rank,
        user_priority=vm.user_priority,
        exclude_hosts=exclude,
    )
