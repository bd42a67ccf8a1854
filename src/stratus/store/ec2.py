"""The EC2 API's records beside the VMs and images: instance ownership, tags, AMI details.

A page of instances is read with a fixed number of queries whatever its size (the VMs,
then their tags, leases and addresses by the page's ids), never one query per VM.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, exists, func, or_, select
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict, InvalidInput
from stratus.model.lifecycle import VmState
from stratus.model.records import Vm
from stratus.store.tables import (
    ec2_addresses,
    ec2_images,
    ec2_instances,
    ec2_keypairs,
    ec2_security_groups,
    ec2_tags,
    leases,
    vms,
)
from stratus.store.vms import vm_query, vm_reader

__all__ = [
    "MAX_TAGS",
    "Ec2Image",
    "Instance",
    "InstanceQuery",
    "Ownership",
    "Tag",
    "delete_tags",
    "ec2_image_rows",
    "insert_ec2_image",
    "insert_instances",
    "like_pattern",
    "owned_image_ids",
    "owned_resources",
    "owned_vm_ids",
    "reservation_of_token",
    "select_instances",
    "select_tags",
    "set_tags",
    "tags_of",
    "usage_of",
]

MAX_TAGS = 50  # per resource, as in EC2


@dataclass(frozen=True)
class Ownership:
    """An instance's EC2 record: whose it is and how it was launched."""

    vm_id: int
    instance_id: str
    user_id: int
    reservation_id: str
    client_token: str | None
    launch_index: int
    instance_type: str


@dataclass(frozen=True)
class Instance:
    """A VM as DescribeInstances shows it, with what the page's extra queries found."""

    vm: Vm
    owner: Ownership
    tags: dict[str, str] = field(default_factory=dict)
    private_ip: str | None = None  # its first NIC's IPv4 lease
    public_ip: str | None = None  # its associated elastic address


@dataclass(frozen=True)
class InstanceQuery:
    """Which of a user's instances to read. Tag values may hold * and ? wildcards; the
    store's match is a superset (LIKE ignores case on SQLite): callers check exactly."""

    visible_since: datetime  # terminated (DONE) VMs last changed before this are hidden
    vm_ids: Collection[int] | None = None
    states: Collection[VmState] | None = None
    instance_types: Collection[str] | None = None
    reservation_ids: Collection[str] | None = None
    tags: Sequence[tuple[str, Sequence[str]]] = ()  # (key, value patterns); all must match
    tag_keys: Collection[str] | None = None  # the instance has one of these keys
    after: int = 0  # VM id to continue after
    limit: int | None = None


@dataclass(frozen=True)
class Tag:
    resource_id: str
    key: str
    value: str


@dataclass(frozen=True)
class Ec2Image:
    """How an AMI boots, and who registered it through the EC2 API (None: the admin)."""

    image_id: int
    user_id: int | None
    kernel_id: int | None
    ramdisk_id: int | None
    root_device: str


def like_pattern(pattern: str) -> str:
    """An EC2 filter value (* any run, ? one character) as a LIKE pattern with \\ escapes."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _matches(column: Any, patterns: Sequence[str]) -> ColumnElement[bool]:
    exact = [p for p in patterns if "*" not in p and "?" not in p]
    wild = [p for p in patterns if p not in exact]
    terms: list[ColumnElement[bool]] = [column.like(like_pattern(p), escape="\\") for p in wild]
    if exact:
        terms.append(column.in_(exact))
    return or_(*terms)


# --- instances -------------------------------------------------------------------------------


def insert_instances(
    conn: Connection,
    user_id: int,
    owners: Sequence[Ownership],
    tags: Mapping[str, str],
) -> None:
    """Record who owns new instances, and their tags; Conflict if the ClientToken was
    used meanwhile (the caller then ends the VMs it made)."""
    try:
        conn.execute(
            ec2_instances.insert(),
            [
                {
                    "vm_id": o.vm_id,
                    "instance_id": o.instance_id,
                    "user_id": user_id,
                    "reservation_id": o.reservation_id,
                    "client_token": o.client_token,
                    "launch_index": o.launch_index,
                    "instance_type": o.instance_type,
                }
                for o in owners
            ],
        )
    except IntegrityError as exc:
        raise Conflict("the ClientToken was used by a concurrent request") from exc
    set_tags(conn, user_id, [o.instance_id for o in owners], tags)


def reservation_of_token(conn: Connection, user_id: int, client_token: str) -> list[int]:
    """The VM ids an earlier RunInstances with this ClientToken made (launch order)."""
    stmt = (
        select(ec2_instances.c.vm_id)
        .where(ec2_instances.c.user_id == user_id, ec2_instances.c.client_token == client_token)
        .order_by(ec2_instances.c.launch_index)
    )
    return list(conn.execute(stmt).scalars())


def usage_of(conn: Connection, user_id: int) -> tuple[int, float, int]:
    """(instances, CPU, memory MB) of a user's VMs that are not terminated."""
    row = conn.execute(
        select(func.count(), func.coalesce(func.sum(vms.c.cpu), 0), func.sum(vms.c.memory))
        .select_from(ec2_instances.join(vms, vms.c.id == ec2_instances.c.vm_id))
        .where(ec2_instances.c.user_id == user_id, vms.c.state != VmState.DONE.value)
    ).one()
    return int(row[0]), float(row[1] or 0), int(row[2] or 0)


def owned_vm_ids(conn: Connection, user_id: int, vm_ids: Iterable[int]) -> set[int]:
    wanted = sorted(set(vm_ids))
    if not wanted:
        return set()
    stmt = select(ec2_instances.c.vm_id).where(
        ec2_instances.c.user_id == user_id, ec2_instances.c.vm_id.in_(wanted)
    )
    return set(conn.execute(stmt).scalars())


def _instance_filter(user_id: int, query: InstanceQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [
        ec2_instances.c.user_id == user_id,
        vms.c.id > query.after,
        or_(vms.c.state != VmState.DONE.value, vms.c.updated >= query.visible_since),
    ]
    if query.vm_ids is not None:
        where.append(vms.c.id.in_(sorted(query.vm_ids)))
    if query.states is not None:
        where.append(vms.c.state.in_(sorted(s.value for s in query.states)))
    if query.instance_types is not None:
        where.append(ec2_instances.c.instance_type.in_(sorted(query.instance_types)))
    if query.reservation_ids is not None:
        where.append(ec2_instances.c.reservation_id.in_(sorted(query.reservation_ids)))
    for key, patterns in query.tags:
        where.append(
            exists().where(
                ec2_tags.c.resource_id == ec2_instances.c.instance_id,
                ec2_tags.c.key == key,
                _matches(ec2_tags.c.value, patterns),
            )
        )
    if query.tag_keys is not None:
        where.append(
            exists().where(
                ec2_tags.c.resource_id == ec2_instances.c.instance_id,
                ec2_tags.c.key.in_(sorted(query.tag_keys)),
            )
        )
    return where


_OWNER_COLUMNS = (  # after vm_id, the fields of Ownership
    ec2_instances.c.instance_id,
    ec2_instances.c.user_id,
    ec2_instances.c.reservation_id,
    ec2_instances.c.client_token,
    ec2_instances.c.launch_index,
    ec2_instances.c.instance_type,
)


def select_instances(conn: Connection, user_id: int, query: InstanceQuery) -> list[Instance]:
    """A page of a user's instances in VM id order, with tags, private and public IPs.

    Four queries whatever the page's size: the VMs with their owner rows, then the tags,
    leases and addresses of the page's id range (no list of ids to bind).
    """
    stmt = (
        vm_query()
        .add_columns(*_OWNER_COLUMNS)
        .join(ec2_instances, ec2_instances.c.vm_id == vms.c.id)
        .where(*_instance_filter(user_id, query))
        .order_by(vms.c.id)
    )
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    read_vm = vm_reader(conn.dialect.name)
    width = len(stmt.selected_columns) - len(_OWNER_COLUMNS)
    found = [(read_vm(row[:width]), Ownership(row[0], *row[width:])) for row in conn.execute(stmt)]
    if not found:
        return []
    low, high = found[0][0].id, found[-1][0].id
    in_page = ec2_instances.c.user_id == user_id, ec2_instances.c.vm_id.between(low, high)
    tags: dict[str, dict[str, str]] = {}
    tag_rows = conn.execute(
        select(ec2_tags.c.resource_id, ec2_tags.c.key, ec2_tags.c.value)
        .join(ec2_instances, ec2_instances.c.instance_id == ec2_tags.c.resource_id)
        .where(*in_page)
        .order_by(ec2_tags.c.resource_id, ec2_tags.c.key)
    )
    for resource_id, key, value in tag_rows:
        tags.setdefault(resource_id, {})[key] = value
    private: dict[int, str] = {}
    lease_rows = conn.execute(
        select(leases.c.vm_id, leases.c.ip)
        .where(leases.c.vm_id.between(low, high), leases.c.ip.is_not(None))
        .order_by(leases.c.vm_id, leases.c.nic_index)
    )
    for vm_id, ip in lease_rows:
        private.setdefault(vm_id, ip)
    public = dict(
        conn.execute(
            select(ec2_addresses.c.vm_id, ec2_addresses.c.public_ip).where(
                ec2_addresses.c.user_id == user_id, ec2_addresses.c.vm_id.between(low, high)
            )
        ).all()
    )
    return [
        Instance(
            vm=vm,
            owner=owner,
            tags=tags.get(owner.instance_id, {}),
            private_ip=private.get(vm.id),
            public_ip=public.get(vm.id) if vm.state is not VmState.DONE else None,
        )
        for vm, owner in found
    ]


# --- tags ------------------------------------------------------------------------------------


def tags_of(conn: Connection, resource_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """resource id -> {key: value}, for the resources that have tags."""
    if not resource_ids:
        return {}
    found: dict[str, dict[str, str]] = {}
    stmt = (
        select(ec2_tags.c.resource_id, ec2_tags.c.key, ec2_tags.c.value)
        .where(ec2_tags.c.resource_id.in_(sorted(set(resource_ids))))
        .order_by(ec2_tags.c.resource_id, ec2_tags.c.key)
    )
    for resource_id, key, value in conn.execute(stmt):
        found.setdefault(resource_id, {})[key] = value
    return found


def set_tags(
    conn: Connection, user_id: int, resource_ids: Sequence[str], tags: Mapping[str, str]
) -> None:
    """Add or overwrite tags on resources the caller checked the user owns."""
    if not tags or not resource_ids:
        return
    existing = tags_of(conn, resource_ids)
    for resource_id in resource_ids:
        keys = set(existing.get(resource_id, {})) | set(tags)
        if len(keys) > MAX_TAGS:
            raise InvalidInput(
                f"{resource_id} would have {len(keys)} tags: at most {MAX_TAGS} are allowed",
                hint="delete some with DeleteTags",
            )
    conn.execute(
        delete(ec2_tags).where(
            ec2_tags.c.resource_id.in_(sorted(set(resource_ids))), ec2_tags.c.key.in_(list(tags))
        )
    )
    conn.execute(
        ec2_tags.insert(),
        [
            {"resource_id": r, "key": k, "value": v, "user_id": user_id}
            for r in dict.fromkeys(resource_ids)
            for k, v in tags.items()
        ],
    )


def delete_tags(
    conn: Connection,
    user_id: int,
    resource_ids: Sequence[str],
    keys: Sequence[tuple[str, str | None]] | None,
) -> None:
    """Delete tags: every tag when `keys` is None, else each key (only with that value
    when one is given)."""
    where: list[ColumnElement[bool]] = [
        ec2_tags.c.user_id == user_id,
        ec2_tags.c.resource_id.in_(sorted(set(resource_ids))),
    ]
    if keys is not None:
        if not keys:
            return
        where.append(
            or_(
                *(
                    and_(ec2_tags.c.key == key, ec2_tags.c.value == value)
                    if value is not None
                    else ec2_tags.c.key == key
                    for key, value in keys
                )
            )
        )
    conn.execute(delete(ec2_tags).where(*where))


def select_tags(
    conn: Connection,
    user_id: int,
    *,
    resource_ids: Collection[str] | None = None,
    keys: Sequence[str] | None = None,
    values: Sequence[str] | None = None,
    prefixes: Collection[str] | None = None,
    after: tuple[str, str] | None = None,
    limit: int | None = None,
) -> list[Tag]:
    """A page of a user's tags by (resource id, key); keys/values are patterns (a
    superset, as in InstanceQuery); `prefixes` keeps ids starting with one of them."""
    stmt = select(ec2_tags.c.resource_id, ec2_tags.c.key, ec2_tags.c.value).where(
        ec2_tags.c.user_id == user_id
    )
    if resource_ids is not None:
        stmt = stmt.where(ec2_tags.c.resource_id.in_(sorted(resource_ids)))
    if keys is not None:
        stmt = stmt.where(_matches(ec2_tags.c.key, keys))
    if values is not None:
        stmt = stmt.where(_matches(ec2_tags.c.value, values))
    if prefixes is not None:
        stmt = stmt.where(
            or_(
                *(ec2_tags.c.resource_id.like(like_pattern(p) + "%", escape="\\") for p in prefixes)
            )
        )
    if after is not None:
        stmt = stmt.where(
            or_(
                ec2_tags.c.resource_id > after[0],
                and_(ec2_tags.c.resource_id == after[0], ec2_tags.c.key > after[1]),
            )
        )
    stmt = stmt.order_by(ec2_tags.c.resource_id, ec2_tags.c.key)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [Tag(*row) for row in conn.execute(stmt)]


# --- images ----------------------------------------------------------------------------------


def insert_ec2_image(
    conn: Connection,
    now: datetime,
    image: Ec2Image,
) -> None:
    """Record an AMI's owner and boot details (replacing a row left by a deleted image)."""
    conn.execute(delete(ec2_images).where(ec2_images.c.image_id == image.image_id))
    conn.execute(
        ec2_images.insert().values(
            image_id=image.image_id,
            user_id=image.user_id,
            kernel_id=image.kernel_id,
            ramdisk_id=image.ramdisk_id,
            root_device=image.root_device,
            created=now,
        )
    )


def ec2_image_rows(
    conn: Connection, image_ids: Collection[int] | None = None
) -> dict[int, Ec2Image]:
    """image id -> its EC2 details, for the given images (every one when None)."""
    stmt = select(
        ec2_images.c.image_id,
        ec2_images.c.user_id,
        ec2_images.c.kernel_id,
        ec2_images.c.ramdisk_id,
        ec2_images.c.root_device,
    )
    if image_ids is not None:
        stmt = stmt.where(ec2_images.c.image_id.in_(sorted(image_ids)))
    return {row[0]: Ec2Image(*row) for row in conn.execute(stmt)}


def owned_image_ids(conn: Connection, user_id: int) -> set[int]:
    stmt = select(ec2_images.c.image_id).where(ec2_images.c.user_id == user_id)
    return set(conn.execute(stmt).scalars())


# --- ownership of any resource -----------------------------------------------------------------

_OWNED_BY_NUMBER = {  # id prefix -> (table, its numeric id column)
    "sg": (ec2_security_groups, ec2_security_groups.c.id),
    "eipalloc": (ec2_addresses, ec2_addresses.c.id),
    "key": (ec2_keypairs, ec2_keypairs.c.id),
    "ami": (ec2_images, ec2_images.c.image_id),
}


def owned_resources(
    conn: Connection, user_id: int, resources: Mapping[str, tuple[str, int]]
) -> set[str]:
    """Which of the resources (id -> (prefix, number)) the user owns; one query per kind."""
    owned: set[str] = set()
    instances = [rid for rid, (prefix, _) in resources.items() if prefix == "i"]
    if instances:
        owned |= set(
            conn.execute(
                select(ec2_instances.c.instance_id).where(
                    ec2_instances.c.user_id == user_id,
                    ec2_instances.c.instance_id.in_(sorted(instances)),
                )
            ).scalars()
        )
    for prefix, (table, column) in _OWNED_BY_NUMBER.items():
        wanted = {n: rid for rid, (p, n) in resources.items() if p == prefix}
        if wanted:
            stmt = select(column).where(table.c.user_id == user_id, column.in_(sorted(wanted)))
            owned |= {wanted[n] for n in conn.execute(stmt).scalars()}
    return owned
