"""A user's EC2 key pairs, security groups and elastic addresses.

Each belongs to one user; every read and change names the user, so one user can never
see or touch another's. Names are unique per user (key pairs, groups), addresses across
all users (the pool is shared).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict
from stratus.model.lifecycle import VmState
from stratus.store.tables import ec2_addresses, ec2_keypairs, ec2_security_groups, vms

__all__ = [
    "Address",
    "KeyPair",
    "SecurityGroup",
    "allocate_address",
    "delete_keypair",
    "delete_security_group",
    "insert_keypair",
    "insert_security_group",
    "release_address",
    "select_addresses",
    "select_keypairs",
    "select_security_groups",
    "set_address_vm",
    "set_group_rules",
]


@dataclass(frozen=True)
class KeyPair:
    id: int
    name: str
    key_type: str
    fingerprint: str
    public_key: str
    created: datetime


@dataclass(frozen=True)
class SecurityGroup:
    id: int
    name: str
    description: str
    rules: list[dict[str, Any]]
    created: datetime


@dataclass(frozen=True)
class Address:
    id: int
    public_ip: str
    vm_id: int | None  # the instance it is associated with (None once that is terminated)


# --- key pairs -------------------------------------------------------------------------------


def insert_keypair(
    conn: Connection,
    now: datetime,
    user_id: int,
    *,
    name: str,
    key_type: str,
    fingerprint: str,
    public_key: str,
) -> KeyPair:
    """A new key pair; Conflict when the user has one of that name."""
    taken = select(ec2_keypairs.c.id).where(
        ec2_keypairs.c.user_id == user_id, ec2_keypairs.c.name == name
    )
    if conn.execute(taken).first() is not None:
        raise Conflict(f"the key pair {name!r} already exists")
    values = {
        "user_id": user_id,
        "name": name,
        "key_type": key_type,
        "fingerprint": fingerprint,
        "public_key": public_key,
        "created": now,
    }
    try:
        new_id = conn.execute(
            ec2_keypairs.insert().returning(ec2_keypairs.c.id), values
        ).scalar_one()
    except IntegrityError as exc:
        raise Conflict(f"the key pair {name!r} already exists") from exc
    return KeyPair(int(new_id), name, key_type, fingerprint, public_key, now)


def select_keypairs(
    conn: Connection,
    user_id: int,
    *,
    names: Collection[str] | None = None,
    ids: Collection[int] | None = None,
) -> list[KeyPair]:
    stmt = select(
        ec2_keypairs.c.id,
        ec2_keypairs.c.name,
        ec2_keypairs.c.key_type,
        ec2_keypairs.c.fingerprint,
        ec2_keypairs.c.public_key,
        ec2_keypairs.c.created,
    ).where(ec2_keypairs.c.user_id == user_id)
    if names is not None:
        stmt = stmt.where(ec2_keypairs.c.name.in_(sorted(names)))
    if ids is not None:
        stmt = stmt.where(ec2_keypairs.c.id.in_(sorted(ids)))
    return [KeyPair(*row) for row in conn.execute(stmt.order_by(ec2_keypairs.c.name))]


def delete_keypair(conn: Connection, user_id: int, key_id: int) -> None:
    conn.execute(
        delete(ec2_keypairs).where(ec2_keypairs.c.user_id == user_id, ec2_keypairs.c.id == key_id)
    )


# --- security groups -------------------------------------------------------------------------


def insert_security_group(
    conn: Connection, now: datetime, user_id: int, name: str, description: str
) -> SecurityGroup:
    """A new group without rules; Conflict when the user has one of that name."""
    taken = select(ec2_security_groups.c.id).where(
        ec2_security_groups.c.user_id == user_id, ec2_security_groups.c.name == name
    )
    if conn.execute(taken).first() is not None:
        raise Conflict(f"the security group {name!r} already exists")
    values = {
        "user_id": user_id,
        "name": name,
        "description": description,
        "rules": [],
        "created": now,
    }
    try:
        new_id = conn.execute(
            ec2_security_groups.insert().returning(ec2_security_groups.c.id), values
        ).scalar_one()
    except IntegrityError as exc:
        raise Conflict(f"the security group {name!r} already exists") from exc
    return SecurityGroup(int(new_id), name, description, [], now)


def select_security_groups(
    conn: Connection,
    user_id: int,
    *,
    names: Collection[str] | None = None,
    ids: Collection[int] | None = None,
    lock: bool = False,
) -> list[SecurityGroup]:
    stmt = select(
        ec2_security_groups.c.id,
        ec2_security_groups.c.name,
        ec2_security_groups.c.description,
        ec2_security_groups.c.rules,
        ec2_security_groups.c.created,
    ).where(ec2_security_groups.c.user_id == user_id)
    if names is not None:
        stmt = stmt.where(ec2_security_groups.c.name.in_(sorted(names)))
    if ids is not None:
        stmt = stmt.where(ec2_security_groups.c.id.in_(sorted(ids)))
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    stmt = stmt.order_by(ec2_security_groups.c.id)
    return [SecurityGroup(*row) for row in conn.execute(stmt)]


def set_group_rules(
    conn: Connection, user_id: int, group_id: int, rules: Sequence[dict[str, Any]]
) -> None:
    conn.execute(
        update(ec2_security_groups)
        .where(ec2_security_groups.c.user_id == user_id, ec2_security_groups.c.id == group_id)
        .values(rules=list(rules))
    )


def delete_security_group(conn: Connection, user_id: int, group_id: int) -> None:
    conn.execute(
        delete(ec2_security_groups).where(
            ec2_security_groups.c.user_id == user_id, ec2_security_groups.c.id == group_id
        )
    )


# --- addresses -------------------------------------------------------------------------------


def select_addresses(
    conn: Connection,
    user_id: int,
    *,
    ids: Collection[int] | None = None,
    public_ips: Collection[str] | None = None,
) -> list[Address]:
    """A user's addresses; an association with a terminated VM reads as none."""
    stmt = select(ec2_addresses.c.id, ec2_addresses.c.public_ip, ec2_addresses.c.vm_id).where(
        ec2_addresses.c.user_id == user_id
    )
    if ids is not None:
        stmt = stmt.where(ec2_addresses.c.id.in_(sorted(ids)))
    if public_ips is not None:
        stmt = stmt.where(ec2_addresses.c.public_ip.in_(sorted(public_ips)))
    rows = list(conn.execute(stmt.order_by(ec2_addresses.c.id)))
    associated = [row[2] for row in rows if row[2] is not None]
    done: set[int] = set()
    if associated:
        done = set(
            conn.execute(
                select(vms.c.id).where(vms.c.id.in_(associated), vms.c.state == VmState.DONE.value)
            ).scalars()
        )
    return [Address(row[0], row[1], None if row[2] in done else row[2]) for row in rows]


def allocate_address(
    conn: Connection, now: datetime, user_id: int, pool: ipaddress.IPv4Network
) -> Address | None:
    """The lowest free address of the pool, now the user's; None when the pool is full."""
    taken = {
        ipaddress.ip_address(ip)
        for ip in conn.execute(select(ec2_addresses.c.public_ip)).scalars()
        if ipaddress.ip_address(ip) in pool
    }
    for ip in pool.hosts():
        if ip in taken:
            continue
        values = {"user_id": user_id, "public_ip": str(ip), "vm_id": None, "created": now}
        try:
            with conn.begin_nested():
                new_id = conn.execute(
                    ec2_addresses.insert().returning(ec2_addresses.c.id), values
                ).scalar_one()
        except IntegrityError:  # taken by a concurrent writer: try the next one
            continue
        return Address(int(new_id), str(ip), None)
    return None


def set_address_vm(
    conn: Connection, user_id: int, address_id: int | None, vm_id: int | None
) -> None:
    """Associate an address with a VM (dropping that VM's other address), or disassociate
    it (`vm_id` None); `address_id` None disassociates whatever the VM has."""
    if vm_id is not None:
        conn.execute(
            update(ec2_addresses)
            .where(ec2_addresses.c.vm_id == vm_id, ec2_addresses.c.id != (address_id or 0))
            .values(vm_id=None)
        )
    if address_id is not None:
        conn.execute(
            update(ec2_addresses)
            .where(ec2_addresses.c.user_id == user_id, ec2_addresses.c.id == address_id)
            .values(vm_id=vm_id)
        )


def release_address(conn: Connection, user_id: int, address_id: int) -> None:
    conn.execute(
        delete(ec2_addresses).where(
            ec2_addresses.c.user_id == user_id, ec2_addresses.c.id == address_id
        )
    )
