"""Hosts: add, read by id or name, usage derived from the VMs on them, update, delete."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from stratus.model.errors import Conflict, InvalidInput, NotFound
from stratus.model.lifecycle import VmState
from stratus.model.records import HostState, HostUsage
from stratus.store import Store, VmChange
from tests.store.helpers import add_host, applied, new_vm, run_on


def test_added_host_starts_in_init_with_an_added_event(store: Store) -> None:
    host = add_host(store, "node1", cpu=8, memory=32768)
    assert (host.state, host.cpu, host.memory, host.version) == (HostState.INIT, 8.0, 32768, 1)
    assert host.labels == {"COUNTRY": "ES"} and host.options == {"latency": 0}
    assert host.usage == HostUsage()
    assert host.created.tzinfo is UTC
    [event] = store.events(object_type="host", object_id=host.id)
    assert (event.from_state, event.to_state, event.reason) == ("", "INIT", "added")


def test_host_is_found_by_id_and_by_name(store: Store) -> None:
    host = add_host(store, "node1")
    assert store.get_host(host.id) == host
    assert store.get_host("node1") == host


def test_unknown_host_says_how_to_list_hosts(store: Store) -> None:
    with pytest.raises(NotFound, match=r"host 'nope' does not exist: see `stratus host list`"):
        store.get_host("nope")
    with pytest.raises(NotFound, match="host 42 does not exist"):
        store.get_host(42)


def test_duplicate_host_name_is_a_conflict_and_adds_nothing(store: Store) -> None:
    add_host(store, "node1")
    with pytest.raises(Conflict, match="host 'node1' already exists"):
        add_host(store, "node1")
    assert len(store.list_hosts()) == 1
    assert len(store.events(object_type="host")) == 1


def test_labels_must_be_strings(store: Store) -> None:
    with pytest.raises(InvalidInput, match="labels"):
        store.add_host("bad", "dummy", 1, 1024, {"PRIORITY": 3}, {})  # type: ignore[dict-item]
    assert store.list_hosts() == []


def test_usage_sums_the_vms_placed_on_a_host_but_not_done_ones(store: Store) -> None:
    host, other = add_host(store, "node1"), add_host(store, "node2")
    a, b, c = store.create_vms([new_vm(cpu=1, memory=1024), new_vm(cpu=2, memory=2048), new_vm()])
    run_on(store, a, host)
    running_b = run_on(store, b, host)
    run_on(store, c, other)
    assert store.get_host(host.id).usage == HostUsage(cpu=3.0, memory=3072, vms=2)
    # b terminates: EPILOG -> DONE leaves the host, whether or not host_id was cleared.
    vm = applied(store, VmChange(b.id, running_b.version, VmState.SHUTTING_DOWN, "terminate"))
    vm = applied(store, VmChange(b.id, vm.version, VmState.EPILOG, "shut down"))
    applied(store, VmChange(b.id, vm.version, VmState.DONE, "cleaned up"))
    assert store.get_host(host.id).usage == HostUsage(cpu=1.0, memory=1024, vms=1)
    assert store.get_host(other.id).usage == HostUsage(cpu=1.0, memory=512, vms=1)


def test_a_migrating_vm_reserves_capacity_on_both_hosts(store: Store) -> None:
    source, target = add_host(store, "src"), add_host(store, "dst")
    [vm] = store.create_vms([new_vm(cpu=2, memory=4096)])
    vm = run_on(store, vm, source)
    applied(
        store, VmChange(vm.id, vm.version, VmState.MIGRATING, "migrate", target_host_id=target.id)
    )
    usage = {host.name: host.usage for host in store.all_hosts()}
    assert usage == {
        "src": HostUsage(cpu=2.0, memory=4096, vms=1),
        "dst": HostUsage(cpu=2.0, memory=4096, vms=1),
    }


def test_listing_hosts_pages_by_id_with_usage_and_filters_by_state(store: Store) -> None:
    hosts = [add_host(store, f"node{i}") for i in range(5)]
    [vm] = store.create_vms([new_vm(cpu=4, memory=8192)])
    run_on(store, vm, hosts[3])
    first = store.list_hosts(limit=2)
    second = store.list_hosts(limit=2, after_id=first[-1].id)
    rest = store.list_hosts(limit=2, after_id=second[-1].id)
    assert [h.name for h in first + second + rest] == [f"node{i}" for i in range(5)]
    assert second[1].usage == HostUsage(cpu=4.0, memory=8192, vms=1)
    assert store.list_hosts(state=HostState.MONITORED) == []
    store.update_host(hosts[1].id, 1, state=HostState.MONITORED, reason="probed")
    assert [h.name for h in store.list_hosts(state=HostState.MONITORED)] == ["node1"]


def test_update_host_is_conditional_on_the_version(store: Store) -> None:
    host = add_host(store)
    probed = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    updated = store.update_host(
        host.id,
        host.version,
        state=HostState.MONITORED,
        reason="probe ok",
        monitoring={"HYPERVISOR": "dummy", "FREE_MEMORY": 1000},
        last_monitored=probed,
    )
    assert (updated.state, updated.version, updated.last_monitored) == (
        HostState.MONITORED,
        2,
        probed,
    )
    assert updated.monitoring == {"FREE_MEMORY": 1000, "HYPERVISOR": "dummy"}
    with pytest.raises(Conflict, match=r"host \d+ changed meanwhile \(version 1, now 2\)"):
        store.update_host(host.id, host.version, state=HostState.DISABLED)
    assert store.get_host(host.id).state is HostState.MONITORED


def test_host_events_are_written_only_when_the_state_changes(store: Store) -> None:
    host = add_host(store)
    host = store.update_host(host.id, host.version, state=HostState.MONITORED, reason="probe ok")
    host = store.update_host(host.id, host.version, monitoring={"load": 0.5})
    host = store.update_host(host.id, host.version, state=HostState.ERROR, reason="timeout")
    events = store.events(object_type="host", object_id=host.id)
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [
        ("", "INIT", "added"),
        ("INIT", "MONITORED", "probe ok"),
        ("MONITORED", "ERROR", "timeout"),
    ]


def test_delete_host_is_refused_while_vms_occupy_or_target_it(store: Store) -> None:
    source, target = add_host(store, "src"), add_host(store, "dst")
    [vm] = store.create_vms([new_vm()])
    vm = run_on(store, vm, source)
    vm = applied(
        store, VmChange(vm.id, vm.version, VmState.MIGRATING, "migrate", target_host_id=target.id)
    )
    for host in (source, target):
        with pytest.raises(Conflict, match=rf"host '{host.name}' still holds VMs \({vm.id}\)"):
            store.delete_host(host.id)
    vm = applied(
        store,
        VmChange(
            vm.id, vm.version, VmState.RUNNING, "migrated", host_id=target.id, target_host_id=None
        ),
    )
    store.delete_host(source.id)
    with pytest.raises(NotFound):
        store.get_host(source.id)
    assert store.events(object_type="host", object_id=source.id)[-1].to_state == "DELETED"
    assert store.get_host("dst").usage.vms == 1


def test_deleting_a_missing_host_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="host 9 does not exist"):
        store.delete_host(9)


def test_all_hosts_returns_every_host_with_usage(store: Store) -> None:
    hosts = [add_host(store, f"h{i}") for i in range(3)]
    vms = store.create_vms([new_vm(cpu=0.5), new_vm(cpu=0.5)])
    for vm in vms:
        run_on(store, vm, hosts[2])
    snapshot = store.all_hosts()
    assert [h.usage.vms for h in snapshot] == [0, 0, 2]
    assert snapshot[2].usage.cpu == pytest.approx(1.0)


def test_listing_hosts_takes_two_queries_whatever_the_page_size(store: Store) -> None:
    hosts = [add_host(store, f"h{i}") for i in range(30)]
    store.create_vms([new_vm() for _ in range(30)])
    for vm, host in zip(store.list_vms(), hosts, strict=True):
        run_on(store, vm, host)
    selects: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        listed = store.list_hosts()
        snapshot = store.all_hosts()
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert [h.usage.vms for h in listed] == [1] * 30 == [h.usage.vms for h in snapshot]
    assert len(selects) == 4
