"""DescribeInstances and the life-cycle actions: Terminate, Stop, Start, Reboot.

An instance is a VM the caller launched (ec2_instances); terminated ones stay visible
for `terminated_visible` seconds, as on EC2. Operations go through `engine.operate`, so
the life-cycle table decides what is legal; what it refuses is IncorrectInstanceState.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.filters import Filters, parse_filters, tag_items
from stratus.ec2api.protocol import Ec2Error, Params, decode_token, encode_token, invalid, missing
from stratus.model.ec2ids import InstanceMetadata, ec2_state, group_id, instance_id, vm_id_of
from stratus.model.errors import IllegalOperation, InvalidInput
from stratus.model.lifecycle import (
    TRANSIENT_STATES,
    Action,
    Operation,
    RecoverMode,
    VmState,
    plan_operation,
)
from stratus.model.records import Vm
from stratus.store import ec2 as store_ec2
from stratus.store import ec2_objects
from stratus.store.ec2 import Instance, InstanceQuery

__all__ = [
    "describe_instances",
    "end_vms",
    "group_ids",
    "instance_ids",
    "operate",
    "reboot_instances",
    "reservation_body",
    "start_instances",
    "stop_instances",
    "terminate_instances",
]

log = logging.getLogger(__name__)
_CHUNK = 1000  # instances read per store query when the caller gives no MaxResults
_BUSY_WAIT = 5.0  # seconds an operation waits for an action in progress (a reboot)
_FILTERS = {
    "instance-id", "instance-state-name", "instance-state-code", "instance-type",
    "reservation-id", "image-id", "key-name", "availability-zone", "ip-address",
    "private-ip-address", "client-token", "tag-key", "tag-value", "tag:",
}  # fmt: skip
_EC2_STATES: dict[str, frozenset[VmState]] = {  # EC2 state name -> the VM states it covers
    name: frozenset(s for s in VmState if ec2_state(s, None)[1] == name)
    for name in ("pending", "running", "shutting-down", "stopped", "terminated")
}
_EC2_STATES["stopping"] = _EC2_STATES["shutting-down"]  # the action tells them apart
_IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}")
_TERMINATING = {Action.TERMINATE, Action.TERMINATE_HARD, Action.DELETE}


def instance_ids(params: Params, key: str = "InstanceId") -> list[int]:
    """The VM ids of InstanceId.N; InvalidInstanceID.Malformed naming a bad one."""
    ids = []
    for value in params.texts(key, max_len=64):
        try:
            ids.append(vm_id_of(value))
        except InvalidInput:
            raise Ec2Error("InvalidInstanceID.Malformed", f'Invalid id: "{value}"') from None
    return ids


def _not_found(missing_ids: Sequence[int]) -> Ec2Error:
    shown = ", ".join(instance_id(i) for i in missing_ids)
    if len(missing_ids) == 1:
        return Ec2Error("InvalidInstanceID.NotFound", f"The instance ID '{shown}' does not exist")
    return Ec2Error("InvalidInstanceID.NotFound", f"The instance IDs '{shown}' do not exist")


def _is_ip(text: str) -> bool:
    if _IPV4.fullmatch(text):
        return True
    if ":" not in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _addresses(vm: Vm, inst: Instance) -> tuple[str | None, str]:
    """(public IP, DNS name): the elastic address, else the driver's address if it is an
    IP (else it is a name)."""
    reported = str(vm.info.get("public_ip") or vm.info.get("address") or "")
    is_ip = _is_ip(reported)
    public = inst.public_ip or (reported if is_ip else None)
    return public, "" if is_ip else reported


def instance_item(inst: Instance, zone: str, groups: dict[str, str]) -> dict[str, Any]:
    """One instancesSet item (the shape botocore's EC2 parser reads)."""
    vm = inst.vm
    meta = InstanceMetadata.from_section(vm.template.get("METADATA"))
    code, name = ec2_state(vm.state, vm.action)
    public_ip, dns = _addresses(vm, inst)
    extra = vm.template.get("METADATA") or {}
    failed = vm.state is VmState.FAILED
    return {
        "instanceId": inst.owner.instance_id,
        "imageId": meta.ami_id,
        "instanceState": {"code": code, "name": name},
        "privateDnsName": "",
        "dnsName": dns,
        "reason": vm.reason if name in ("stopped", "terminated") else "",
        "keyName": meta.key_name or None,
        "amiLaunchIndex": inst.owner.launch_index,
        "productCodes": [],
        "instanceType": inst.owner.instance_type,
        "launchTime": vm.created,
        "placement": {"availabilityZone": meta.availability_zone or zone, "tenancy": "default"},
        "kernelId": extra.get("KERNEL_ID"),
        "ramdiskId": extra.get("RAMDISK_ID"),
        "monitoring": {"state": "disabled"},
        "privateIpAddress": inst.private_ip,
        "ipAddress": public_ip,
        "groupSet": [{"groupId": groups.get(g, ""), "groupName": g} for g in meta.security_groups],
        "stateReason": {"code": "Server.InternalError", "message": vm.reason} if failed else None,
        "architecture": "x86_64",
        "rootDeviceType": "ebs",
        "rootDeviceName": "/dev/vda",
        "blockDeviceMapping": [],
        "virtualizationType": "hvm",
        "clientToken": inst.owner.client_token or "",
        "tagSet": tag_items(inst.tags),
        "cpuOptions": {"coreCount": vm.vcpu, "threadsPerCore": 1},
        "metadataOptions": {
            "state": "applied",
            "httpTokens": meta.http_tokens or "optional",
            "httpEndpoint": "enabled",
        },
    }


def _facts(inst: Instance, item: dict[str, Any]) -> dict[str, list[str]]:
    facts = {
        "instance-id": [item["instanceId"]],
        "instance-state-name": [item["instanceState"]["name"]],
        "instance-state-code": [str(item["instanceState"]["code"])],
        "instance-type": [item["instanceType"]],
        "reservation-id": [inst.owner.reservation_id],
        "image-id": [item["imageId"]],
        "key-name": [item["keyName"] or ""],
        "availability-zone": [item["placement"]["availabilityZone"]],
        "ip-address": [item["ipAddress"] or ""],
        "private-ip-address": [item["privateIpAddress"] or ""],
        "client-token": [item["clientToken"]],
        "tag-key": list(inst.tags),
        "tag-value": list(inst.tags.values()),
    }
    facts.update({f"tag:{k}": [v] for k, v in inst.tags.items()})
    return facts


def group_ids(conn: Connection, user_id: int) -> dict[str, str]:
    return {g.name: group_id(g.id) for g in ec2_objects.select_security_groups(conn, user_id)}


def reservation_body(
    instances: Sequence[Instance], owner_id: str, zone: str, groups: dict[str, str]
) -> list[dict[str, Any]]:
    """reservationSet items: the instances grouped by reservation, in order."""
    items = [(inst, instance_item(inst, zone, groups)) for inst in instances]
    return _group(items, owner_id)


def _group(items: Sequence[tuple[Instance, dict[str, Any]]], owner_id: str) -> list[dict[str, Any]]:
    reservations: dict[str, dict[str, Any]] = {}
    for inst, item in items:
        reservation = reservations.setdefault(
            inst.owner.reservation_id,
            {
                "reservationId": inst.owner.reservation_id,
                "ownerId": owner_id,
                "groupSet": [],
                "instancesSet": [],
            },
        )
        reservation["instancesSet"].append(item)
    return list(reservations.values())


def _query(filters: Filters, vm_ids: list[int] | None, ctx: Ec2Context) -> InstanceQuery:
    """What the store can narrow the listing by (a superset of what the filters keep)."""
    states = None
    names = filters.exact("instance-state-name")
    if names is not None:
        states = frozenset(s for n in names for s in _EC2_STATES.get(n, ()))
    wanted = filters.exact("instance-id")
    if wanted is not None:
        parsed = set()
        for value in wanted:
            try:
                parsed.add(vm_id_of(value))
            except InvalidInput:
                continue  # matches nothing
        vm_ids = sorted(parsed & set(vm_ids)) if vm_ids is not None else sorted(parsed)
    return InstanceQuery(
        visible_since=ctx.visible_since(),
        vm_ids=vm_ids,
        states=states,
        instance_types=filters.exact("instance-type"),
        reservation_ids=filters.exact("reservation-id"),
        tags=filters.tags(),
        tag_keys=filters.exact("tag-key"),
    )


def _describe(
    conn: Connection, ctx: Ec2Context, query: InstanceQuery, filters: Filters, limit: int | None
) -> tuple[list[dict[str, Any]], str | None, list[Instance]]:
    """(reservationSet, next token, the instances) in one read transaction."""
    groups = group_ids(conn, ctx.user_id)
    kept: list[tuple[Instance, dict[str, Any]]] = []
    after = query.after
    token = None
    while True:
        size = limit or _CHUNK
        page = store_ec2.select_instances(
            conn, ctx.user_id, replace(query, after=after, limit=size)
        )
        for inst in page:
            item = instance_item(inst, ctx.config.zone, groups)
            if not filters.items or filters.matches(_facts(inst, item)):
                kept.append((inst, item))
        if len(page) < size:
            break
        after = page[-1].vm.id
        if limit is not None:
            token = encode_token("instances", after)
            break
    return _group(kept, ctx.owner_id), token, [inst for inst, _ in kept]


async def describe_instances(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    vm_ids = instance_ids(params) or None
    filters = parse_filters(params, _FILTERS)
    limit = params.number("MaxResults", low=5, high=1000)
    if limit is not None and vm_ids:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    after = decode_token(params.text("NextToken", max_len=1024), "instances")
    if after is not None and not isinstance(after, int):
        raise invalid("NextToken", params.text("NextToken"), "Use the previous NextToken.")
    ctx.commit()
    query = replace(_query(filters, vm_ids, ctx), after=after or 0)
    reservations, token, found = await ctx.read(_describe, ctx, query, filters, limit)
    if vm_ids:
        missing_ids = sorted(set(vm_ids) - {i.vm.id for i in found})
        if missing_ids and not filters.items:
            raise _not_found(missing_ids)
        if missing_ids:  # filtered out, or not ours: tell which do not exist at all
            owned = await ctx.read(store_ec2.owned_vm_ids, ctx.user_id, missing_ids)
            if set(missing_ids) - owned:
                raise _not_found(sorted(set(missing_ids) - owned))
    return {"reservationSet": reservations, "nextToken": token}


# --- operations ------------------------------------------------------------------------------

_VERB = {"terminate": "terminated", "stop": "stopped", "start": "started", "reboot": "rebooted"}


def _plan(vm: Vm, verb: str, force: bool) -> tuple[Operation, dict[str, Any]] | None:
    """The Stratus operation for an EC2 verb on this VM; None when there is nothing to do
    (EC2 answers such repeats with success); IllegalOperation when it is not allowed."""
    state, action = vm.state, vm.action
    if verb == "terminate":
        if state is VmState.DONE or action in _TERMINATING:
            return None
        if state in TRANSIENT_STATES:  # EC2 terminates a pending or stopping instance
            return Operation.RECOVER, {"recover": RecoverMode.DELETE}
        return Operation.TERMINATE, {"hard": force}
    name = ec2_state(state, action)[1]
    if verb == "stop":
        if name in ("stopped", "stopping") and state is not VmState.FAILED:
            return None
        return Operation.POWEROFF, {"hard": force}
    if verb == "start":
        if name in ("pending", "running"):
            return None
        return Operation.RESUME, {}
    return Operation.REBOOT, {}


def _incorrect(vm: Vm, verb: str) -> Ec2Error:
    name = ec2_state(vm.state, vm.action)[1]
    return Ec2Error(
        "IncorrectInstanceState",
        f"The instance '{instance_id(vm.id)}' is {name} (Stratus state {vm.state.value}"
        f"{': ' + vm.reason if vm.state is VmState.FAILED else ''}), so it cannot be "
        f"{_VERB[verb]}",
    )


def _busy(vm: Vm) -> bool:
    """RUNNING with an action in progress (a reboot): it accepts operations once done."""
    return vm.state is VmState.RUNNING and vm.action is not None


async def _apply(ctx: Ec2Context, vm_id: int, verb: str, force: bool) -> Vm:
    """Apply a verb to one VM, planning again when the engine moved it between our read
    and our write, and waiting (at most _BUSY_WAIT s) for an action in progress."""
    deadline = time.monotonic() + _BUSY_WAIT
    while True:
        vm = await ctx.run(ctx.engine.store.get_vm, vm_id)
        plan = _plan(vm, verb, force)
        if plan is None:
            return vm
        try:
            return await ctx.engine.operate(vm_id, plan[0], **plan[1])
        except IllegalOperation:
            fresh = await ctx.run(ctx.engine.store.get_vm, vm_id)
            if time.monotonic() > deadline or not (_busy(fresh) or fresh.version != vm.version):
                raise _incorrect(fresh, verb) from None
            await asyncio.sleep(0.1)


async def operate(
    ctx: Ec2Context, vm_ids: Sequence[int], verb: str, force: bool = False
) -> list[dict[str, Any]]:
    """Apply an EC2 verb to owned instances: all are checked before any is changed."""
    query = InstanceQuery(visible_since=ctx.visible_since(), vm_ids=vm_ids)
    found = {i.vm.id: i.vm for i in await ctx.read(store_ec2.select_instances, ctx.user_id, query)}
    missing_ids = [i for i in vm_ids if i not in found]
    if missing_ids:
        raise _not_found(missing_ids)
    for vm_id in dict.fromkeys(vm_ids):
        vm = found[vm_id]
        plan = _plan(vm, verb, force)
        if plan is not None and not _busy(vm):
            try:
                plan_operation(plan[0], vm.state, vm.action, vm.failed_state, **plan[1])
            except IllegalOperation:
                raise _incorrect(vm, verb) from None
    ctx.commit()
    changes = []
    for vm_id in dict.fromkeys(vm_ids):
        before = found[vm_id]
        after = await _apply(ctx, vm_id, verb, force)
        previous, current = (
            ec2_state(before.state, before.action),
            ec2_state(after.state, after.action),
        )
        changes.append(
            {
                "instanceId": instance_id(vm_id),
                "currentState": {"code": current[0], "name": current[1]},
                "previousState": {"code": previous[0], "name": previous[1]},
            }
        )
    return changes


async def end_vms(ctx: Ec2Context, vm_ids: Sequence[int]) -> None:
    """Terminate VMs just made for a request that then failed (best effort, logged)."""
    for vm_id in vm_ids:
        try:
            await _apply(ctx, vm_id, "terminate", True)
        except Exception:
            log.exception("VM %d of a failed RunInstances: cannot terminate it", vm_id)


def _ids(params: Params) -> list[int]:
    ids = instance_ids(params)
    if not ids:
        raise missing("InstanceId.1")
    return ids


async def terminate_instances(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    return {"instancesSet": await operate(ctx, _ids(params), "terminate")}


async def stop_instances(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    force = params.flag("Force")
    return {"instancesSet": await operate(ctx, _ids(params), "stop", force)}


async def start_instances(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    return {"instancesSet": await operate(ctx, _ids(params), "start")}


async def reboot_instances(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    await operate(ctx, _ids(params), "reboot")
    return {"return": True}
