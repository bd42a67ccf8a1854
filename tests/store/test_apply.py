"""apply(): batches of conditional VM changes, each checked, evented and historied."""

from __future__ import annotations

from stratus.model.errors import Conflict
from stratus.model.lifecycle import Action, VmState
from stratus.model.records import Vm
from stratus.store import Store, VmChange
from tests.store.helpers import add_host, applied, new_vm, run_on


def test_legal_transition_bumps_the_version_and_writes_one_event(store: Store) -> None:
    host = add_host(store)
    [vm] = store.create_vms([new_vm()])
    before = store.events(object_id=vm.id, object_type="vm")
    moved = applied(
        store, VmChange(vm.id, vm.version, VmState.PROLOG, "placed on node1", host_id=host.id)
    )
    assert (moved.state, moved.version, moved.host_id, moved.host_name) == (
        VmState.PROLOG,
        2,
        host.id,
        "node1",
    )
    assert moved.updated >= vm.updated
    assert store.get_vm(vm.id) == moved
    after = store.events(object_id=vm.id, object_type="vm", after_id=before[-1].id)
    assert [(e.from_state, e.to_state, e.reason) for e in after] == [
        ("PENDING", "PROLOG", "placed on node1")
    ]


def test_same_state_change_is_recorded_when_the_table_allows_it(store: Store) -> None:
    [vm] = store.create_vms([new_vm()])
    vm = run_on(store, vm, add_host(store))
    rebooting = applied(
        store,
        VmChange(
            vm.id,
            vm.version,
            VmState.RUNNING,
            "reboot requested",
            action=Action.REBOOT,
            bump_op_seq=True,
        ),
    )
    assert (rebooting.action, rebooting.op_seq, rebooting.request_id()) == (
        Action.REBOOT,
        1,
        f"vm-{vm.id}-1",
    )
    last = store.events(object_type="vm", object_id=vm.id)[-1]
    assert (last.from_state, last.to_state, last.reason) == (
        "RUNNING",
        "RUNNING",
        "reboot requested",
    )


def test_illegal_transition_is_a_conflict_and_writes_nothing(store: Store) -> None:
    [vm] = store.create_vms([new_vm()])
    events_before = store.events()
    [result] = store.apply([VmChange(vm.id, vm.version, VmState.RUNNING, "skip ahead")])
    assert isinstance(result, Conflict)
    assert f"VM {vm.id}: illegal VM state change PENDING -> RUNNING" in str(result)
    assert store.get_vm(vm.id) == vm
    assert store.events() == events_before


def test_stale_version_is_refused_and_the_rest_of_the_batch_still_applies(store: Store) -> None:
    a, b, c = store.create_vms([new_vm(), new_vm(), new_vm()])
    applied(store, VmChange(b.id, b.version, VmState.HOLD, "held"))
    results = store.apply(
        [
            VmChange(a.id, a.version, VmState.HOLD, "held"),
            VmChange(b.id, b.version, VmState.PENDING, "released"),  # stale: b is at version 2
            VmChange(c.id, c.version, VmState.HOLD, "held"),
        ]
    )
    assert isinstance(results[0], Vm) and isinstance(results[2], Vm)
    assert isinstance(results[1], Conflict)
    assert str(results[1]) == f"VM {b.id} changed meanwhile (version 1, now 2): reload and retry"
    assert [store.get_vm(vm.id).state for vm in (a, b, c)] == [VmState.HOLD] * 3
    assert [e.to_state for e in store.events(object_type="vm", object_id=b.id)] == [
        "PENDING",
        "HOLD",
    ]


def test_missing_vm_and_missing_host_are_conflicts_of_their_own_item(store: Store) -> None:
    [vm] = store.create_vms([new_vm()])
    results = store.apply(
        [
            VmChange(999, 1, VmState.HOLD, "held"),
            VmChange(vm.id, vm.version, VmState.PROLOG, "placed", host_id=4242),
            VmChange(vm.id, vm.version, VmState.HOLD, "held"),
        ]
    )
    assert "VM 999 does not exist" in str(results[0])
    assert "host 4242 does not exist" in str(results[1])
    assert isinstance(results[2], Vm) and results[2].state is VmState.HOLD


def test_changes_to_one_vm_chain_within_a_batch(store: Store) -> None:
    [vm] = store.create_vms([new_vm()])
    held, released = store.apply(
        [
            VmChange(vm.id, 1, VmState.HOLD, "held"),
            VmChange(vm.id, 2, VmState.PENDING, "released"),
        ]
    )
    assert isinstance(held, Vm) and isinstance(released, Vm)
    assert (held.state, held.version, released.state, released.version) == (
        VmState.HOLD,
        2,
        VmState.PENDING,
        3,
    )
    assert store.get_vm(vm.id) == released


def test_unset_fields_are_kept_and_none_clears_them(store: Store) -> None:
    host = add_host(store)
    [vm] = store.create_vms([new_vm()])
    vm = run_on(store, vm, host)
    assert (vm.host_id, vm.deploy_id) == (host.id, "i-1")
    saving = applied(store, VmChange(vm.id, vm.version, VmState.SAVING, "stop", action=Action.STOP))
    assert (saving.host_id, saving.deploy_id, saving.action) == (host.id, "i-1", Action.STOP)
    epilog = applied(
        store, VmChange(vm.id, saving.version, VmState.EPILOG, "saved", checkpoint="ckpt-1")
    )
    stopped = applied(
        store,
        VmChange(
            vm.id, epilog.version, VmState.STOPPED, "stopped",
            action=None, host_id=None, deploy_id=None, close_history="stop",
        ),
    )  # fmt: skip
    assert (stopped.host_id, stopped.host_name, stopped.deploy_id, stopped.action) == (
        None,
        None,
        None,
        None,
    )
    assert stopped.checkpoint == "ckpt-1"
    assert store.get_vm(vm.id) == stopped
    assert store.get_host(host.id).usage.vms == 0


def test_failed_state_is_recorded(store: Store) -> None:
    host = add_host(store)
    [vm] = store.create_vms([new_vm()])
    vm = applied(store, VmChange(vm.id, vm.version, VmState.PROLOG, "placed", host_id=host.id))
    failed = applied(
        store,
        VmChange(
            vm.id,
            vm.version,
            VmState.FAILED,
            "transfer failed: disk full",
            failed_state=VmState.PROLOG,
        ),
    )
    assert (failed.failed_state, failed.reason) == (VmState.PROLOG, "transfer failed: disk full")
    assert store.get_vm(vm.id).failed_state is VmState.PROLOG


def test_migration_closes_the_first_history_record_and_opens_a_second(store: Store) -> None:
    source, target = add_host(store, "src"), add_host(store, "dst")
    [vm] = store.create_vms([new_vm()])
    vm = run_on(store, vm, source)
    vm = applied(
        store,
        VmChange(vm.id, vm.version, VmState.MIGRATING, "migrate", target_host_id=target.id),
    )
    applied(
        store,
        VmChange(
            vm.id, vm.version, VmState.RUNNING, "migrated",
            host_id=target.id, target_host_id=None,
            close_history="migrated away", open_history=(target.id, "migrated here"),
        ),
    )  # fmt: skip
    first, second = store.history(vm.id)
    assert (first.seq, first.host_name, first.reason, first.end_reason) == (
        0,
        "src",
        "placed by the scheduler",
        "migrated away",
    )
    assert first.end is not None and first.end >= first.start
    assert (second.seq, second.host_id, second.host_name, second.end, second.end_reason) == (
        1,
        target.id,
        "dst",
        None,
        "",
    )
    assert second.start == first.end


def test_history_outlives_the_host(store: Store) -> None:
    host = add_host(store, "gone")
    [vm] = store.create_vms([new_vm()])
    vm = run_on(store, vm, host)
    vm = applied(store, VmChange(vm.id, vm.version, VmState.SHUTTING_DOWN, "terminate"))
    vm = applied(store, VmChange(vm.id, vm.version, VmState.EPILOG, "shut down"))
    applied(
        store,
        VmChange(vm.id, vm.version, VmState.DONE, "done", host_id=None, close_history="terminated"),
    )
    store.delete_host(host.id)
    [record] = store.history(vm.id)
    assert (record.host_name, record.end_reason) == ("gone", "terminated")


def test_an_empty_batch_does_nothing(store: Store) -> None:
    assert store.apply([]) == []
    assert store.events() == []
