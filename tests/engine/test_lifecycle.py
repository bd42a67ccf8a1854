"""The engine walks VMs through their life-cycle on dummy hosts (real SQLite store)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from stratus.model.errors import IllegalOperation, InvalidInput, Unsupported
from stratus.model.lifecycle import VmState
from stratus.model.records import HostState
from stratus.store import Store
from tests.engine.harness import FAST, Harness

S = VmState


pytestmark = pytest.mark.anyio


async def test_submitted_vm_is_placed_and_runs_with_a_history_record(h: Harness) -> None:
    await h.add_host("h1")
    vm = await h.submit()
    vm = await h.wait(vm.id, S.RUNNING)
    assert vm.host_name == "h1" and vm.deploy_id
    assert h.transitions(vm.id) == [
        ("", "PENDING"),
        ("PENDING", "PROLOG"),
        ("PROLOG", "BOOT"),
        ("BOOT", "RUNNING"),
    ]
    history = h.store.history(vm.id)
    assert [(r.host_name, r.end) for r in history] == [("h1", None)]
    assert [i.vm_id for i in h.world.instances(host="h1")] == [vm.id]


async def test_terminate_shuts_down_cleans_up_and_closes_history(h: Harness) -> None:
    await h.add_host("h1")
    vm = await h.wait((await h.submit()).id, S.RUNNING)
    await h.op(vm.id, "terminate")
    done = await h.wait(vm.id, S.DONE)
    assert done.host_id is None
    assert h.transitions(vm.id)[-3:] == [
        ("RUNNING", "SHUTTING_DOWN"),
        ("SHUTTING_DOWN", "EPILOG"),
        ("EPILOG", "DONE"),
    ]
    assert h.world.instances(host="h1") == []
    assert h.store.history(vm.id)[0].end is not None
    assert h.store.get_host("h1").usage.vms == 0


async def test_terminate_is_hard_after_the_timeout_when_the_guest_ignores_shutdown(
    h: Harness,
) -> None:
    await h.add_host("h1", ignore_shutdown="yes")
    vm = await h.wait((await h.submit()).id, S.RUNNING)
    await h.op(vm.id, "terminate")
    await h.wait(vm.id, S.DONE)
    reasons = [e.reason for e in h.store.events(object_type="vm", object_id=vm.id)]
    assert any("timed out" in r and "hard" in r for r in reasons), reasons
    assert h.world.instances(host="h1") == []


async def test_poweroff_then_resume_boots_a_new_instance(h: Harness) -> None:
    await h.add_host("h1")
    vm = await h.wait((await h.submit()).id, S.RUNNING)
    await h.op(vm.id, "poweroff", hard=True)
    off = await h.wait(vm.id, S.POWEROFF)
    assert off.host_name == "h1" and off.deploy_id is None
    assert h.store.get_host("h1").usage.vms == 1  # capacity is kept
    await h.op(vm.id, "resume")
    again = await h.wait(vm.id, S.RUNNING)
    assert again.deploy_id and again.deploy_id != vm.deploy_id


async def test_suspend_and_resume_keep_the_same_instance(h: Harness) -> None:
    await h.add_host("h1")
    vm = await h.wait((await h.submit()).id, S.RUNNING)
    await h.op(vm.id, "suspend")
    await h.wait(vm.id, S.SUSPENDED)
    assert h.world.get(vm.deploy_id or "").state == "paused"  # type: ignore[union-attr]
    await h.op(vm.id, "resume")
    resumed = await h.wait(vm.id, S.RUNNING)
    assert resumed.deploy_id == vm.deploy_id
    assert h.world.get(vm.deploy_id or "").state == "running"  # type: ignore[union-attr]


async def test_stop_frees_the_host_and_resume_restores_the_checkpoint(h: Harness) -> None:
    await h.add_host("h1")
    vm = await h.wait((await h.submit()).id, S.RUNNING)
    await h.op(vm.id, "stop")
    stopped = await h.wait(vm.id, S.STOPPED)
    assert stopped.host_id is None and stopped.checkpoint
    assert h.store.get_host("h1").usage.vms == 0
    await h.op(vm.id, "resume")
    back = await h.wait(vm.id, S.RUNNING)
    assert back.checkpoint is None
    reasons = [e.reason for e in h.store.events(object_type="vm", object_id=vm.id)]
    assert any(r.startswith("restored on h1") for r in reasons), reasons
    assert len(h.store.history(vm.id)) == 2


async def test_cold_and_live_migration_move_the_vm_and_record_history(h: Harness) -> None:
    await h.add_host("h1")
    await h.add_host("h2")
    vm = await h.wait((await h.submit()).id, S.RUNNING)
    first = vm.host_name
    other = "h2" if first == "h1" else "h1"
    await h.op(vm.id, "migrate", host=other, live=True)
    moved = await h.wait(vm.id, S.RUNNING)
    assert moved.host_name == other and moved.deploy_id == vm.deploy_id
    await h.op(vm.id, "migrate", host=first)
    back = await h.wait(vm.id, S.RUNNING)
    assert back.host_name == first and back.deploy_id != vm.deploy_id
    hosts = [(r.host_name, r.end is None) for r in h.store.history(vm.id)]
    assert hosts == [(first, False), (other, False), (first, True)]
    assert [i.host for i in h.world.instances(vm_id=vm.id)] == [first]


async def test_deploy_failure_fails_with_reason_and_recover_retry_runs_it(h: Harness) -> None:
    await h.add_host("h1")
    h.world.set_fault("h1", "fail_deploy")
    vm = await h.wait((await h.submit()).id, S.FAILED)
    assert vm.failed_state is S.BOOT
    assert "deploy failed on h1" in vm.reason and "simulated" in vm.reason
    h.world.clear_fault("h1")
    await h.op(vm.id, "recover", recover="retry")
    await h.wait(vm.id, S.RUNNING)
    assert len(h.world.instances(vm_id=vm.id)) == 1


async def test_a_hanging_operation_ends_at_its_deadline(h: Harness) -> None:
    await h.add_host("h1", hang_deploy="yes")
    vm = await h.wait((await h.submit()).id, S.FAILED, timeout=10)
    assert "did not finish within 1.5 s" in vm.reason


async def test_host_failure_puts_vms_in_unknown_and_they_come_back(h: Harness) -> None:
    await h.add_host("h1")
    vm = await h.wait((await h.submit()).id, S.RUNNING)
    h.world.set_fault("h1", "unreachable")
    host = await h.wait_host("h1", HostState.ERROR)
    assert "does not answer" in host.reason
    lost = await h.wait(vm.id, S.UNKNOWN)
    assert "h1 stopped answering" in lost.reason
    h.world.clear_fault("h1")
    await h.wait_host("h1", HostState.MONITORED)
    back = await h.wait(vm.id, S.RUNNING)
    assert "answers again" in back.reason and back.deploy_id == vm.deploy_id


async def test_monitor_sees_guest_poweroff_and_vanished_instances(h: Harness) -> None:
    await h.add_host("h1")
    a = await h.wait((await h.submit()).id, S.RUNNING)
    b = await h.wait((await h.submit()).id, S.RUNNING)
    h.world.set_state(a.deploy_id or "", "off")
    h.world.set_state(b.deploy_id or "", "destroyed")
    assert "from inside" in (await h.wait(a.id, S.POWEROFF)).reason
    assert "vanished" in (await h.wait(b.id, S.FAILED)).reason


async def test_pending_timeout_fails_a_vm_that_fits_nowhere(
    sqlite_store: Store, tmp_path: Path
) -> None:
    async with Harness(sqlite_store, tmp_path, replace(FAST, pending_timeout=0.5)) as h:
        await h.add_host("h1", memory=1024)
        vm = await h.submit("CPU = 1\nMEMORY = 4096\n")
        failed = await h.wait(vm.id, S.FAILED)
        assert failed.reason.startswith("no host fitted within 0.5 s: 0/1 hosts")
        assert "lack memory" in failed.reason


async def test_hold_release_and_deploy_to_a_named_host(h: Harness) -> None:
    await h.add_host("h1")
    await h.add_host("h2")
    held = await h.submit(hold=True)
    await asyncio.sleep(0.2)
    assert h.store.get_vm(held.id).state is S.HOLD
    await h.op(held.id, "deploy", host="h2")
    assert (await h.wait(held.id, S.RUNNING)).host_name == "h2"
    other = await h.submit(hold=True)
    await h.op(other.id, "release")
    await h.wait(other.id, S.RUNNING)


async def test_illegal_operation_names_the_state_and_the_allowed_ones(h: Harness) -> None:
    vm = await h.submit()
    with pytest.raises(IllegalOperation) as err:
        await h.op(vm.id, "suspend")
    assert err.value.state == "PENDING"
    assert err.value.allowed == ["hold", "deploy", "terminate"]
    with pytest.raises(InvalidInput, match="needs a target host"):
        await h.op(vm.id, "deploy")


async def test_an_operation_the_driver_cannot_do_is_refused_before_it_is_tried(
    sqlite_store: Store, tmp_path: Path
) -> None:
    from stratus.drivers.dummy import DummyDriver

    class NoSuspend(DummyDriver):
        unsupported = {"suspend": "this simulated hypervisor has no memory snapshots"}

    h = Harness(sqlite_store, tmp_path)
    h.engine.drivers.add(NoSuspend(tmp_path))
    async with h:
        await h.add_host("h1")
        vm = await h.wait((await h.submit()).id, S.RUNNING)
        with pytest.raises(Unsupported, match="no memory snapshots"):
            await h.op(vm.id, "suspend")
        assert h.store.get_vm(vm.id).state is S.RUNNING
