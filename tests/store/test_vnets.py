"""Networks and leases in the store: allocation order, wanted addresses, holds, exhaustion,
release, deletion, and concurrent allocation (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from stratus.model.errors import Conflict, InvalidInput, NotFound
from stratus.model.records import Lease
from stratus.model.vnet_template import parse_vnet
from stratus.store import Store
from stratus.store.vnets import LeaseRequest
from tests.store.helpers import new_vm

PRIVATE = """\
NAME = "private"
BRIDGE = "br0"
NETNS = "lab"
NETWORK_ADDRESS = "192.168.150.0"
NETWORK_MASK = "/24"
GATEWAY = "192.168.150.1"
DNS = "192.168.150.1"
AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "3" ]
AR = [ TYPE = "IP4", IP = "192.168.150.200", SIZE = "2" ]
"""


def _network(store: Store, text: str = PRIVATE) -> None:
    store.create_vnet(parse_vnet(text))


def _vm(store: Store) -> int:
    return store.create_vms([new_vm()])[0].id


def _take(store: Store, vm_id: int, network: str = "private", address: str | None = None) -> Lease:
    [lease] = store.allocate_leases(vm_id, [LeaseRequest(0, network, address)])
    return lease


def _ips(leases: list[Lease]) -> list[str | None]:
    return [lease.ip for lease in leases]


def test_a_created_network_is_found_by_name_and_id_and_listed(store: Store) -> None:
    _network(store)
    vnet = store.get_vnet("private")
    assert store.get_vnet(vnet.id) == vnet
    assert (vnet.driver, vnet.bridge, vnet.netns) == ("bridge", "br0", "lab")
    assert (vnet.size, vnet.used, vnet.held, vnet.free) == (5, 0, 0, 5)
    assert vnet.spec == parse_vnet(PRIVATE)
    assert [v.name for v in store.list_vnets()] == ["private"]
    assert store.list_vnets(after_id=vnet.id) == []


def test_a_network_name_is_unique(store: Store) -> None:
    _network(store)
    with pytest.raises(Conflict, match="network 'private' already exists"):
        _network(store)


def test_an_unknown_network_is_not_found_with_a_hint(store: Store) -> None:
    with pytest.raises(NotFound) as caught:
        store.get_vnet("nope")
    assert "network 'nope' does not exist" in caught.value.message
    assert caught.value.hint == "see `stratus vnet list`"
    with pytest.raises(NotFound, match="'nope'"):
        _take(store, _vm(store), "nope")


def test_leases_go_lowest_first_then_to_the_next_range(store: Store) -> None:
    _network(store)
    vm = _vm(store)
    taken = store.allocate_leases(vm, [LeaseRequest(i, "private") for i in range(5)])
    assert _ips(taken) == [
        "192.168.150.100", "192.168.150.101", "192.168.150.102",
        "192.168.150.200", "192.168.150.201",
    ]  # fmt: skip
    assert [lease.nic_index for lease in taken] == [0, 1, 2, 3, 4]
    assert taken[0].mac == "02:00:c0:a8:96:64"
    vnet = store.get_vnet("private")
    assert (vnet.used, vnet.held, vnet.free) == (5, 0, 0)


def test_a_lease_carries_what_the_nic_needs(store: Store) -> None:
    _network(store)
    vm = _vm(store)
    lease = _take(store, vm)
    assert (lease.network, lease.driver, lease.bridge, lease.netns) == (
        "private",
        "bridge",
        "br0",
        "lab",
    )
    assert (lease.network_address, lease.mask) == ("192.168.150.0", "255.255.255.0")
    assert (lease.gateway, lease.dns, lease.ports) == ("192.168.150.1", "192.168.150.1", ())
    assert (lease.vm_id, lease.held) == (vm, False)
    assert store.vm_leases(vm) == [lease]


def test_a_user_networks_lease_carries_its_guest_ports(store: Store) -> None:
    _network(
        store, "NAME = nat\nNETWORK_ADDRESS = 10.0.2.0/24\nAR = [ IP = 10.0.2.15, SIZE = 4 ]\n"
    )
    lease = _take(store, _vm(store), "nat")
    assert (lease.driver, lease.ip, lease.gateway, lease.dns) == (
        "user",
        "10.0.2.15",
        "10.0.2.2",
        "10.0.2.3",
    )
    assert lease.ports == (22, 80)


def test_a_wanted_ip_or_mac_is_given_when_free(store: Store) -> None:
    _network(store)
    vm = _vm(store)
    by_ip = _take(store, vm, address="192.168.150.102")
    by_mac = _take(store, vm, address="02:00:c0:a8:96:c9")
    assert (by_ip.ar_id, by_ip.offset, by_ip.mac) == (0, 2, "02:00:c0:a8:96:66")
    assert (by_mac.ar_id, by_mac.offset, by_mac.ip) == (1, 1, "192.168.150.201")
    assert _take(store, vm).ip == "192.168.150.100"  # the lowest free one skips neither


def test_a_wanted_address_that_is_used_held_or_outside_is_a_conflict_naming_it(
    store: Store,
) -> None:
    _network(store)
    first = _vm(store)
    _take(store, first, address="192.168.150.101")
    store.hold_address("private", "192.168.150.102")
    second = _vm(store)
    with pytest.raises(
        Conflict, match=rf"192\.168\.150\.101 of network private is used by VM {first}"
    ):
        _take(store, second, address="192.168.150.101")
    with pytest.raises(Conflict, match=r"192\.168\.150\.102 of network private is on hold"):
        _take(store, second, address="192.168.150.102")
    with pytest.raises(Conflict, match=r"192\.168\.150\.50 is not in any address range"):
        _take(store, second, address="192.168.150.50")
    with pytest.raises(InvalidInput, match="not an IPv4, IPv6 or MAC"):
        _take(store, second, address="banana")
    assert store.vm_leases(second) == []


def test_an_exhausted_network_names_its_size_and_what_to_do(store: Store) -> None:
    _network(store)
    vm = _vm(store)
    store.allocate_leases(vm, [LeaseRequest(i, "private") for i in range(4)])
    store.hold_address("private", "192.168.150.201")
    with pytest.raises(Conflict) as caught:
        _take(store, _vm(store))
    assert "network private has no free lease (all 5 addresses are used or on hold)" in str(
        caught.value
    )


def test_a_failed_allocation_takes_nothing(store: Store) -> None:
    _network(store)
    vm = _vm(store)
    with pytest.raises(NotFound):
        store.allocate_leases(vm, [LeaseRequest(0, "private"), LeaseRequest(1, "missing")])
    assert store.vm_leases(vm) == []
    assert store.get_vnet("private").used == 0


def test_a_held_address_is_skipped_until_released(store: Store) -> None:
    _network(store)
    held = store.hold_address("private", "192.168.150.100")
    assert (held.held, held.vm_id, held.ip) == (True, None, "192.168.150.100")
    assert store.hold_address("private", "02:00:c0:a8:96:64") == held  # holding twice is a no-op
    vm = _vm(store)
    assert _take(store, vm).ip == "192.168.150.101"
    assert store.get_vnet("private").held == 1
    freed = store.release_address("private", "192.168.150.100")
    assert freed == ("private", ("02:00:c0:a8:96:64", "192.168.150.100", None))
    assert store.get_vnet("private").held == 0
    assert _take(store, vm).ip == "192.168.150.100"


def test_an_address_in_use_can_be_neither_held_nor_released_by_hand(store: Store) -> None:
    _network(store)
    vm = _vm(store)
    _take(store, vm)
    with pytest.raises(Conflict, match=f"is used by VM {vm}: an address in use cannot be held"):
        store.hold_address("private", "192.168.150.100")
    with pytest.raises(Conflict, match=f"is used by VM {vm}, not on hold"):
        store.release_address("private", "192.168.150.100")


def test_releasing_a_vms_leases_frees_its_addresses_for_the_next_vm(store: Store) -> None:
    _network(store)
    first, second = _vm(store), _vm(store)
    store.allocate_leases(first, [LeaseRequest(0, "private"), LeaseRequest(1, "private")])
    _take(store, second)
    assert store.release_leases(first) == 2
    assert store.vm_leases(first) == []
    third = _vm(store)
    assert _take(store, third).ip == "192.168.150.100"
    _, leases = store.vnet_detail("private")
    assert [(lease.ip, lease.vm_id) for lease in leases] == [
        ("192.168.150.100", third),
        ("192.168.150.102", second),
    ]


def test_a_network_with_leases_of_vms_cannot_be_deleted(store: Store) -> None:
    _network(store)
    vm = _vm(store)
    _take(store, vm)
    with pytest.raises(Conflict, match=f"still leases addresses to VMs {vm}: terminate them"):
        store.delete_vnet("private")
    store.release_leases(vm)
    store.hold_address("private", "192.168.150.101")
    store.delete_vnet("private")  # holds go with it
    assert store.list_vnets() == []
    with pytest.raises(NotFound):
        store.delete_vnet("private")


THREADS = 8
PER_THREAD = 6


def test_concurrent_allocations_give_distinct_addresses(store: Store) -> None:
    _network(
        store,
        "NAME = big\nBRIDGE = br0\nAR = [ TYPE = IP4, IP = 10.0.0.1, SIZE = 40 ]\n"
        "AR = [ TYPE = IP4, IP = 10.1.0.1, SIZE = 40 ]\n",
    )
    vms = [_vm(store) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def allocate(vm_id: int) -> list[Lease]:
        barrier.wait(timeout=30)
        taken: list[Lease] = []
        for nic in range(PER_THREAD):
            taken += store.allocate_leases(vm_id, [LeaseRequest(nic, "big")])
        return taken

    with ThreadPoolExecutor(THREADS) as pool:
        results = [lease for taken in pool.map(allocate, vms) for lease in taken]
    ips = [lease.ip for lease in results]
    assert len(ips) == len(set(ips)) == THREADS * PER_THREAD
    # Lowest first even under contention: exactly the first 48 addresses are taken.
    expected = [f"10.0.0.{i}" for i in range(1, 41)] + [f"10.1.0.{i}" for i in range(1, 9)]
    assert sorted(ips, key=lambda ip: tuple(map(int, ip.split(".")))) == expected
    assert store.get_vnet("big").used == THREADS * PER_THREAD
