"""EC2 API users and their access keys; a key's secret is stored sealed, never in plaintext.

The engine's SecretBox seals a secret before it reaches these functions and opens it for
the SigV4 check; the store only ever holds the ciphertext.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict, InvalidInput, NotFound
from stratus.model.lifecycle import VmState
from stratus.store.tables import (
    access_keys,
    ec2_addresses,
    ec2_images,
    ec2_instances,
    ec2_keypairs,
    ec2_security_groups,
    ec2_tags,
    users,
    vms,
)

__all__ = [
    "USER_NAME",
    "AccessKey",
    "Quota",
    "StoredKey",
    "User",
    "delete_access_key",
    "delete_user",
    "find_access_key",
    "find_user",
    "insert_access_key",
    "insert_user",
    "select_access_keys",
    "select_users",
    "user_quota",
]

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=,-]{0,63}")
_USER_RULE = "1 to 64 letters, digits and . _ @ + = , - (starting with a letter or digit)"


@dataclass(frozen=True)
class Quota:
    """What a user's instances (not terminated) may take at most; None: no limit."""

    vms: int | None = None
    cpu: float | None = None
    memory: int | None = None  # MB

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Quota:
        if not data:
            return cls()
        return cls(vms=data.get("vms"), cpu=data.get("cpu"), memory=data.get("memory"))

    def to_json(self) -> dict[str, Any] | None:
        """The stored form; None when there is no limit at all."""
        data = {"vms": self.vms, "cpu": self.cpu, "memory": self.memory}
        return data if any(value is not None for value in data.values()) else None

    def check(self) -> Quota:
        """InvalidInput naming a negative or non-finite limit."""
        for name, value in (("vms", self.vms), ("cpu", self.cpu), ("memory", self.memory)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise InvalidInput(
                    f"quota {name} = {value!r} is not valid: expected a number >= 0",
                    hint="e.g. --quota-vms 10 --quota-cpu 8 --quota-memory 16384",
                )
        return self


@dataclass(frozen=True)
class User:
    id: int
    name: str
    quota: Quota
    created: datetime
    access_keys: tuple[str, ...] = field(default=())  # ids only, filled by find_user


@dataclass(frozen=True)
class AccessKey:
    """An access key as it may be shown: its id, never its secret."""

    access_key_id: str
    user_name: str
    created: datetime


@dataclass(frozen=True)
class StoredKey:
    """What the SigV4 check needs: the owner and the sealed secret."""

    access_key_id: str
    user_id: int
    user_name: str
    sealed_secret: str = field(repr=False)


def _user(row: Any, keys: tuple[str, ...] = ()) -> User:
    return User(
        id=row.id,
        name=row.name,
        quota=Quota.from_json(row.quota),
        created=row.created,
        access_keys=keys,
    )


def insert_user(conn: Connection, now: datetime, name: str, quota: Quota) -> User:
    """A new user; Conflict when the name is taken, InvalidInput for a bad name or quota."""
    if USER_NAME.fullmatch(name) is None:
        raise InvalidInput(f"user name {name!r} is not valid", hint=f"use {_USER_RULE}")
    quota.check()
    if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
        raise _user_taken(name)
    try:
        user_id = conn.execute(
            users.insert().returning(users.c.id),
            {"name": name, "quota": quota.to_json(), "created": now},
        ).scalar_one()
    except IntegrityError as exc:  # added by another server since the check above
        raise _user_taken(name) from exc
    return User(id=int(user_id), name=name, quota=quota, created=now)


def _user_taken(name: str) -> Conflict:
    return Conflict(f"user {name!r} already exists", hint="choose another name")


def find_user(conn: Connection, name: str) -> User:
    """A user by name, with the ids of its access keys; NotFound otherwise."""
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise NotFound(f"no user named {name!r}", hint="see `stratus user list`")
    keys = conn.execute(
        select(access_keys.c.access_key_id)
        .where(access_keys.c.user_id == row.id)
        .order_by(access_keys.c.created, access_keys.c.access_key_id)
    ).scalars()
    return _user(row, tuple(keys))


def select_users(conn: Connection) -> list[User]:
    """Every user, by name."""
    return [_user(row) for row in conn.execute(select(users).order_by(users.c.name))]


def user_quota(conn: Connection, user_id: int) -> Quota:
    """A user's quota (no limits when the user is gone)."""
    row = conn.execute(select(users.c.quota).where(users.c.id == user_id)).first()
    return Quota.from_json(row[0] if row else None)


def delete_user(conn: Connection, name: str) -> User:
    """Delete a user, its keys and EC2 objects; Conflict while it has live instances.

    Its images stay (owned by nobody, like those registered through the REST API) and
    its terminated VMs stay in the VM history.
    """
    user = find_user(conn, name)
    live = conn.execute(
        select(func.count())
        .select_from(ec2_instances.join(vms, vms.c.id == ec2_instances.c.vm_id))
        .where(ec2_instances.c.user_id == user.id, vms.c.state != VmState.DONE.value)
    ).scalar_one()
    if live:
        raise Conflict(
            f"user {name!r} still has {live} instance(s) that are not terminated",
            hint="terminate them first (TerminateInstances, or `stratus vm terminate`)",
        )
    conn.execute(update(ec2_images).where(ec2_images.c.user_id == user.id).values(user_id=None))
    for table in (
        ec2_tags,
        ec2_addresses,
        ec2_security_groups,
        ec2_keypairs,
        ec2_instances,
        access_keys,
    ):
        conn.execute(delete(table).where(table.c.user_id == user.id))
    conn.execute(delete(users).where(users.c.id == user.id))
    return user


def insert_access_key(
    conn: Connection, now: datetime, user_id: int, access_key_id: str, sealed_secret: str
) -> None:
    """Store a new key (its secret already sealed)."""
    if not sealed_secret:
        raise InvalidInput("an access key needs its sealed secret")
    conn.execute(
        access_keys.insert().values(
            access_key_id=access_key_id, user_id=user_id, secret=sealed_secret, created=now
        )
    )


def select_access_keys(conn: Connection, user_id: int) -> list[AccessKey]:
    stmt = (
        select(access_keys.c.access_key_id, users.c.name, access_keys.c.created)
        .join(users, users.c.id == access_keys.c.user_id)
        .where(access_keys.c.user_id == user_id)
        .order_by(access_keys.c.created, access_keys.c.access_key_id)
    )
    return [AccessKey(row[0], row[1], row[2]) for row in conn.execute(stmt)]


def find_access_key(conn: Connection, access_key_id: str) -> StoredKey | None:
    """The key and its owner, None when no such key exists."""
    row = conn.execute(
        select(access_keys.c.access_key_id, users.c.id, users.c.name, access_keys.c.secret)
        .join(users, users.c.id == access_keys.c.user_id)
        .where(access_keys.c.access_key_id == access_key_id)
    ).first()
    return None if row is None else StoredKey(row[0], row[1], row[2], row[3])


def delete_access_key(conn: Connection, access_key_id: str) -> None:
    """Delete a key; NotFound naming it when there is none."""
    deleted = conn.execute(
        delete(access_keys).where(access_keys.c.access_key_id == access_key_id)
    ).rowcount
    if not deleted:
        raise NotFound(f"no access key {access_key_id!r}", hint="see `stratus user keys list USER`")
