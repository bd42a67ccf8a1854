"""Requests that change VMs and hosts: submit, operations, host administration.

Each request is checked against the life-cycle (stratus.model.lifecycle) and written as
one conditional change; the loops then do the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stratus.drivers.registry import load_driver_class
from stratus.engine.drivers import DriverSet
from stratus.engine.runner import DbRunner
from stratus.model.ec2ids import InstanceMetadata
from stratus.model.errors import Conflict, InvalidInput, StratusError
from stratus.model.expr import parse_expression
from stratus.model.lifecycle import Action, Operation, RecoverMode, VmState, plan_operation
from stratus.model.records import Host, HostState, Vm
from stratus.model.resources import ResourceRequests, resource_requests
from stratus.model.template import Template, parse_template, vm_spec
from stratus.store import NewVm, VmChange

__all__ = ["Submission", "build_vms", "host_change", "operation_change"]

_MAX_COUNT = 1000
_CAPABILITY = {  # the driver capability an action needs
    Action.SUSPEND: "suspend",
    Action.RESUME: "resume",
    Action.STOP: "save",
    Action.MIGRATE: "save",
    Action.LIVE_MIGRATE: "live_migrate",
    Action.REBOOT: "reboot",
    Action.REBOOT_HARD: "reboot",
}


@dataclass(frozen=True)
class Submission:
    """What a submitted template becomes: the VM records, warnings, and what they need."""

    vms: list[NewVm]
    warnings: list[str]
    requests: ResourceRequests


def build_vms(text: str, *, fmt: str, hold: bool, count: int) -> Submission:
    """Parse and validate a template into `count` new VM records (and its warnings)."""
    if not 1 <= count <= _MAX_COUNT:
        raise InvalidInput(f"count must be between 1 and {_MAX_COUNT}, not {count}")
    template = parse_template(text, format=fmt)
    spec = vm_spec(template)
    requests = resource_requests(spec)
    InstanceMetadata.from_section(_single_section(template, "METADATA"))  # USER_DATA base64
    for attr, expression in (("SCHED_REQUIREMENTS", spec.requirements), ("SCHED_RANK", spec.rank)):
        if expression:
            try:
                parse_expression(expression)
            except StratusError as exc:
                raise InvalidInput(f"{attr}: {exc}") from exc
    state = VmState.HOLD if hold else VmState.PENDING
    data = template.to_dict()
    base = spec.name or ""
    names = [base] if count == 1 else [f"{base}-{i}" if base else "" for i in range(count)]
    vms = [
        NewVm(
            name=name,
            state=state,
            cpu=spec.cpu,
            vcpu=spec.vcpu,
            memory=spec.memory,
            user_priority=spec.user_priority,
            requirements=spec.requirements,
            rank=spec.rank,
            template=data,
            reason="held by user" if hold else "submitted: waiting for a host",
        )
        for name in names
    ]
    return Submission(vms, list(spec.warnings), requests)


async def operation_change(
    db: DbRunner,
    drivers: DriverSet,
    vm: Vm,
    operation: Operation,
    *,
    host: str | None,
    hard: bool,
    live: bool,
    recover: RecoverMode | None,
) -> VmChange:
    """Check an operation on a VM and build the change that starts it."""
    plan = plan_operation(
        operation, vm.state, vm.action, vm.failed_state, hard=hard, live=live, recover=recover
    )
    fields: dict[str, Any] = {"action": plan.action, "bump_op_seq": True}
    if plan.resched is not None:
        fields["resched"] = plan.resched
    if plan.clear_host or plan.state in (VmState.DONE, VmState.PENDING):
        fields.update(host_id=None, target_host_id=None)
        if vm.host_id is not None:
            fields["close_history"] = plan.reason
    if plan.state is VmState.FAILED:
        fields["failed_state"] = vm.state
    reason = plan.reason
    if plan.needs_host:
        target = await _target_host(db, operation, vm, host)
        reason = f"{plan.reason} to {target.name}"
        if operation is Operation.DEPLOY:
            fields.update(host_id=target.id, open_history=(target.id, reason))
        else:
            fields["target_host_id"] = target.id
            current = await db.call(db.store.get_host, vm.host_id or 0)
            if plan.action is Action.LIVE_MIGRATE and current.driver != target.driver:
                raise InvalidInput(
                    f"live migration needs hosts of one driver: {current.name} is "
                    f"{current.driver}, {target.name} is {target.driver}",
                    hint="use a cold migration (without --live)",
                )
    elif host is not None:
        raise InvalidInput(f"{operation.value} does not take a host")
    capability = _CAPABILITY.get(plan.action) if plan.action else None
    if capability and vm.host_id is not None and operation is not Operation.RECOVER:
        current = await db.call(db.store.get_host, vm.host_id)
        drivers.get(current.driver).check_supported(capability)
    return VmChange(vm.id, vm.version, plan.state, reason, **fields)


async def _target_host(db: DbRunner, operation: Operation, vm: Vm, ref: str | None) -> Host:
    if not ref:
        raise InvalidInput(
            f"{operation.value} needs a target host", hint=f"stratus vm {operation.value} ID HOST"
        )
    host = await db.call(db.store.get_host, int(ref) if ref.isdigit() else ref)
    if host.state in (HostState.OFFLINE, HostState.ERROR):
        raise Conflict(
            f"host {host.name} is {host.state} and cannot take VMs",
            hint="enable it or choose another host",
        )
    if operation is Operation.MIGRATE and host.id == vm.host_id:
        raise InvalidInput(f"VM {vm.id} already runs on {host.name}")
    return host


def host_change(host: Host, op: str) -> tuple[HostState, str]:
    """The state and reason an administrative host operation leads to."""
    if op == "enable":
        return HostState.INIT, "enabled: waiting for its first probe"
    if op == "disable":
        return HostState.DISABLED, "disabled by the administrator: takes no new VMs"
    if op == "offline":
        return HostState.OFFLINE, "set offline by the administrator: not monitored"
    raise InvalidInput(f"unknown host operation {op!r}", hint="use enable, disable or offline")


def check_driver(name: str) -> None:
    """Fail at once, with the known names, for a driver that does not exist."""
    load_driver_class(name)


def _single_section(template: Template, name: str) -> dict[str, str] | None:
    """A vector attribute given once (vm_spec checked the shape), None when absent."""
    vectors = template.vectors(name)
    return dict(vectors[0]) if vectors else None
