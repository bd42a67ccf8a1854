"""CreateSecurityGroup, AuthorizeSecurityGroupIngress, DescribeSecurityGroups, DeleteSecurityGroup.

Groups and their ingress rules are kept and shown as EC2 shows them; Stratus does not
enforce them on its own networks (a VM's traffic is whatever its network allows). Each
rule is stored as one (protocol, ports, source) entry and shown grouped by protocol and
ports, as IpPermissions.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import Connection

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.filters import parse_filters, tag_items
from stratus.ec2api.protocol import Ec2Error, Params, invalid, missing
from stratus.ec2api.tags import tag_specifications
from stratus.model.ec2ids import InstanceMetadata, group_id, number_of
from stratus.model.errors import Conflict, InvalidInput
from stratus.model.lifecycle import VmState
from stratus.store import ec2 as store_ec2
from stratus.store import ec2_objects
from stratus.store.ec2 import InstanceQuery
from stratus.store.ec2_objects import SecurityGroup

__all__ = [
    "authorize_ingress",
    "create_security_group",
    "delete_security_group",
    "describe_security_groups",
]

_PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp"}
_PROTOCOLS |= {"icmpv6": "icmpv6", "58": "icmpv6", "-1": "-1", "all": "-1"}
_LIVE = frozenset(VmState) - {VmState.DONE}


def _group_ref(params: Params) -> tuple[int | None, str | None]:
    """(id number, name) from GroupId or GroupName; one of them is required."""
    raw_id = params.text("GroupId", max_len=64)
    name = params.text("GroupName", max_len=255)
    if raw_id:
        try:
            return number_of("sg", raw_id), None
        except InvalidInput:
            raise Ec2Error("InvalidGroupId.Malformed", f'Invalid id: "{raw_id}"') from None
    if name:
        return None, name
    raise missing("GroupId")


def _find(conn: Connection, user_id: int, number: int | None, name: str | None) -> SecurityGroup:
    found = ec2_objects.select_security_groups(
        conn,
        user_id,
        ids=[number] if number is not None else None,
        names=[name] if name is not None else None,
        lock=True,
    )
    if not found:
        shown = group_id(number) if number is not None else name
        raise Ec2Error("InvalidGroup.NotFound", f"The security group '{shown}' does not exist")
    return found[0]


async def create_security_group(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    name = params.required("GroupName", max_len=255)
    if name.startswith("sg-"):
        raise invalid("GroupName", name, "Group names may not start with 'sg-'.")
    description = params.required("GroupDescription", max_len=255)
    tags = tag_specifications(params, {"security-group"})
    ctx.commit()

    def insert(conn: Connection) -> SecurityGroup:
        group = ec2_objects.insert_security_group(conn, ctx.now(), ctx.user_id, name, description)
        store_ec2.set_tags(conn, ctx.user_id, [group_id(group.id)], tags)
        return group

    try:
        group = await ctx.write(insert)
    except Conflict:
        raise Ec2Error(
            "InvalidGroup.Duplicate", f"The security group '{name}' already exists"
        ) from None
    return {"return": True, "groupId": group_id(group.id), "tagSet": tag_items(tags)}


def _ports(perm: Params, protocol: str) -> tuple[int | None, int | None]:
    if protocol == "-1":
        return None, None
    low, high = (-1, 255) if protocol.startswith("icmp") else (0, 65535)
    start = perm.number("FromPort", low=low, high=high)
    end = perm.number("ToPort", low=low, high=high)
    if start is None or end is None:
        raise missing(perm.name("FromPort" if start is None else "ToPort"))
    if not protocol.startswith("icmp") and start > end:
        raise invalid(perm.name("FromPort"), start, "FromPort must not exceed ToPort.")
    return start, end


def _permission(conn: Connection, user_id: int, perm: Params) -> list[dict[str, Any]]:
    """One IpPermissions item (or the legacy top-level form) as stored rules."""
    raw = perm.required("IpProtocol", max_len=16).lower()
    protocol = _PROTOCOLS.get(raw, raw if raw.isdigit() and int(raw) <= 255 else None)
    if protocol is None:
        raise invalid(perm.name("IpProtocol"), raw, "Expected tcp, udp, icmp, -1 or a number.")
    start, end = _ports(perm, protocol)
    base = {"protocol": protocol, "from": start, "to": end}
    rules = []
    cidrs = [
        (r.required("CidrIp", max_len=64), r.text("Description") or "")
        for r in perm.items("IpRanges")
    ]
    if perm.has("CidrIp"):
        cidrs.append((perm.required("CidrIp", max_len=64), ""))
    for cidr, description in cidrs:
        try:
            network = ipaddress.IPv4Network(cidr, strict=False)
        except ValueError:
            raise invalid("CidrIp", cidr, "Expected an IPv4 CIDR such as 0.0.0.0/0.") from None
        rules.append(base | {"kind": "cidr", "source": str(network), "description": description})
    for item in perm.items("Ipv6Ranges"):
        cidr = item.required("CidrIpv6", max_len=64)
        try:
            network6 = ipaddress.IPv6Network(cidr, strict=False)
        except ValueError:
            raise invalid("CidrIpv6", cidr, "Expected an IPv6 CIDR such as ::/0.") from None
        rules.append(
            base
            | {
                "kind": "cidr6",
                "source": str(network6),
                "description": item.text("Description") or "",
            }
        )
    sources = [(g.text("GroupId", max_len=64), g.text("GroupName")) for g in perm.items("Groups")]
    if perm.has("SourceSecurityGroupName"):
        sources.append((None, perm.text("SourceSecurityGroupName")))
    for raw_id, name in sources:
        number = None
        if raw_id:
            try:
                number = number_of("sg", raw_id)
            except InvalidInput:
                raise Ec2Error("InvalidGroupId.Malformed", f'Invalid id: "{raw_id}"') from None
        source = _find(conn, user_id, number, name if number is None else None)
        rules.append(base | {"kind": "group", "source": group_id(source.id), "description": ""})
    if perm.items("PrefixListIds"):
        raise invalid(perm.name("PrefixListIds"), "...", "Prefix lists are not supported.")
    if not rules:
        raise missing(perm.name("IpRanges.1.CidrIp"))
    return rules


def _key(rule: dict[str, Any]) -> tuple[Any, ...]:
    return rule["protocol"], rule["from"], rule["to"], rule["kind"], rule["source"]


async def authorize_ingress(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    number, name = _group_ref(params)
    perms = params.items("IpPermissions")
    if params.has("IpProtocol"):
        perms.append(params)  # the legacy form: IpProtocol, FromPort, ToPort, CidrIp
    if not perms:
        raise missing("IpPermissions")

    def authorize(conn: Connection) -> None:
        group = _find(conn, ctx.user_id, number, name)
        new = [rule for perm in perms for rule in _permission(conn, ctx.user_id, perm)]
        ctx.commit()
        existing = {_key(rule) for rule in group.rules}
        for rule in new:
            if _key(rule) in existing:
                ports = f"{rule['from']}-{rule['to']}" if rule["from"] is not None else "all"
                raise Ec2Error(
                    "InvalidPermission.Duplicate",
                    f'the specified rule "peer: {rule["source"]}, {rule["protocol"].upper()}, '
                    f'ports: {ports}, ALLOW" already exists',
                )
            existing.add(_key(rule))
        ec2_objects.set_group_rules(conn, ctx.user_id, group.id, [*group.rules, *new])

    await ctx.write(authorize)
    return {"return": True}


def _permissions(rules: list[dict[str, Any]], owner_id: str) -> list[dict[str, Any]]:
    """Stored rules grouped by (protocol, ports) as ipPermissions items."""
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rule in rules:
        item = grouped.setdefault(
            (rule["protocol"], rule["from"], rule["to"]),
            {
                "ipProtocol": rule["protocol"],
                "fromPort": rule["from"],
                "toPort": rule["to"],
                "groups": [],
                "ipRanges": [],
                "ipv6Ranges": [],
                "prefixListIds": [],
            },
        )
        description = rule.get("description") or None
        if rule["kind"] == "cidr":
            item["ipRanges"].append({"cidrIp": rule["source"], "description": description})
        elif rule["kind"] == "cidr6":
            item["ipv6Ranges"].append({"cidrIpv6": rule["source"], "description": description})
        else:
            item["groups"].append({"userId": owner_id, "groupId": rule["source"]})
    return list(grouped.values())


_EGRESS = [{"ipProtocol": "-1", "groups": [], "ipRanges": [{"cidrIp": "0.0.0.0/0"}]}]


async def describe_security_groups(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    numbers = []
    for value in params.texts("GroupId", max_len=64):
        try:
            numbers.append(number_of("sg", value))
        except InvalidInput:
            raise Ec2Error("InvalidGroupId.Malformed", f'Invalid id: "{value}"') from None
    names = params.texts("GroupName", max_len=255)
    filters = parse_filters(
        params, {"group-name", "group-id", "description", "owner-id", "tag-key", "tag:"}
    )
    ctx.commit()

    def read(conn: Connection) -> tuple[list[SecurityGroup], dict[str, dict[str, str]]]:
        groups = ec2_objects.select_security_groups(
            conn, ctx.user_id, ids=numbers or None, names=names or None
        )
        return groups, store_ec2.tags_of(conn, [group_id(g.id) for g in groups])

    groups, tags = await ctx.read(read)
    for number in numbers:
        if number not in {g.id for g in groups}:
            raise Ec2Error(
                "InvalidGroup.NotFound", f"The security group '{group_id(number)}' does not exist"
            )
    for name in names:
        if name not in {g.name for g in groups}:
            raise Ec2Error("InvalidGroup.NotFound", f"The security group '{name}' does not exist")
    items = []
    for group in groups:
        gid = group_id(group.id)
        group_tags = tags.get(gid, {})
        facts = {
            "group-name": [group.name],
            "group-id": [gid],
            "description": [group.description],
            "owner-id": [ctx.owner_id],
            "tag-key": list(group_tags),
        } | {f"tag:{k}": [v] for k, v in group_tags.items()}
        if filters.matches(facts):
            items.append(
                {
                    "ownerId": ctx.owner_id,
                    "groupId": gid,
                    "groupName": group.name,
                    "groupDescription": group.description,
                    "ipPermissions": _permissions(group.rules, ctx.owner_id),
                    "ipPermissionsEgress": _EGRESS,
                    "tagSet": tag_items(group_tags),
                }
            )
    return {"securityGroupInfo": items}


async def delete_security_group(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    number, name = _group_ref(params)

    def delete(conn: Connection) -> str:
        group = _find(conn, ctx.user_id, number, name)
        ctx.commit()
        query = InstanceQuery(visible_since=ctx.now(), states=_LIVE)
        for inst in store_ec2.select_instances(conn, ctx.user_id, query):
            meta = InstanceMetadata.from_section(inst.vm.template.get("METADATA"))
            if group.name in meta.security_groups:
                raise Ec2Error(
                    "DependencyViolation",
                    f"resource {group_id(group.id)} has a dependent object "
                    f"({inst.owner.instance_id})",
                )
        ec2_objects.delete_security_group(conn, ctx.user_id, group.id)
        store_ec2.delete_tags(conn, ctx.user_id, [group_id(group.id)], None)
        return group_id(group.id)

    deleted = await ctx.write(delete)
    return {"return": True, "groupId": deleted}
