"""Host records and the capacity their VMs use (derived from the VM table, never stored)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, func, or_, select, union_all
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict, InvalidInput
from stratus.model.lifecycle import VmState
from stratus.model.records import Host, HostState, HostUsage
from stratus.store.conflicts import changed_meanwhile, host_not_found
from stratus.store.events import StateChange, write_events
from stratus.store.tables import check_json, hosts, vms

__all__ = [
    "change_host",
    "find_host",
    "host_usage",
    "insert_host",
    "remove_host",
    "select_all_hosts",
    "select_hosts",
]

_NO_USAGE = HostUsage()


def host_usage(
    conn: Connection, *, first_id: int | None = None, last_id: int | None = None
) -> dict[int, HostUsage]:
    """Capacity held on each host (optionally those with ids in [first_id, last_id]).

    The one rule: a VM that is not DONE counts on its host_id, and also on its
    target_host_id while a deploy or migration reserves capacity there.
    """
    live = vms.c.state != VmState.DONE.value
    placed = select(vms.c.host_id.label("hid"), vms.c.cpu, vms.c.memory).where(
        vms.c.host_id.is_not(None), live
    )
    moving = select(vms.c.target_host_id.label("hid"), vms.c.cpu, vms.c.memory).where(
        vms.c.target_host_id.is_not(None),
        live,
        or_(vms.c.host_id.is_(None), vms.c.host_id != vms.c.target_host_id),
    )
    if first_id is not None and last_id is not None:
        placed = placed.where(vms.c.host_id.between(first_id, last_id))
        moving = moving.where(vms.c.target_host_id.between(first_id, last_id))
    both = union_all(placed, moving).subquery()
    stmt = select(both.c.hid, func.sum(both.c.cpu), func.sum(both.c.memory), func.count()).group_by(
        both.c.hid
    )
    return {
        hid: HostUsage(cpu=float(cpu), memory=int(memory), vms=int(count))
        for hid, cpu, memory, count in conn.execute(stmt)
    }


def _host(row: Row[Any], usage: HostUsage) -> Host:
    return Host(
        id=row.id,
        name=row.name,
        driver=row.driver,
        state=HostState(row.state),
        cpu=row.cpu,
        memory=row.memory,
        labels=row.labels,
        options=row.options,
        reason=row.reason,
        monitoring=row.monitoring,
        last_monitored=row.last_monitored,
        created=row.created,
        version=row.version,
        usage=usage,
        sealed_secrets=row.secrets,
    )


def _with_usage(conn: Connection, stmt: Select[Any], *, whole_table: bool = False) -> list[Host]:
    """Run a host query and fill usage with one aggregate query over the ids it returned."""
    rows = conn.execute(stmt).all()
    if not rows:
        return []
    if whole_table:
        usage = host_usage(conn)
    else:
        ids = [row.id for row in rows]
        usage = host_usage(conn, first_id=min(ids), last_id=max(ids))
    return [_host(row, usage.get(row.id, _NO_USAGE)) for row in rows]


def _check_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidInput(f"host labels must map names to strings, got {labels!r}")
    return dict(labels)


def _check_mapping(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"host {what} must be a mapping, got {type(value).__name__}")
    check_json(value, f"host {what}")
    return dict(value)


def insert_host(
    conn: Connection,
    now: datetime,
    *,
    name: str,
    driver: str,
    cpu: float,
    memory: int,
    labels: Mapping[str, str],
    options: Mapping[str, Any],
    sealed_secrets: str = "",
) -> Host:
    """Add a host in state INIT with its "added" event; Conflict when the name is taken.

    `sealed_secrets` is the engine's sealed text of its credentials, never plaintext.
    """
    if not name:
        raise InvalidInput("a host needs a name")
    values: dict[str, Any] = {
        "name": name,
        "driver": driver,
        "state": HostState.INIT.value,
        "cpu": float(cpu),
        "memory": int(memory),
        "labels": _check_labels(labels),
        "options": _check_mapping(options, "options"),
        "reason": "added",
        "monitoring": {},
        "last_monitored": None,
        "created": now,
        "version": 1,
        "secrets": sealed_secrets,
    }
    if conn.execute(select(hosts.c.id).where(hosts.c.name == name)).first() is not None:
        raise _duplicate(name)
    try:
        host_id = conn.execute(hosts.insert().returning(hosts.c.id), values).scalar_one()
    except IntegrityError as exc:  # added by another server since the check above
        raise _duplicate(name) from exc
    write_events(conn, [StateChange("host", host_id, "", HostState.INIT.value, "added")], now)
    return find_host(conn, host_id)


def _duplicate(name: str) -> Conflict:
    return Conflict(
        f"host '{name}' already exists: choose another name, or `stratus host delete {name}` first"
    )


def find_host(conn: Connection, ref: int | str) -> Host:
    """One host by id or name, usage filled; NotFound otherwise."""
    where = hosts.c.id == ref if isinstance(ref, int) else hosts.c.name == ref
    found = _with_usage(conn, select(hosts).where(where))
    if not found:
        raise host_not_found(ref)
    return found[0]


def select_hosts(
    conn: Connection, *, state: HostState | None, limit: int, after_id: int
) -> list[Host]:
    """A page of hosts in id order, with usage (two queries, whatever the page size)."""
    stmt = select(hosts).where(hosts.c.id > after_id).order_by(hosts.c.id).limit(limit)
    if state is not None:
        stmt = stmt.where(hosts.c.state == state.value)
    return _with_usage(conn, stmt)


def select_all_hosts(conn: Connection) -> list[Host]:
    """Every host with usage, for the scheduler's snapshot (two queries)."""
    return _with_usage(conn, select(hosts).order_by(hosts.c.id), whole_table=True)


def change_host(
    conn: Connection,
    now: datetime,
    host_id: int,
    expected_version: int,
    changes: dict[str, Any],
) -> Host:
    """Conditionally update a host; an event when its state changes; Conflict on a stale version."""
    current = conn.execute(
        select(hosts.c.state, hosts.c.reason, hosts.c.version).where(hosts.c.id == host_id)
    ).first()
    if current is None:
        raise host_not_found(host_id)
    if current.version != expected_version:
        raise changed_meanwhile("host", host_id, expected_version, current.version)
    values = {key: value for key, value in changes.items() if value is not None}
    if "labels" in values:
        values["labels"] = _check_labels(values["labels"])
    for key in ("options", "monitoring"):
        if key in values:
            values[key] = _check_mapping(values[key], key)
    if "state" in values:
        values["state"] = HostState(values["state"]).value
    values["version"] = expected_version + 1
    done = conn.execute(
        hosts.update()
        .where(hosts.c.id == host_id, hosts.c.version == expected_version)
        .values(values)
    )
    if done.rowcount != 1:  # another writer got there between our read and our update
        raise changed_meanwhile("host", host_id, expected_version, None)
    new_state = values.get("state", current.state)
    if new_state != current.state:
        reason = values.get("reason", current.reason)
        write_events(conn, [StateChange("host", host_id, current.state, new_state, reason)], now)
    return find_host(conn, host_id)


def remove_host(conn: Connection, now: datetime, host_id: int) -> None:
    """Delete a host that no VM occupies or is heading to; its event says "deleted"."""
    host = conn.execute(select(hosts.c.name, hosts.c.state).where(hosts.c.id == host_id)).first()
    if host is None:
        raise host_not_found(host_id)
    users = (
        conn.execute(
            select(vms.c.id)
            .where(or_(vms.c.host_id == host_id, vms.c.target_host_id == host_id))
            .order_by(vms.c.id)
            .limit(6)
        )
        .scalars()
        .all()
    )
    if users:
        raise host_in_use(host.name, list(users))
    conn.execute(hosts.delete().where(hosts.c.id == host_id))
    write_events(conn, [StateChange("host", host_id, host.state, "DELETED", "deleted")], now)


def host_in_use(name: str, vm_ids: list[int]) -> Conflict:
    shown = ", ".join(str(vm_id) for vm_id in vm_ids[:5]) + (", ..." if len(vm_ids) > 5 else "")
    return Conflict(
        f"host '{name}' still holds VMs ({shown}): migrate or terminate them, then delete it"
    )
