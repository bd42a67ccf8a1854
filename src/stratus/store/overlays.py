"""Overlay networks: a network's tunnel hub and its peers (remote machines and sites).

Tunnel addresses are leases of the network, so a VM can never take one twice: the hub's
address and each hand-added machine's are held leases (`vnets.hold_lease`), and a VM
peer's address is the lease of its NIC. The keys arrive sealed (the engine seals them);
this module never sees a plaintext private key.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, select
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict, NotFound
from stratus.model.overlay import Overlay, OverlayKind, OverlayPeer, PeerKind
from stratus.model.records import Vnet
from stratus.model.vnet import address_at
from stratus.store.tables import leases, overlay_peers, overlays, vnets
from stratus.store.vnets import find_vnet, hold_lease, leases_of, release_held

__all__ = [
    "find_overlay",
    "insert_overlay",
    "insert_peer",
    "overlays_by_vnet",
    "prune_vm_peers",
    "remove_overlay",
    "remove_peer",
    "select_peers",
    "vm_peers",
]


def _overlay(row: Any) -> Overlay:
    return Overlay(
        vnet_id=row.vnet_id,
        network=row.network,
        kind=OverlayKind(row.kind),
        endpoint=row.endpoint,
        listen_port=row.listen_port,
        host=row.host,
        hub_ip=row.hub_ip,
        hub_public=row.hub_public,
        created=row.created,
        sealed_secret=row.hub_secret,
    )


def _peer(row: Any) -> OverlayPeer:
    return OverlayPeer(
        id=row.id,
        vnet_id=row.vnet_id,
        name=row.name,
        kind=PeerKind(row.kind),
        vm_id=row.vm_id,
        nic_index=row.nic_index,
        address=row.address,
        public=row.public,
        created=row.created,
        sealed_secret=row.secret,
    )


_WITH_NAME = select(overlays, vnets.c.name.label("network")).join(
    vnets, vnets.c.id == overlays.c.vnet_id
)


def _no_overlay(name: str) -> NotFound:
    return NotFound(
        f"network {name} has no overlay",
        hint=f"enable one with `stratus vnet overlay enable {name} --endpoint HOST:PORT`",
    )


def find_overlay(conn: Connection, ref: int | str) -> Overlay:
    """The overlay of a network (by id or name); NotFound for either missing."""
    vnet = find_vnet(conn, ref)
    row = conn.execute(_WITH_NAME.where(overlays.c.vnet_id == vnet.id)).first()
    if row is None:
        raise _no_overlay(vnet.name)
    return _overlay(row)


def overlays_by_vnet(conn: Connection, vnet_ids: Collection[int]) -> dict[int, Overlay]:
    """The overlays of those networks that have one, by network id."""
    if not vnet_ids:
        return {}
    rows = conn.execute(_WITH_NAME.where(overlays.c.vnet_id.in_(sorted(vnet_ids))))
    return {row.vnet_id: _overlay(row) for row in rows}


def _hold_free(conn: Connection, now: datetime, vnet: Vnet, what: str) -> str:
    """Hold the lowest free IPv4 address of the network for `what`; its IP."""
    taken = {(lease.ar_id, lease.offset) for lease in leases_of(conn, vnet.id)}
    for ar in vnet.spec.ranges:
        if ar.ip is None:
            continue
        for offset in range(ar.size):
            if (ar.id, offset) in taken:
                continue
            ip = address_at(vnet.spec, ar.id, offset).ip
            assert ip is not None
            lease = hold_lease(conn, now, vnet.id, ip)
            return str(lease.ip)
    raise Conflict(
        f"network {vnet.name} has no free IPv4 address for {what}: release held addresses, "
        "terminate VMs that use it, or add an address range"
    )


def insert_overlay(
    conn: Connection,
    now: datetime,
    ref: int | str,
    *,
    kind: OverlayKind,
    endpoint: str,
    listen_port: int,
    host: str | None,
    hub_public: str,
    hub_secret: str,
) -> Overlay:
    """Store a network's hub with a held address of its own; Conflict when it has one."""
    vnet = find_vnet(conn, ref)
    if conn.execute(select(overlays.c.vnet_id).where(overlays.c.vnet_id == vnet.id)).first():
        raise _exists(vnet.name)
    hub_ip = _hold_free(conn, now, vnet, "the overlay hub")
    values = {
        "vnet_id": vnet.id,
        "kind": kind.value,
        "endpoint": endpoint,
        "listen_port": listen_port,
        "host": host,
        "hub_ip": hub_ip,
        "hub_public": hub_public,
        "hub_secret": hub_secret,
        "created": now,
    }
    try:
        conn.execute(overlays.insert().values(values))
    except IntegrityError as exc:  # enabled by another writer since the check above
        raise _exists(vnet.name) from exc
    return find_overlay(conn, vnet.id)


def _exists(name: str) -> Conflict:
    return Conflict(
        f"network {name} already has an overlay: see `stratus vnet overlay show {name}`",
        hint=f"to change it, `stratus vnet overlay disable {name}` first",
    )


def select_peers(conn: Connection, vnet_id: int) -> list[OverlayPeer]:
    """Every peer of a network's overlay, in the order they were added."""
    stmt = select(overlay_peers).where(overlay_peers.c.vnet_id == vnet_id)
    return [_peer(row) for row in conn.execute(stmt.order_by(overlay_peers.c.id))]


def vm_peers(conn: Connection, vm_id: int) -> list[OverlayPeer]:
    """The peers made for a VM's NICs (on any network)."""
    stmt = select(overlay_peers).where(overlay_peers.c.vm_id == vm_id)
    return [_peer(row) for row in conn.execute(stmt.order_by(overlay_peers.c.id))]


def insert_peer(
    conn: Connection,
    now: datetime,
    overlay: Overlay,
    *,
    name: str,
    kind: PeerKind,
    address: str | None,
    public: str,
    secret: str,
    vm_id: int | None = None,
    nic_index: int | None = None,
) -> OverlayPeer:
    """Store a peer; a machine without an `address` gets a held lease of the network.

    Conflict when the name is taken in this overlay.
    """
    taken = select(overlay_peers.c.id).where(
        overlay_peers.c.vnet_id == overlay.vnet_id, overlay_peers.c.name == name
    )
    if conn.execute(taken).first() is not None:
        raise _peer_exists(overlay.network, name)
    if address is None:
        address = _hold_free(conn, now, find_vnet(conn, overlay.vnet_id), f"peer {name}")
    values = {
        "vnet_id": overlay.vnet_id,
        "name": name,
        "kind": kind.value,
        "vm_id": vm_id,
        "nic_index": nic_index,
        "address": address,
        "public": public,
        "secret": secret,
        "created": now,
    }
    try:
        peer_id = conn.execute(
            overlay_peers.insert().returning(overlay_peers.c.id), values
        ).scalar_one()
    except IntegrityError as exc:
        raise _peer_exists(overlay.network, name) from exc
    return OverlayPeer(
        id=peer_id,
        vnet_id=overlay.vnet_id,
        name=name,
        kind=kind,
        vm_id=vm_id,
        nic_index=nic_index,
        address=address,
        public=public,
        created=now,
        sealed_secret=secret,
    )


def _peer_exists(network: str, name: str) -> Conflict:
    return Conflict(
        f"overlay of network {network} already has a peer {name}",
        hint=f"choose another name, or `stratus vnet overlay peer remove {network} {name}`",
    )


def _forget(conn: Connection, overlay: Overlay, peer: OverlayPeer) -> None:
    """Delete a peer row and give its held address back (a VM's lease stays the VM's)."""
    conn.execute(overlay_peers.delete().where(overlay_peers.c.id == peer.id))
    if peer.kind is PeerKind.VM and peer.vm_id is None:
        release_held(conn, overlay.vnet_id, peer.address)


def remove_peer(conn: Connection, ref: int | str, name: str) -> OverlayPeer:
    """Delete a hand-added peer; NotFound for an unknown one, Conflict for a VM's."""
    overlay = find_overlay(conn, ref)
    row = conn.execute(
        select(overlay_peers).where(
            overlay_peers.c.vnet_id == overlay.vnet_id, overlay_peers.c.name == name
        )
    ).first()
    if row is None:
        raise NotFound(
            f"overlay of network {overlay.network} has no peer {name}",
            hint=f"see `stratus vnet overlay show {overlay.network}`",
        )
    peer = _peer(row)
    if peer.vm_id is not None:
        raise Conflict(
            f"peer {name} belongs to VM {peer.vm_id}: it is removed when the VM ends",
            hint=f"terminate VM {peer.vm_id}, or move it to a host of this site",
        )
    _forget(conn, overlay, peer)
    return peer


def remove_overlay(conn: Connection, ref: int | str) -> tuple[Overlay, list[OverlayPeer]]:
    """Delete a network's hub and hand-added peers, giving their addresses back.

    Conflict while VMs are peers (their context holds the configuration).
    """
    overlay = find_overlay(conn, ref)
    peers = select_peers(conn, overlay.vnet_id)
    vms = sorted({peer.vm_id for peer in peers if peer.vm_id is not None})
    if vms:
        shown = ", ".join(map(str, vms[:5])) + (", ..." if len(vms) > 5 else "")
        raise Conflict(
            f"the overlay of network {overlay.network} still joins VMs {shown}",
            hint="terminate them or move them to hosts of this site, then disable it",
        )
    for peer in peers:
        _forget(conn, overlay, peer)
    conn.execute(overlays.delete().where(overlays.c.vnet_id == overlay.vnet_id))
    release_held(conn, overlay.vnet_id, overlay.hub_ip)
    return overlay, peers


def prune_vm_peers(
    conn: Connection,
    *,
    vnet_id: int | None = None,
    vm_id: int | None = None,
    keep: Collection[int] = (),
) -> list[OverlayPeer]:
    """Delete VM peers whose NIC no longer holds their address (the VM ended), and for
    `vm_id` every peer but those in `keep`; the deleted peers."""
    holds = exists().where(
        and_(
            leases.c.vnet_id == overlay_peers.c.vnet_id,
            leases.c.vm_id == overlay_peers.c.vm_id,
            leases.c.nic_index == overlay_peers.c.nic_index,
            leases.c.ip == overlay_peers.c.address,
        )
    )
    stale = select(overlay_peers).where(overlay_peers.c.vm_id.is_not(None), ~holds)
    if vnet_id is not None:
        stale = stale.where(overlay_peers.c.vnet_id == vnet_id)
    gone = [_peer(row) for row in conn.execute(stale)]
    if vm_id is not None:
        mine = select(overlay_peers).where(
            overlay_peers.c.vm_id == vm_id, overlay_peers.c.id.not_in(list(keep))
        )
        gone += [peer for peer in map(_peer, conn.execute(mine)) if peer not in gone]
    if gone:
        conn.execute(overlay_peers.delete().where(overlay_peers.c.id.in_([p.id for p in gone])))
    return gone
