"""Virtual networks and their leases.

A lease row exists only for an address in use by a VM's NIC or on hold; a free address has
no row, and its primary key (vnet_id, ar_id, offset) makes giving one address twice
impossible. Allocation takes the lowest free offset and inserts it with ON CONFLICT DO
NOTHING: a writer that lost the address to a concurrent one (PostgreSQL runs them side by
side; SQLite's BEGIN IMMEDIATE queues them) sees no row inserted and tries the next free
address, without aborting the caller's transaction (the VM submit it is part of).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, Select, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict, NotFound
from stratus.model.records import Lease, Vnet
from stratus.model.vnet import Address, VnetSpec, address_at, locate
from stratus.store.tables import leases, overlays, vnets

__all__ = [
    "LeaseRequest",
    "allocate_leases",
    "find_vnet",
    "hold_lease",
    "insert_vnet",
    "leases_for_vm",
    "leases_of",
    "release_held",
    "release_leases",
    "remove_vnet",
    "select_vnets",
    "vnet_not_found",
]

_ATTEMPTS = 50  # tries to take a free address while concurrent writers take the same ones


class LeaseRequest(NamedTuple):
    """One NIC's request: a lease on `network`, at `address` (an IP or MAC) when given."""

    nic_index: int
    network: str  # the network's name
    address: str | None = None


# --- networks --------------------------------------------------------------------------------


def vnet_not_found(ref: int | str) -> NotFound:
    shown = f"'{ref}'" if isinstance(ref, str) else str(ref)
    return NotFound(f"network {shown} does not exist", hint="see `stratus vnet list`")


def _vnet(row: Row[Any], used: int = 0, held: int = 0) -> Vnet:
    return Vnet(
        id=row.id,
        name=row.name,
        driver=row.driver,
        bridge=row.bridge,
        netns=row.netns,
        spec=VnetSpec.from_json(row.spec),
        created=row.created,
        version=row.version,
        used=used,
        held=held,
    )


def _with_counts(conn: Connection, stmt: Select[Any]) -> list[Vnet]:
    """Run a network query and count the used and held leases of the networks it returned."""
    rows = conn.execute(stmt).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    counts = {
        (vnet_id, bool(held)): count
        for vnet_id, held, count in conn.execute(
            select(leases.c.vnet_id, leases.c.held, func.count())
            .where(leases.c.vnet_id.between(min(ids), max(ids)))
            .group_by(leases.c.vnet_id, leases.c.held)
        )
    }
    return [
        _vnet(row, counts.get((row.id, False), 0), counts.get((row.id, True), 0)) for row in rows
    ]


def find_vnet(conn: Connection, ref: int | str) -> Vnet:
    """A network by id or name, with its lease counts; NotFound otherwise."""
    where = vnets.c.id == ref if isinstance(ref, int) else vnets.c.name == ref
    found = _with_counts(conn, select(vnets).where(where))
    if not found:
        raise vnet_not_found(ref)
    return found[0]


def select_vnets(conn: Connection, *, limit: int, after_id: int) -> list[Vnet]:
    """A page of networks in id order, with their lease counts."""
    stmt = select(vnets).where(vnets.c.id > after_id).order_by(vnets.c.id).limit(limit)
    return _with_counts(conn, stmt)


def insert_vnet(conn: Connection, now: datetime, spec: VnetSpec) -> Vnet:
    """Store a validated network; Conflict when its name is taken."""
    if conn.execute(select(vnets.c.id).where(vnets.c.name == spec.name)).first() is not None:
        raise _duplicate(spec.name)
    values = {
        "name": spec.name,
        "driver": spec.driver,
        "bridge": spec.bridge,
        "netns": spec.netns,
        "spec": spec.to_json(),
        "created": now,
        "version": 1,
    }
    try:
        vnet_id = conn.execute(vnets.insert().returning(vnets.c.id), values).scalar_one()
    except IntegrityError as exc:  # created by another writer since the check above
        raise _duplicate(spec.name) from exc
    return find_vnet(conn, vnet_id)


def _duplicate(name: str) -> Conflict:
    return Conflict(
        f"network '{name}' already exists: choose another NAME, "
        f"or `stratus vnet delete {name}` first"
    )


def remove_vnet(conn: Connection, ref: int | str) -> Vnet:
    """Delete a network and its held addresses; Conflict while a VM has a lease on it."""
    vnet = find_vnet(conn, ref)
    users = (
        conn.execute(
            select(leases.c.vm_id)
            .where(leases.c.vnet_id == vnet.id, leases.c.vm_id.is_not(None))
            .distinct()
            .order_by(leases.c.vm_id)
            .limit(6)
        )
        .scalars()
        .all()
    )
    if users:
        shown = ", ".join(str(vm_id) for vm_id in users[:5]) + (", ..." if len(users) > 5 else "")
        raise Conflict(
            f"network '{vnet.name}' still leases addresses to VMs {shown}: terminate them "
            "(a VM's leases are freed when it ends), then delete the network"
        )
    if conn.execute(select(overlays.c.vnet_id).where(overlays.c.vnet_id == vnet.id)).first():
        raise Conflict(
            f"network '{vnet.name}' has an overlay hub",
            hint=f"`stratus vnet overlay disable {vnet.name}` first, then delete the network",
        )
    conn.execute(leases.delete().where(leases.c.vnet_id == vnet.id))
    conn.execute(vnets.delete().where(vnets.c.id == vnet.id))
    return vnet


# --- leases ----------------------------------------------------------------------------------


def _lease(vnet: Vnet, row: Any) -> Lease:
    """A lease from its row (or the values just inserted), with what its NIC needs."""
    spec = vnet.spec
    return Lease(
        vnet_id=vnet.id,
        network=vnet.name,
        ar_id=row["ar_id"],
        offset=row["offset"],
        mac=row["mac"],
        ip=row["ip"],
        ip6=row["ip6"],
        vm_id=row["vm_id"],
        nic_index=row["nic_index"],
        held=bool(row["held"]),
        created=row["created"],
        driver=spec.driver,
        bridge=spec.bridge,
        netns=spec.netns,
        network_address=spec.network_address,
        mask=spec.network_mask,
        gateway=spec.gateway,
        dns=spec.dns,
        ports=spec.guest_ports,
    )


def _row_at(conn: Connection, vnet_id: int, ar_id: int, offset: int) -> Any:
    return (
        conn.execute(
            select(leases).where(
                leases.c.vnet_id == vnet_id, leases.c.ar_id == ar_id, leases.c.offset == offset
            )
        )
        .mappings()
        .first()
    )


def _insert(
    conn: Connection,
    now: datetime,
    vnet: Vnet,
    spot: tuple[int, int],
    *,
    vm_id: int | None,
    nic_index: int | None,
) -> Lease | None:
    """Take the address at (range, offset) for a VM, or on hold when vm_id is None.

    None when a concurrent writer holds it already (the caller looks for another).
    """
    address = address_at(vnet.spec, *spot)
    values: dict[str, Any] = {
        "vnet_id": vnet.id,
        "ar_id": spot[0],
        "offset": spot[1],
        "mac": address.mac,
        "ip": address.ip,
        "ip6": address.ip6,
        "vm_id": vm_id,
        "nic_index": nic_index,
        "held": vm_id is None,
        "created": now,
    }
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    try:
        stmt = insert(leases).values(values).on_conflict_do_nothing()
        # RETURNING tells whether a row went in (psycopg reports no rowcount here).
        inserted = conn.execute(stmt.returning(leases.c.offset)).first() is not None
    except IntegrityError as exc:  # a foreign key: the network or the VM is gone
        raise Conflict(
            f"network '{vnet.name}' was deleted meanwhile: see `stratus vnet list`"
            if vm_id is None
            else f"cannot lease an address of network '{vnet.name}' to VM {vm_id}: "
            "the network or the VM no longer exists"
        ) from exc
    return _lease(vnet, values) if inserted else None


def _first_free(conn: Connection, vnet_id: int, ar_id: int, size: int) -> int | None:
    """The lowest offset of a range that has no lease row; None when all are taken.

    Offset 0, else the first offset after a taken one whose successor is not taken: one
    pass over the range's rows in the primary key's index.
    """
    if _row_at(conn, vnet_id, ar_id, 0) is None:
        return 0
    following = leases.alias("following")
    gap = select(func.min(leases.c.offset + 1)).where(
        leases.c.vnet_id == vnet_id,
        leases.c.ar_id == ar_id,
        leases.c.offset + 1 < size,
        ~exists().where(
            following.c.vnet_id == vnet_id,
            following.c.ar_id == ar_id,
            following.c.offset == leases.c.offset + 1,
        ),
    )
    found: int | None = conn.execute(gap).scalar()
    return found


def _take_lowest(conn: Connection, now: datetime, vnet: Vnet, vm_id: int, nic_index: int) -> Lease:
    """The lowest free address of the network (first range first) for a VM's NIC."""
    for _ in range(_ATTEMPTS):
        for ar in vnet.spec.ranges:
            offset = _first_free(conn, vnet.id, ar.id, ar.size)
            if offset is None:
                continue
            lease = _insert(conn, now, vnet, (ar.id, offset), vm_id=vm_id, nic_index=nic_index)
            if lease is not None:
                return lease
            break  # lost this address to a concurrent writer: search again
        else:
            raise Conflict(
                f"network {vnet.name} has no free lease (all {vnet.spec.size} addresses are "
                "used or on hold): release held addresses, terminate VMs that use it, "
                "or use a network with more addresses"
            )
    raise Conflict(
        f"network {vnet.name} is busy: {_ATTEMPTS} tries to take a free address lost to "
        "concurrent requests; retry"
    )


def _taken(conn: Connection, vnet: Vnet, spot: tuple[int, int], address: str) -> Conflict:
    """Why an address cannot be taken: in use by a VM, or on hold."""
    row = _row_at(conn, vnet.id, *spot)
    if row is None:  # freed between the insert and this read
        return Conflict(f"address {address} of network {vnet.name} changed meanwhile: retry")
    if row["held"]:
        return Conflict(
            f"address {address} of network {vnet.name} is on hold: release it with "
            f"`stratus vnet release {vnet.name} {address}`, or ask for another"
        )
    return Conflict(
        f"address {address} of network {vnet.name} is used by VM {row['vm_id']}: "
        "ask for another, or leave IP and MAC out of the NIC to get a free one"
    )


def allocate_leases(
    conn: Connection, now: datetime, vm_id: int, requests: Sequence[LeaseRequest]
) -> list[Lease]:
    """Lease an address to each of a VM's NICs, in the caller's transaction.

    The lowest free address unless the request names one. NotFound for an unknown
    network; Conflict for a wanted address outside the ranges, held or used, and for a
    network without a free address. The caller rolls back on any of them.
    """
    found: dict[str, Vnet] = {}
    taken: list[Lease] = []
    for request in requests:
        vnet = found.get(request.network)
        if vnet is None:
            vnet = found[request.network] = _vnet_by_name(conn, request.network)
        if request.address is None:
            lease = _take_lowest(conn, now, vnet, vm_id, request.nic_index)
        else:
            spot = locate(vnet.spec, request.address)
            taken_lease = _insert(conn, now, vnet, spot, vm_id=vm_id, nic_index=request.nic_index)
            if taken_lease is None:
                raise _taken(conn, vnet, spot, request.address)
            lease = taken_lease
        taken.append(lease)
    return taken


def _vnet_by_name(conn: Connection, name: str) -> Vnet:
    """A network without its lease counts (allocation needs only its spec)."""
    row = conn.execute(select(vnets).where(vnets.c.name == name)).first()
    if row is None:
        raise vnet_not_found(name)
    return _vnet(row)


def release_leases(conn: Connection, vm_id: int) -> int:
    """Free every address a VM holds (it ended); how many were freed."""
    done = conn.execute(leases.delete().where(leases.c.vm_id == vm_id))
    return int(done.rowcount)


def hold_lease(conn: Connection, now: datetime, ref: int | str, address: str) -> Lease:
    """Put a free address on hold, so no VM gets it; holding a held address is a no-op.

    Conflict when a VM uses it or it is outside the network's ranges.
    """
    vnet = find_vnet(conn, ref)
    spot = locate(vnet.spec, address)
    for _ in range(2):  # a second look when a concurrent writer took or freed it meanwhile
        row = _row_at(conn, vnet.id, *spot)
        if row is not None:
            if row["held"]:
                return _lease(vnet, row)
            raise Conflict(
                f"address {address} of network {vnet.name} is used by VM {row['vm_id']}: "
                "an address in use cannot be held"
            )
        lease = _insert(conn, now, vnet, spot, vm_id=None, nic_index=None)
        if lease is not None:
            return lease
    raise Conflict(f"address {address} of network {vnet.name} changed meanwhile: retry")


def release_held(conn: Connection, ref: int | str, address: str) -> tuple[str, Address]:
    """Free a held address (a no-op when it is free); the network's name and the address.

    Conflict when a VM uses the address.
    """
    vnet = find_vnet(conn, ref)
    spot = locate(vnet.spec, address)
    row = _row_at(conn, vnet.id, *spot)
    if row is not None and not row["held"]:
        raise Conflict(
            f"address {address} of network {vnet.name} is used by VM {row['vm_id']}, "
            "not on hold: it is freed when the VM ends"
        )
    conn.execute(
        leases.delete().where(
            leases.c.vnet_id == vnet.id,
            leases.c.ar_id == spot[0],
            leases.c.offset == spot[1],
            leases.c.held.is_(True),
        )
    )
    return vnet.name, address_at(vnet.spec, *spot)


def leases_of(conn: Connection, vnet_id: int) -> list[Lease]:
    """Every used or held address of a network, by range and offset."""
    row = conn.execute(select(vnets).where(vnets.c.id == vnet_id)).first()
    if row is None:
        raise vnet_not_found(vnet_id)
    vnet = _vnet(row)
    stmt = (
        select(leases).where(leases.c.vnet_id == vnet_id).order_by(leases.c.ar_id, leases.c.offset)
    )
    return [_lease(vnet, lease) for lease in conn.execute(stmt).mappings()]


def leases_for_vm(conn: Connection, vm_id: int) -> list[Lease]:
    """A VM's leases by NIC index: what its NICs are configured with."""
    rows = (
        conn.execute(select(leases).where(leases.c.vm_id == vm_id).order_by(leases.c.nic_index))
        .mappings()
        .all()
    )
    ids = sorted({row["vnet_id"] for row in rows})
    networks = {
        row.id: _vnet(row) for row in conn.execute(select(vnets).where(vnets.c.id.in_(ids)))
    }
    return [_lease(networks[row["vnet_id"]], row) for row in rows]
