"""VM records: creation in bulk, and the reads the API, scheduler and engine need."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    Text,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.types import TypeEngine

from stratus.model.errors import InvalidInput
from stratus.model.lifecycle import TRANSIENT_STATES, Action, VmState
from stratus.model.records import Vm
from stratus.store.conflicts import vm_not_found
from stratus.store.events import StateChange, write_events
from stratus.store.tables import check_json, hosts, time_reader, vms

__all__ = [
    "NewVm",
    "count_by_state",
    "count_vms",
    "fetch_vms",
    "find_vm",
    "insert_vms",
    "listing_filter",
    "on_host_filter",
    "pending_filter",
    "placed_info",
    "select_vms",
    "vm_query",
    "vm_reader",
    "work_filter",
]

_STATES = {state.value: state for state in VmState}
_ACTIONS = {action.value: action for action in Action}
_STARTING = (VmState.PENDING, VmState.HOLD)


@dataclass(frozen=True)
class NewVm:
    """A VM to create; `name` "" lets the store name it vm-<id>."""

    name: str
    state: VmState  # PENDING or HOLD
    cpu: float
    vcpu: int
    memory: int  # MB
    user_priority: int
    requirements: str
    rank: str
    template: dict[str, Any]
    reason: str = "submitted"


def _raw(column: Column[Any], as_type: TypeEngine[Any]) -> ColumnElement[Any]:
    """The column as the driver returns it, without SQLAlchemy's result processing."""
    return type_coerce(column, as_type).label(column.name)


# The columns vm_reader unpacks, in order. JSON, timestamps and the flag come back raw and
# the reader converts them in one pass per row: SQLAlchemy's per-column result processors
# cost more than the conversions themselves when a list reads 20,000 rows.
_COLUMNS = (
    vms.c.id,
    vms.c.name,
    vms.c.state,
    vms.c.action,
    vms.c.failed_state,
    vms.c.reason,
    vms.c.host_id,
    vms.c.target_host_id,
    vms.c.cpu,
    vms.c.vcpu,
    vms.c.memory,
    vms.c.user_priority,
    vms.c.requirements,
    vms.c.rank,
    _raw(vms.c.template, Text()),
    vms.c.deploy_id,
    vms.c.op_seq,
    _raw(vms.c.resched, Integer()),
    _raw(vms.c.created, String()),
    _raw(vms.c.updated, String()),
    vms.c.version,
    hosts.c.name.label("host_name"),
    vms.c.checkpoint,
    vms.c.info,
)
_NAMES = tuple(column.name for column in _COLUMNS)
if set(_NAMES) != {field.name for field in dataclasses.fields(Vm)} or hasattr(Vm, "__slots__"):
    raise RuntimeError(
        "stratus.model.records.Vm no longer matches the vms columns: "
        "add the field to store/tables.py, a migration and store/vms.py _COLUMNS"
    )
_new_instance = object.__new__

VmReader = Callable[[Sequence[Any]], Vm]


# The same columns with an empty template, for reads that never look at it (the scheduler's
# queue, listings): parsing 100,000 templates would cost time and hundreds of MB.
_COLUMNS_NO_TEMPLATE = tuple(
    literal_column("'{}'").label("template") if c.name == "template" else c for c in _COLUMNS
)


def vm_query(*, with_template: bool = True) -> Select[Any]:
    """SELECT of VM rows with host_name, for `vm_reader`; without the template it reads {}."""
    columns = _COLUMNS if with_template else _COLUMNS_NO_TEMPLATE
    return select(*columns).select_from(vms.outerjoin(hosts, vms.c.host_id == hosts.c.id))


def vm_reader(dialect_name: str) -> VmReader:
    """A function building a Vm from a `vm_query` row fetched through that dialect.

    A big list builds 20,000 of them: filling __dict__ from a dict display is twice as fast
    as the frozen dataclass __init__; the check above and a test keep columns and fields in step.
    """
    read_time = time_reader(dialect_name)
    loads = orjson.loads

    def read(row: Sequence[Any]) -> Vm:
        (
            vm_id, name, state, action, failed_state, reason, host_id, target_host_id, cpu,
            vcpu, memory, user_priority, requirements, rank, template, deploy_id, op_seq,
            resched, created, updated, version, host_name, checkpoint, info,
        ) = row  # fmt: skip
        vm: Vm = _new_instance(Vm)
        vm.__dict__.update(
            {
                "id": vm_id,
                "name": name,
                "state": _STATES[state],
                "action": None if action is None else _ACTIONS[action],
                "failed_state": None if failed_state is None else _STATES[failed_state],
                "reason": reason,
                "host_id": host_id,
                "target_host_id": target_host_id,
                "cpu": cpu,
                "vcpu": vcpu,
                "memory": memory,
                "user_priority": user_priority,
                "requirements": requirements,
                "rank": rank,
                "template": loads(template),
                "deploy_id": deploy_id,
                "op_seq": op_seq,
                "resched": bool(resched),
                "created": read_time(created),
                "updated": read_time(updated),
                "version": version,
                "host_name": host_name,
                "checkpoint": checkpoint,
                "info": loads(info) if isinstance(info, str) else info,
            }
        )
        return vm

    return read


def fetch_vms(conn: Connection, stmt: Select[Any]) -> list[Vm]:
    """Run a `vm_query` statement and build its Vms."""
    read = vm_reader(conn.dialect.name)
    with _gc_paused():
        return [read(row) for row in conn.execute(stmt)]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many records (they form no cycles).

    Its passes over a growing list of 20,000 VMs and their template dicts cost a third of
    the list's time. Collection resumes right after; a GC disabled by someone else stays so.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def insert_vms(conn: Connection, now: datetime, new: Sequence[NewVm]) -> list[Vm]:
    """Insert VMs with one executemany each for rows, names and events."""
    if not new:
        return []
    rows = [_row(vm, now) for vm in new]
    stmt = vms.insert().returning(vms.c.id, sort_by_parameter_order=True)
    ids = list(conn.execute(stmt, rows).scalars())
    pairs = list(zip(ids, new, strict=True))
    unnamed = [{"vm_id": vm_id, "new_name": f"vm-{vm_id}"} for vm_id, vm in pairs if not vm.name]
    if unnamed:
        rename = (
            vms.update().where(vms.c.id == bindparam("vm_id")).values(name=bindparam("new_name"))
        )
        conn.execute(rename, unnamed)
    write_events(
        conn,
        [StateChange("vm", vm_id, "", vm.state.value, vm.reason) for vm_id, vm in pairs],
        now,
    )
    return [
        Vm(
            id=vm_id,
            name=vm.name or f"vm-{vm_id}",
            state=vm.state,
            action=None,
            failed_state=None,
            reason=vm.reason,
            host_id=None,
            target_host_id=None,
            cpu=float(vm.cpu),
            vcpu=vm.vcpu,
            memory=vm.memory,
            user_priority=vm.user_priority,
            requirements=vm.requirements,
            rank=vm.rank,
            template=vm.template,
            deploy_id=None,
            op_seq=0,
            resched=False,
            created=now,
            updated=now,
            version=1,
        )
        for vm_id, vm in pairs
    ]


def _row(vm: NewVm, now: datetime) -> dict[str, Any]:
    if vm.state not in _STARTING:
        raise InvalidInput(f"a new VM starts PENDING or HOLD, not {vm.state}")
    if not isinstance(vm.template, dict):
        raise InvalidInput(f"a VM template must be a mapping, got {type(vm.template).__name__}")
    check_json(vm.template, "the VM template")
    return {
        "name": vm.name,
        "state": vm.state.value,
        "action": None,
        "failed_state": None,
        "reason": vm.reason,
        "host_id": None,
        "target_host_id": None,
        "cpu": float(vm.cpu),
        "vcpu": vm.vcpu,
        "memory": vm.memory,
        "user_priority": vm.user_priority,
        "requirements": vm.requirements,
        "rank": vm.rank,
        "template": vm.template,
        "deploy_id": None,
        "checkpoint": None,
        "info": {},
        "op_seq": 0,
        "resched": False,
        "created": now,
        "updated": now,
        "version": 1,
    }


def find_vm(conn: Connection, vm_id: int) -> Vm:
    """One VM with host_name; NotFound otherwise."""
    found = fetch_vms(conn, vm_query().where(vms.c.id == vm_id))
    if not found:
        raise vm_not_found(vm_id)
    return found[0]


def select_vms(
    conn: Connection,
    *,
    where: Sequence[ColumnElement[bool]] = (),
    order_by: Sequence[Any] = (vms.c.id,),
    limit: int | None = None,
    with_template: bool = True,
) -> list[Vm]:
    """VMs matching all of `where`, in `order_by` order: the one query every list uses."""
    stmt = vm_query(with_template=with_template).where(*where).order_by(*order_by)
    if limit is not None:
        stmt = stmt.limit(limit)
    return fetch_vms(conn, stmt)


def listing_filter(
    *, state: VmState | None, host_id: int | None, after_id: int, include_done: bool
) -> list[ColumnElement[bool]]:
    """The WHERE of `Store.list_vms`."""
    where = [vms.c.id > after_id]
    if state is not None:
        where.append(vms.c.state == state.value)
    if host_id is not None:
        where.append(vms.c.host_id == host_id)
    if not include_done:
        where.append(vms.c.state != VmState.DONE.value)
    return where


def pending_filter() -> ColumnElement[bool]:
    """PENDING, or RUNNING and waiting to be rescheduled."""
    return or_(
        vms.c.state == VmState.PENDING.value,
        (vms.c.state == VmState.RUNNING.value) & vms.c.resched.is_(True),
    )


def work_filter(exclude: Collection[int]) -> list[ColumnElement[bool]]:
    """VMs the engine has driver work for: transient states, or an action in progress."""
    where = [
        or_(
            vms.c.state.in_(sorted(state.value for state in TRANSIENT_STATES)),
            vms.c.state.in_([VmState.RUNNING.value, VmState.UNKNOWN.value])
            & vms.c.action.is_not(None),
        )
    ]
    if exclude:
        where.append(vms.c.id.not_in(list(exclude)))
    return where


def on_host_filter(host_id: int) -> list[ColumnElement[bool]]:
    """VMs on a host or heading to it, not DONE."""
    return [
        or_(vms.c.host_id == host_id, vms.c.target_host_id == host_id),
        vms.c.state != VmState.DONE.value,
    ]


def placed_info(conn: Connection, host_ids: Collection[int]) -> list[tuple[int, dict[str, Any]]]:
    """(host id, info) of the VMs holding capacity on these hosts (their host_id, not DONE)."""
    stmt = select(vms.c.host_id, vms.c.info).where(
        vms.c.host_id.in_(list(host_ids)), vms.c.state != VmState.DONE.value
    )
    return [(int(host_id), info or {}) for host_id, info in conn.execute(stmt)]


def count_vms(conn: Connection, state: VmState | None) -> int:
    stmt = select(func.count()).select_from(vms)
    if state is not None:
        stmt = stmt.where(vms.c.state == state.value)
    return int(conn.execute(stmt).scalar_one())


def count_by_state(conn: Connection) -> dict[VmState, int]:
    """Every state with its count (0 for the empty ones)."""
    counts = dict.fromkeys(VmState, 0)
    stmt = select(vms.c.state, func.count()).group_by(vms.c.state)
    for state, count in conn.execute(stmt):
        counts[_STATES[state]] = int(count)
    return counts


def set_pending_reasons(conn: Connection, reasons: Mapping[int, str]) -> None:
    """Set the reason of each still-PENDING VM (executemany; `updated` is left alone)."""
    stmt = (
        update(vms)
        .where(vms.c.id == bindparam("vm_id"), vms.c.state == VmState.PENDING.value)
        .values(reason=bindparam("new_reason"))
    )
    conn.execute(stmt, [{"vm_id": k, "new_reason": v} for k, v in reasons.items()])
