"""VM state changes in batches: transition and version checks, events and history.

Each change is checked first (version, transition table, hosts) and only then written, with
a conditional UPDATE, so a refused change writes nothing and the rest of the batch goes on.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Text,
    Update,
    bindparam,
    delete,
    func,
    literal,
    select,
    type_coerce,
)

from stratus.model.errors import Conflict
from stratus.model.lifecycle import Action, VmState, check_transition
from stratus.model.records import HistoryRecord, Vm
from stratus.store.conflicts import changed_meanwhile
from stratus.store.events import StateChange, write_events
from stratus.store.tables import history, hosts, image_uses, leases, vms
from stratus.store.vms import fetch_vms, vm_query

__all__ = ["VmChange", "apply_changes", "read_history"]


class _Keep:
    """Type of the `_KEEP` sentinel: the field stays as it is."""

    def __repr__(self) -> str:
        return "KEEP"


_KEEP: Final = _Keep()
_CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


@dataclass(frozen=True)
class VmChange:
    """One conditional change of a VM: the new state, why, and the fields that change with it."""

    vm_id: int
    expected_version: int
    state: VmState  # may equal the current state (RUNNING -> RUNNING for reboot): still an event
    reason: str
    action: Action | _Keep | None = _KEEP
    failed_state: VmState | _Keep | None = _KEEP
    host_id: int | _Keep | None = _KEEP
    target_host_id: int | _Keep | None = _KEEP
    deploy_id: str | _Keep | None = _KEEP
    checkpoint: str | _Keep | None = _KEEP  # the driver's reference to a saved memory state
    info: dict[str, Any] | _Keep = _KEEP  # the driver's report (address, ports), replaced whole
    resched: bool | _Keep = _KEEP
    bump_op_seq: bool = False  # op_seq += 1: a new user operation
    open_history: tuple[int, str] | None = None  # (host_id, reason): a new placement record
    close_history: str | None = None  # end_reason: close the open placement record

    def referenced_hosts(self) -> set[int]:
        """Hosts this change points the VM (or its history) at."""
        refs = {self.host_id, self.target_host_id}
        if self.open_history is not None:
            refs.add(self.open_history[0])
        return {ref for ref in refs if isinstance(ref, int) and not isinstance(ref, bool)}


_FIELDS = (
    "action",
    "failed_state",
    "host_id",
    "target_host_id",
    "deploy_id",
    "checkpoint",
    "info",
    "resched",
)


def _chunks(ids: Sequence[int], size: int = _CHUNK) -> list[list[int]]:
    """Split ids into lists short enough for one IN (...)."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def apply_changes(
    conn: Connection, now: datetime, changes: Sequence[VmChange]
) -> list[Vm | Conflict]:
    """Apply a batch in the caller's transaction; per item the new Vm or why it was refused."""
    host_names = _lock_hosts(conn, sorted(set().union(*(c.referenced_hosts() for c in changes))))
    current = _lock_vms(conn, sorted({change.vm_id for change in changes}))
    results: list[Vm | Conflict] = []
    happened: list[StateChange] = []
    for change in changes:
        try:
            vm = _apply_one(conn, now, change, current.get(change.vm_id), host_names)
        except Conflict as refused:
            results.append(refused)
            continue
        happened.append(
            StateChange("vm", vm.id, current[vm.id].state.value, vm.state.value, change.reason)
        )
        current[vm.id] = vm
        results.append(vm)
    write_events(conn, happened, now)
    ended = [c.object_id for c in happened if c.to_state == "DONE" and c.from_state != "DONE"]
    if ended:
        _release_resources(conn, ended)
    return results


def _release_resources(conn: Connection, vm_ids: list[int]) -> None:
    """Give back ended VMs' leases and image uses, in the transaction that ends them."""
    for part in _chunks(vm_ids):
        conn.execute(delete(leases).where(leases.c.vm_id.in_(part)))
        conn.execute(delete(image_uses).where(image_uses.c.vm_id.in_(part)))


def _lock_hosts(conn: Connection, host_ids: list[int]) -> dict[int, str]:
    """Names of the hosts the batch refers to, share-locked on PostgreSQL.

    The lock keeps a concurrent delete_host from removing a host this transaction is about
    to point a VM at. Hosts are locked before VMs, the order delete_host takes them in.
    """
    names: dict[int, str] = {}
    for part in _chunks(host_ids):
        stmt = select(hosts.c.id, hosts.c.name).where(hosts.c.id.in_(part)).order_by(hosts.c.id)
        for host_id, name in conn.execute(stmt.with_for_update(read=True)):
            names[host_id] = name
    return names


def _lock_vms(conn: Connection, vm_ids: list[int]) -> dict[int, Vm]:
    """The batch's VMs, row-locked in id order on PostgreSQL.

    With the rows locked, the checks below are final and two batches touching the same
    VMs queue instead of deadlocking. SQLite needs no row locks: its writers take turns.
    """
    found: dict[int, Vm] = {}
    for part in _chunks(vm_ids):
        stmt = vm_query().where(vms.c.id.in_(part)).order_by(vms.c.id).with_for_update(of=vms)
        for vm in fetch_vms(conn, stmt):
            found[vm.id] = vm
    return found


@functools.lru_cache(maxsize=128)
def _update_statement(columns: tuple[str, ...], bump_op_seq: bool) -> Update:
    """The conditional UPDATE setting `columns`, built once per shape and reused."""
    values: dict[str, Any] = {
        name: bindparam(f"new_{name}", type_=vms.c[name].type) for name in columns
    }
    if bump_op_seq:
        values["op_seq"] = vms.c.op_seq + 1
    return (
        vms.update()
        .where(vms.c.id == bindparam("vm_id"), vms.c.version == bindparam("expected"))
        .values(values)
    )


def _apply_one(
    conn: Connection,
    now: datetime,
    change: VmChange,
    vm: Vm | None,
    host_names: dict[int, str],
) -> Vm:
    """Check one change against the VM as it is now, then write it; Conflict if refused."""
    if vm is None:
        raise Conflict(f"VM {change.vm_id} does not exist: check the id with `stratus vm list`")
    if vm.version != change.expected_version:
        raise changed_meanwhile("VM", vm.id, change.expected_version, vm.version)
    try:
        check_transition(vm.state, change.state)
    except Conflict as exc:
        raise Conflict(
            f"VM {vm.id}: {exc.message}",
            hint="reload the VM: its state allows other operations",
        ) from exc
    for host_id in sorted(change.referenced_hosts()):
        if host_id not in host_names:
            raise Conflict(f"host {host_id} does not exist (deleted meanwhile?): pick another host")
    updated: dict[str, Any] = {
        "state": change.state,
        "reason": change.reason,
        "updated": now,
        "version": vm.version + 1,
    }
    for field in _FIELDS:
        value = getattr(change, field)
        if value is not _KEEP:
            updated[field] = value
    params = {
        f"new_{name}": value.value if isinstance(value, (VmState, Action)) else value
        for name, value in updated.items()
    }
    stmt = _update_statement(tuple(updated), change.bump_op_seq)
    done = conn.execute(stmt, {**params, "vm_id": vm.id, "expected": vm.version})
    if done.rowcount != 1:  # rows locked (PostgreSQL) or a lone writer (SQLite): a bug, not a race
        raise changed_meanwhile("VM", vm.id, change.expected_version, None)
    if change.bump_op_seq:
        updated["op_seq"] = vm.op_seq + 1
    if "host_id" in updated:
        host_id = updated["host_id"]
        updated["host_name"] = None if host_id is None else host_names[host_id]
    if change.close_history is not None:
        conn.execute(
            _CLOSE_HISTORY, {"p_vm_id": vm.id, "p_end": now, "p_end_reason": change.close_history}
        )
    if change.open_history is not None:
        host_id, reason = change.open_history
        params = {
            "p_vm_id": vm.id,
            "p_host_id": host_id,
            "p_host_name": host_names[host_id],
            "p_start": now,
            "p_reason": reason,
        }
        conn.execute(_OPEN_HISTORY, params)
    return dataclasses.replace(vm, **updated)


_CLOSE_HISTORY = (
    history.update()
    .where(history.c.vm_id == bindparam("p_vm_id"), history.c.end.is_(None))
    .values(
        end=bindparam("p_end", type_=history.c.end.type),
        end_reason=bindparam("p_end_reason", type_=history.c.end_reason.type),
    )
)


def _history_param(name: str) -> ColumnElement[Any]:
    """A parameter typed like its history column (no SQL CAST: SQLite would mangle times)."""
    return type_coerce(bindparam(f"p_{name}"), history.c[name].type)


# A new placement record numbered after the VM's last one, in one statement.
_OPEN_HISTORY = history.insert().from_select(
    ["vm_id", "seq", "host_id", "host_name", "start", "reason", "end_reason"],
    select(
        _history_param("vm_id"),
        func.coalesce(func.max(history.c.seq), -1) + 1,
        _history_param("host_id"),
        _history_param("host_name"),
        _history_param("start"),
        _history_param("reason"),
        literal("", type_=Text()),
    ).where(history.c.vm_id == bindparam("p_vm_id")),
)


def read_history(conn: Connection, vm_id: int) -> list[HistoryRecord]:
    """A VM's placements, oldest first."""
    stmt = select(history).where(history.c.vm_id == vm_id).order_by(history.c.seq)
    return [
        HistoryRecord(
            vm_id=row.vm_id,
            seq=row.seq,
            host_id=row.host_id,
            host_name=row.host_name,
            start=row.start,
            end=row.end,
            reason=row.reason,
            end_reason=row.end_reason,
        )
        for row in conn.execute(stmt)
    ]
