"""Small builders shared by the store tests."""

from __future__ import annotations

from typing import Any

from stratus.model.lifecycle import VmState
from stratus.model.records import Host, Vm
from stratus.store import NewVm, Store, VmChange


def new_vm(
    name: str = "",
    *,
    state: VmState = VmState.PENDING,
    cpu: float = 1.0,
    memory: int = 512,
    priority: int = 0,
    template: dict[str, Any] | None = None,
) -> NewVm:
    return NewVm(
        name=name,
        state=state,
        cpu=cpu,
        vcpu=1,
        memory=memory,
        user_priority=priority,
        requirements="",
        rank="",
        template=template if template is not None else {"NAME": name or "anon", "CPU": cpu},
    )


def add_host(store: Store, name: str = "node1", *, cpu: float = 16, memory: int = 65536) -> Host:
    return store.add_host(name, "dummy", cpu, memory, {"COUNTRY": "ES"}, {"latency": 0})


def applied(store: Store, change: VmChange) -> Vm:
    """Apply one change that must succeed."""
    [result] = store.apply([change])
    assert isinstance(result, Vm), result
    return result


def run_on(store: Store, vm: Vm, host: Host) -> Vm:
    """Walk a PENDING VM to RUNNING on `host`, opening its history record."""
    vm = applied(
        store,
        VmChange(
            vm.id,
            vm.version,
            VmState.PROLOG,
            "placed by the scheduler",
            host_id=host.id,
            open_history=(host.id, "placed by the scheduler"),
        ),
    )
    vm = applied(store, VmChange(vm.id, vm.version, VmState.BOOT, "images ready"))
    return applied(store, VmChange(vm.id, vm.version, VmState.RUNNING, "booted", deploy_id="i-1"))
