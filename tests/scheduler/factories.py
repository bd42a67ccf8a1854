"""Small builders of hosts, snapshots and pending VMs for the scheduler tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stratus.model.records import Host, HostState, HostUsage
from stratus.scheduler import HostSnapshot, PendingVm

_NOW = datetime(2025, 1, 1, tzinfo=UTC)


def make_host(
    host_id: int,
    *,
    cpu: float = 8.0,
    memory: int = 16384,
    state: HostState = HostState.MONITORED,
    labels: dict[str, str] | None = None,
    monitoring: dict[str, Any] | None = None,
    used_cpu: float = 0.0,
    used_mem: int = 0,
    vms: int = 0,
) -> Host:
    return Host(
        id=host_id,
        name=f"host-{host_id}",
        driver="dummy",
        state=state,
        cpu=cpu,
        memory=memory,
        labels=labels or {},
        options={},
        reason="",
        monitoring=monitoring if monitoring is not None else {"HYPERVISOR": "kvm"},
        last_monitored=_NOW,
        created=_NOW,
        version=1,
        usage=HostUsage(cpu=used_cpu, memory=used_mem, vms=vms),
    )


def snapshot(*hosts: Host) -> HostSnapshot:
    return HostSnapshot.from_hosts(hosts)


def vm(vm_id: int, cpu: float = 1.0, memory: int = 1024, **fields: Any) -> PendingVm:
    return PendingVm(id=vm_id, cpu=cpu, memory=memory, **fields)
