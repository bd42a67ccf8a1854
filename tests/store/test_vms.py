"""VMs: bulk creation, reads, listing pages, counts and the scheduler's and engine's queues."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import event, select

from stratus.model.errors import InvalidInput, NotFound
from stratus.model.lifecycle import Action, VmState
from stratus.model.records import Vm
from stratus.store import Store, VmChange
from stratus.store import db as store_db
from stratus.store.tables import hosts, vms
from tests.store.helpers import add_host, applied, new_vm, run_on


def test_created_vms_get_names_from_their_ids_and_one_event_each(store: Store) -> None:
    created = store.create_vms([new_vm(), new_vm("web"), new_vm(state=VmState.HOLD)])
    assert [vm.name for vm in created] == [f"vm-{created[0].id}", "web", f"vm-{created[2].id}"]
    assert [vm.state for vm in created] == [VmState.PENDING, VmState.PENDING, VmState.HOLD]
    assert all(vm.version == 1 and vm.op_seq == 0 and vm.host_id is None for vm in created)
    assert [store.get_vm(vm.id) for vm in created] == created
    events = store.events(object_type="vm")
    assert [(e.object_id, e.from_state, e.to_state, e.reason) for e in events] == [
        (created[0].id, "", "PENDING", "submitted"),
        (created[1].id, "", "PENDING", "submitted"),
        (created[2].id, "", "HOLD", "submitted"),
    ]


def test_a_thousand_vms_are_created_in_one_call(store: Store) -> None:
    created = store.create_vms([new_vm(template={"NAME": f"n{i}", "N": i}) for i in range(1000)])
    assert len({vm.id for vm in created}) == 1000
    assert store.count_vms() == 1000
    assert store.get_vm(created[999].id).template == {"NAME": "n999", "N": 999}


def test_new_vms_must_start_pending_or_on_hold(store: Store) -> None:
    with pytest.raises(InvalidInput, match="PENDING or HOLD"):
        store.create_vms([new_vm(), new_vm(state=VmState.RUNNING)])
    assert store.count_vms() == 0


def test_templates_that_are_not_json_are_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        store.create_vms([new_vm(template={"when": object()})])
    assert store.count_vms() == 0


def test_unknown_vm_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=r"VM 7 does not exist: see `stratus vm list`"):
        store.get_vm(7)


def test_reads_fill_the_host_name(store: Store) -> None:
    host = add_host(store, "node7")
    [vm] = store.create_vms([new_vm()])
    run_on(store, vm, host)
    assert store.get_vm(vm.id).host_name == "node7"
    assert [v.host_name for v in store.list_vms()] == ["node7"]


def test_listing_pages_by_id_with_after_id(store: Store) -> None:
    ids = [vm.id for vm in store.create_vms([new_vm() for _ in range(25)])]
    pages: list[list[int]] = []
    after = 0
    while page := store.list_vms(limit=10, after_id=after):
        pages.append([vm.id for vm in page])
        after = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == ids


def test_listing_filters_by_state_host_and_done(store: Store) -> None:
    host = add_host(store)
    a, b, c = store.create_vms([new_vm(), new_vm(), new_vm()])
    run_on(store, a, host)
    applied(store, VmChange(c.id, c.version, VmState.DONE, "terminated before it ran"))
    assert [vm.id for vm in store.list_vms(state=VmState.PENDING)] == [b.id]
    assert [vm.id for vm in store.list_vms(host_id=host.id)] == [a.id]
    assert [vm.id for vm in store.list_vms(include_done=False)] == [a.id, b.id]
    assert [vm.id for vm in store.list_vms()] == [a.id, b.id, c.id]


def test_counts_by_state_include_empty_states(store: Store) -> None:
    host = add_host(store)
    vms = store.create_vms([new_vm(), new_vm(), new_vm(state=VmState.HOLD)])
    run_on(store, vms[0], host)
    counts = store.count_by_state()
    assert set(counts) == set(VmState)
    assert (counts[VmState.PENDING], counts[VmState.HOLD], counts[VmState.RUNNING]) == (1, 1, 1)
    assert counts[VmState.DONE] == 0
    assert store.count_vms() == 3 and store.count_vms(state=VmState.HOLD) == 1


def test_pending_queue_is_by_priority_then_age_and_includes_resched(store: Store) -> None:
    host = add_host(store)
    low, high, mid, held = store.create_vms(
        [new_vm(priority=0), new_vm(priority=10), new_vm(priority=5), new_vm(state=VmState.HOLD)]
    )
    [running] = store.create_vms([new_vm(priority=7)])
    late_high = store.create_vms([new_vm(priority=10)])[0]
    running = run_on(store, running, host)
    assert [vm.id for vm in store.pending_vms()] == [high.id, late_high.id, mid.id, low.id]
    applied(store, VmChange(running.id, running.version, VmState.RUNNING, "resched", resched=True))
    queue = [vm.id for vm in store.pending_vms()]
    assert queue == [high.id, late_high.id, running.id, mid.id, low.id]
    assert held.id not in queue
    assert len(store.pending_vms(limit=2)) == 2


def test_vms_with_work_are_transient_or_carry_an_action(store: Store) -> None:
    host = add_host(store)
    idle, rebooting, booting, _pending = store.create_vms([new_vm() for _ in range(4)])
    run_on(store, idle, host)
    rebooting = run_on(store, rebooting, host)
    applied(
        store,
        VmChange(rebooting.id, rebooting.version, VmState.RUNNING, "reboot", action=Action.REBOOT),
    )
    applied(store, VmChange(booting.id, 1, VmState.PROLOG, "placed", host_id=host.id))
    assert [vm.id for vm in store.vms_with_work()] == [rebooting.id, booting.id]
    assert [vm.id for vm in store.vms_with_work(exclude={rebooting.id})] == [booting.id]
    assert [vm.id for vm in store.vms_with_work(limit=1)] == [rebooting.id]


def test_vms_on_host_include_incoming_ones_but_not_done(store: Store) -> None:
    source, target = add_host(store, "src"), add_host(store, "dst")
    staying, moving = store.create_vms([new_vm(), new_vm()])
    run_on(store, staying, source)
    moving = run_on(store, moving, source)
    applied(
        store,
        VmChange(moving.id, moving.version, VmState.MIGRATING, "migrate", target_host_id=target.id),
    )
    assert [vm.id for vm in store.vms_on_host(source.id)] == [staying.id, moving.id]
    assert [vm.id for vm in store.vms_on_host(target.id)] == [moving.id]


def test_fast_row_reader_agrees_with_the_typed_columns(store: Store) -> None:
    host = add_host(store)
    [vm] = store.create_vms([new_vm("x", template={"NAME": "x", "DISK": [{"SIZE": 1}]})])
    vm = run_on(store, vm, host)
    applied(store, VmChange(vm.id, vm.version, VmState.RUNNING, "resched", resched=True))
    joined = vms.outerjoin(hosts, vms.c.host_id == hosts.c.id)
    typed = select(vms, hosts.c.name.label("host_name")).select_from(joined)
    with store_db.read(store.engine) as conn:
        row = conn.execute(typed).one()._asdict()
    row["state"] = VmState(row["state"])
    assert store.get_vm(vm.id) == Vm(**row)
    assert store.get_vm(vm.id).resched is True
    assert store.get_vm(vm.id).created.tzinfo is UTC


def test_listing_vms_is_one_query_with_host_names_joined(store: Store) -> None:
    hosts = [add_host(store, f"h{i}") for i in range(3)]
    for i, vm in enumerate(store.create_vms([new_vm() for _ in range(9)])):
        run_on(store, vm, hosts[i % 3])
    selects: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        listed = store.list_vms()
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert [vm.host_name for vm in listed] == ["h0", "h1", "h2"] * 3
    assert len(selects) == 1
