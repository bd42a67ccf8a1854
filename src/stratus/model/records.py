"""Typed records of the domain objects as the store keeps them and the API shows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from stratus.model.lifecycle import Action, VmState

__all__ = ["Event", "HistoryRecord", "Host", "HostState", "HostUsage", "Vm"]


class HostState(StrEnum):
    INIT = "INIT"  # added, not probed yet; not schedulable
    MONITORED = "MONITORED"  # answered its last probe; schedulable
    ERROR = "ERROR"  # stopped answering; its VMs are UNKNOWN
    DISABLED = "DISABLED"  # still monitored, takes no new VMs
    OFFLINE = "OFFLINE"  # not monitored, takes no new VMs


@dataclass(frozen=True)
class HostUsage:
    """Capacity allocated to the VMs placed on a host (derived from the VM table)."""

    cpu: float = 0.0  # physical CPUs allocated (sum of the VMs' CPU)
    memory: int = 0  # MB allocated
    vms: int = 0  # VMs placed on it (any state that holds capacity)


@dataclass(frozen=True)
class Host:
    id: int
    name: str
    driver: str  # registry name of the driver, e.g. "dummy"
    state: HostState
    cpu: float  # total physical CPUs offered to VMs
    memory: int  # total MB offered to VMs
    labels: dict[str, str]  # free KEY=VALUE labels: COUNTRY, PUBLIC_CLOUD, PRIORITY, PRICE...
    options: dict[str, Any]  # driver options (latency, endpoint...): never credentials
    reason: str  # why it is in its state (the last probe error, who disabled it)
    monitoring: dict[str, Any]  # last probe's figures (HYPERVISOR, load, free memory...)
    last_monitored: datetime | None
    created: datetime
    version: int
    usage: HostUsage = field(default_factory=HostUsage)


@dataclass(frozen=True)
class Vm:
    id: int
    name: str
    state: VmState
    action: Action | None  # the engine's work in progress (transient states, reboot)
    failed_state: VmState | None  # where it failed, when state is FAILED
    reason: str  # why it is in its state (scheduler reason, error, who asked)
    host_id: int | None  # the host it occupies
    target_host_id: int | None  # where deploy/migrate is taking it
    cpu: float  # fraction of physical CPUs
    vcpu: int
    memory: int  # MB
    user_priority: int
    requirements: str  # SCHED_REQUIREMENTS, "" when none
    rank: str  # SCHED_RANK, "" when none
    template: dict[str, Any]  # the parsed template, as its JSON form
    deploy_id: str | None  # the driver's instance id
    op_seq: int  # bumped by every accepted operation: makes driver request ids unique
    resched: bool  # the scheduler should move it to a better host
    created: datetime
    updated: datetime
    version: int
    host_name: str | None = None  # filled by reads that join hosts
    checkpoint: str | None = None  # saved memory state of a STOPPED VM (driver's reference)
    info: dict[str, Any] = field(default_factory=dict)  # the driver's report: address, ports

    def request_id(self) -> str:
        """Idempotency key for the driver call of the current operation."""
        return f"vm-{self.id}-{self.op_seq}"


@dataclass(frozen=True)
class HistoryRecord:
    """One placement of a VM on a host: the basis of accounting."""

    vm_id: int
    seq: int  # 0, 1, 2... per VM
    host_id: int
    host_name: str
    start: datetime
    end: datetime | None
    reason: str  # why it was placed there
    end_reason: str  # why it left ("" while open)


@dataclass(frozen=True)
class Event:
    """One state change of an object."""

    id: int
    object_type: str  # "vm" or "host"
    object_id: int
    from_state: str
    to_state: str
    reason: str
    time: datetime
