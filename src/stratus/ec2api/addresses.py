"""AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress, DescribeAddresses.

Elastic addresses come from the configured pool (`--ec2-address-pool`); associating one
with an instance is bookkeeping shown by DescribeInstances (ipAddress), not NAT: traffic
to the address reaches nothing unless the operator routes it. An association ends when
its instance is terminated.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import Connection

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.filters import parse_filters, tag_items
from stratus.ec2api.instances import instance_ids
from stratus.ec2api.protocol import Ec2Error, Params, invalid, missing
from stratus.ec2api.tags import tag_specifications
from stratus.model.ec2ids import allocation_id, association_id, instance_id, number_of
from stratus.model.errors import InvalidInput
from stratus.model.lifecycle import VmState
from stratus.store import ec2 as store_ec2
from stratus.store import ec2_objects
from stratus.store.ec2 import InstanceQuery
from stratus.store.ec2_objects import Address

__all__ = [
    "allocate_address",
    "associate_address",
    "describe_addresses",
    "disassociate_address",
    "release_address",
]


def _number(prefix: str, value: str, code: str) -> int:
    try:
        return number_of(prefix, value)
    except InvalidInput:
        raise Ec2Error(code, f"The ID '{value}' is malformed") from None


def _public_ip(value: str, name: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise invalid(name, value, "Expected an IPv4 address.") from None


def _find(conn: Connection, user_id: int, number: int | None, public_ip: str | None) -> Address:
    found = ec2_objects.select_addresses(
        conn,
        user_id,
        ids=[number] if number is not None else None,
        public_ips=[public_ip] if public_ip is not None else None,
    )
    if not found:
        if number is not None:
            raise Ec2Error(
                "InvalidAllocationID.NotFound",
                f"The allocation ID '{allocation_id(number)}' does not exist",
            )
        raise Ec2Error(
            "InvalidAddress.NotFound", f"The address '{public_ip}' does not belong to you"
        )
    return found[0]


def _address_ref(params: Params) -> tuple[int | None, str | None]:
    raw = params.text("AllocationId", max_len=64)
    if raw:
        return _number("eipalloc", raw, "InvalidAllocationID.Malformed"), None
    ip = params.text("PublicIp", max_len=64)
    if ip:
        return None, _public_ip(ip, "PublicIp")
    raise missing("AllocationId")


async def allocate_address(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    domain = params.text("Domain", default="vpc", max_len=16) or "vpc"
    if domain not in ("vpc", "standard"):
        raise invalid("Domain", domain, "Expected vpc or standard.")
    tags = tag_specifications(params, {"elastic-ip"})
    ctx.commit()

    def allocate(conn: Connection) -> Address | None:
        address = ec2_objects.allocate_address(conn, ctx.now(), ctx.user_id, ctx.config.pool)
        if address is not None:
            store_ec2.set_tags(conn, ctx.user_id, [allocation_id(address.id)], tags)
        return address

    address = await ctx.write(allocate)
    if address is None:
        raise Ec2Error(
            "AddressLimitExceeded",
            f"every address of the pool {ctx.config.address_pool} is allocated",
        )
    return {
        "publicIp": address.public_ip,
        "domain": domain,
        "allocationId": allocation_id(address.id),
    }


async def associate_address(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    number, public_ip = _address_ref(params)
    raw = params.text("InstanceId", max_len=64)
    if not raw:
        raise missing("InstanceId")
    vm_id = instance_ids(Params({"InstanceId": {"1": raw}}))[0]
    reassociate = params.flag("AllowReassociation", default=True)

    def associate(conn: Connection) -> Address:
        address = _find(conn, ctx.user_id, number, public_ip)
        query = InstanceQuery(visible_since=ctx.now(), vm_ids=[vm_id])
        found = store_ec2.select_instances(conn, ctx.user_id, query)
        if not found or found[0].vm.state is VmState.DONE:
            raise Ec2Error(
                "InvalidInstanceID.NotFound",
                f"The instance ID '{instance_id(vm_id)}' does not exist",
            )
        if address.vm_id not in (None, vm_id) and not reassociate:
            raise Ec2Error(
                "Resource.AlreadyAssociated",
                f"the address {address.public_ip} is associated with "
                f"{instance_id(address.vm_id or 0)}: pass AllowReassociation",
            )
        ctx.commit()
        ec2_objects.set_address_vm(conn, ctx.user_id, address.id, vm_id)
        return address

    address = await ctx.write(associate)
    return {"return": True, "associationId": association_id(address.id)}


async def disassociate_address(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    raw = params.text("AssociationId", max_len=64)
    number: int | None = None
    public_ip = None
    if raw:
        number = _number("eipassoc", raw, "InvalidAssociationID.NotFound")
    elif params.text("PublicIp"):
        public_ip = _public_ip(params.text("PublicIp") or "", "PublicIp")
    else:
        raise missing("AssociationId")

    def disassociate(conn: Connection) -> None:
        address = _find(conn, ctx.user_id, number, public_ip)
        if address.vm_id is None:
            raise Ec2Error(
                "InvalidAssociationID.NotFound",
                f"The association ID '{raw or public_ip}' does not exist",
            )
        ctx.commit()
        ec2_objects.set_address_vm(conn, ctx.user_id, address.id, None)

    await ctx.write(disassociate)
    return {"return": True}


async def release_address(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    number, public_ip = _address_ref(params)

    def release(conn: Connection) -> None:
        address = _find(conn, ctx.user_id, number, public_ip)
        if address.vm_id is not None:
            raise Ec2Error(
                "InvalidIPAddress.InUse",
                f"the address {address.public_ip} is associated with "
                f"{instance_id(address.vm_id)}: disassociate it first",
            )
        ctx.commit()
        ec2_objects.release_address(conn, ctx.user_id, address.id)
        store_ec2.delete_tags(conn, ctx.user_id, [allocation_id(address.id)], None)

    await ctx.write(release)
    return {"return": True}


async def describe_addresses(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    ips = [_public_ip(ip, "PublicIp") for ip in params.texts("PublicIp", max_len=64)]
    numbers = [
        _number("eipalloc", value, "InvalidAllocationID.Malformed")
        for value in params.texts("AllocationId", max_len=64)
    ]
    filters = parse_filters(
        params,
        {
            "public-ip",
            "allocation-id",
            "association-id",
            "instance-id",
            "domain",
            "tag-key",
            "tag:",
        },
    )
    ctx.commit()

    def read(conn: Connection) -> tuple[list[Address], dict[str, dict[str, str]]]:
        found = ec2_objects.select_addresses(
            conn, ctx.user_id, ids=numbers or None, public_ips=ips or None
        )
        return found, store_ec2.tags_of(conn, [allocation_id(a.id) for a in found])

    found, tags = await ctx.read(read)
    for ip in ips:
        if ip not in {a.public_ip for a in found}:
            raise Ec2Error("InvalidAddress.NotFound", f"Address '{ip}' not found.")
    for number in numbers:
        if number not in {a.id for a in found}:
            raise Ec2Error(
                "InvalidAllocationID.NotFound",
                f"The allocation ID '{allocation_id(number)}' does not exist",
            )
    items = []
    for address in found:
        aid = allocation_id(address.id)
        address_tags = tags.get(aid, {})
        instance = instance_id(address.vm_id) if address.vm_id is not None else None
        association = association_id(address.id) if instance else None
        facts = {
            "public-ip": [address.public_ip],
            "allocation-id": [aid],
            "association-id": [association or ""],
            "instance-id": [instance or ""],
            "domain": ["vpc"],
            "tag-key": list(address_tags),
        } | {f"tag:{k}": [v] for k, v in address_tags.items()}
        if filters.matches(facts):
            items.append(
                {
                    "publicIp": address.public_ip,
                    "allocationId": aid,
                    "domain": "vpc",
                    "instanceId": instance,
                    "associationId": association,
                    "tagSet": tag_items(address_tags),
                }
            )
    return {"addressesSet": items}
