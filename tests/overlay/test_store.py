"""Overlays in the store (SQLite and PostgreSQL): tunnel addresses are real leases, peers
are unique per overlay, VM peers go when their VM's lease does, and disabling gives every
held address back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from stratus.model.errors import Conflict, NotFound
from stratus.model.overlay import Overlay, OverlayKind, OverlayPeer, PeerKind
from stratus.model.vnet_template import parse_vnet
from stratus.store import Store
from stratus.store import db as store_db
from stratus.store import overlays as rows
from stratus.store.vnets import LeaseRequest
from tests.store.helpers import new_vm

T = TypeVar("T")

LAN = """\
NAME = "lan"
BRIDGE = "br0"
NETWORK_ADDRESS = "192.168.150.0"
NETWORK_MASK = "255.255.255.0"
AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "4" ]
"""


def write(store: Store, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    with store_db.write(store.engine) as conn:
        return fn(conn, *args, **kwargs)


def now() -> datetime:
    return datetime.now(UTC)


def enable(store: Store) -> Overlay:
    store.create_vnet(parse_vnet(LAN))
    return write(
        store, rows.insert_overlay, now(), "lan", kind=OverlayKind.WIREGUARD,
        endpoint="203.0.113.7:51820", listen_port=51820, host=None, hub_public="HUB=",
        hub_secret="sealed-hub",
    )  # fmt: skip


def add(store: Store, overlay: Overlay, name: str, **kw: object) -> OverlayPeer:
    fields: dict[str, object] = {"kind": PeerKind.VM, "address": None, "public": f"{name}=",
                                 "secret": f"sealed-{name}"} | kw  # fmt: skip
    return write(store, rows.insert_peer, now(), overlay, name=name, **fields)


def held(store: Store) -> set[str | None]:
    _, leases = store.vnet_detail("lan")
    return {lease.ip for lease in leases if lease.held}


def test_the_hub_and_hand_added_peers_hold_leases_no_vm_can_take(store: Store) -> None:
    overlay = enable(store)
    assert overlay.hub_ip == "192.168.150.100" and overlay.network == "lan"
    laptop = add(store, overlay, "laptop")
    assert laptop.address == "192.168.150.101" and laptop.allowed_ips == "192.168.150.101/32"
    assert held(store) == {"192.168.150.100", "192.168.150.101"}
    vm = store.create_vms([new_vm()])[0].id
    with pytest.raises(Conflict, match="on hold"):
        store.allocate_leases(vm, [LeaseRequest(0, "lan", "192.168.150.101")])
    [lease] = store.allocate_leases(vm, [LeaseRequest(0, "lan")])
    assert lease.ip == "192.168.150.102"


def test_a_second_overlay_or_a_second_peer_of_a_name_is_a_conflict(store: Store) -> None:
    overlay = enable(store)
    with pytest.raises(Conflict, match="already has an overlay"):
        write(store, rows.insert_overlay, now(), "lan", kind=OverlayKind.OPENVPN,
              endpoint="x:1", listen_port=1, host=None, hub_public="", hub_secret="")  # fmt: skip
    add(store, overlay, "laptop")
    with pytest.raises(Conflict, match="already has a peer laptop"):
        add(store, overlay, "laptop")
    site = add(store, overlay, "branch", kind=PeerKind.SITE, address="10.2.0.0/24")
    assert site.allowed_ips == "10.2.0.0/24"
    assert [p.name for p in write(store, rows.select_peers, overlay.vnet_id)] == [
        "laptop",
        "branch",
    ]


def test_a_full_network_refuses_a_peer_address_with_what_to_do(store: Store) -> None:
    overlay = enable(store)
    for name in ("a", "b", "c"):
        add(store, overlay, name)
    with pytest.raises(Conflict, match="no free IPv4 address for peer d") as refused:
        add(store, overlay, "d")
    assert "release held addresses" in refused.value.message


def test_vm_peers_go_with_their_lease_and_cannot_be_removed_by_hand(store: Store) -> None:
    overlay = enable(store)
    vm = store.create_vms([new_vm()])[0].id
    [lease] = store.allocate_leases(vm, [LeaseRequest(0, "lan")])
    add(store, overlay, f"vm-{vm}-nic0", address=lease.ip, vm_id=vm, nic_index=0)
    with pytest.raises(Conflict, match=f"belongs to VM {vm}"):
        write(store, rows.remove_peer, "lan", f"vm-{vm}-nic0")
    with pytest.raises(Conflict, match=f"still joins VMs {vm}"):
        write(store, rows.remove_overlay, "lan")
    assert write(store, rows.prune_vm_peers, vnet_id=overlay.vnet_id) == []  # still leased
    store.release_leases(vm)  # the VM ended
    [gone] = write(store, rows.prune_vm_peers, vnet_id=overlay.vnet_id)
    assert gone.vm_id == vm and write(store, rows.vm_peers, vm) == []


def test_disabling_forgets_peers_and_gives_every_held_address_back(store: Store) -> None:
    overlay = enable(store)
    add(store, overlay, "laptop")
    add(store, overlay, "branch", kind=PeerKind.SITE, address="10.2.0.0/24")
    removed, peers = write(store, rows.remove_overlay, "lan")
    assert removed.vnet_id == overlay.vnet_id and len(peers) == 2
    assert held(store) == set()
    with pytest.raises(NotFound, match="network lan has no overlay") as missing:
        write(store, rows.find_overlay, "lan")
    assert missing.value.hint is not None and "overlay enable lan" in missing.value.hint
    store.delete_vnet("lan")  # nothing of the overlay is left to hold it


def test_removing_a_peer_gives_its_address_back(store: Store) -> None:
    overlay = enable(store)
    add(store, overlay, "laptop")
    write(store, rows.remove_peer, "lan", "laptop")
    assert held(store) == {overlay.hub_ip}
    with pytest.raises(NotFound, match="has no peer laptop"):
        write(store, rows.remove_peer, "lan", "laptop")


def test_a_network_with_an_overlay_cannot_be_deleted_and_says_how(store: Store) -> None:
    enable(store)
    with pytest.raises(Conflict, match="has an overlay hub") as refused:
        store.delete_vnet("lan")
    assert refused.value.hint is not None and "overlay disable lan" in refused.value.hint
    assert store.get_vnet("lan").name == "lan"  # nothing was deleted
