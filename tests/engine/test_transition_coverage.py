"""Every edge of the life-cycle table is walked by the real engine, on SQLite and PostgreSQL.

The flows below drive VMs through each legal transition (with the dummy driver's failure
switches where an edge needs a failure); the events the store recorded must then cover
the whole table, so an edge that the engine cannot reach fails this test.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from stratus.model.lifecycle import TRANSITIONS, VmState
from stratus.model.records import HostState
from stratus.store import Store
from tests.engine.harness import FAST, Harness

S = VmState


async def _flows(h: Harness) -> None:
    w = h.world
    await h.add_host("a")
    await h.add_host("b")

    async def running() -> int:
        vm = await h.submit()
        return (await h.wait(vm.id, S.RUNNING)).id

    # PENDING -> HOLD -> PENDING -> ... ; HOLD -> PROLOG ; HOLD/PENDING -> DONE
    v = (await h.submit(hold=True)).id
    await h.op(v, "release")
    await h.wait(v, S.RUNNING)
    v = (await h.submit(hold=True)).id
    await h.op(v, "terminate")
    await h.wait(v, S.DONE)
    v = (await h.submit(hold=True)).id
    await h.op(v, "deploy", host="b")
    await h.wait(v, S.RUNNING)
    w.set_fault("a", "unreachable")  # keep the next VM pending for a moment
    w.set_fault("b", "unreachable")
    await h.wait_host("a", HostState.ERROR)
    await h.wait_host("b", HostState.ERROR)
    v = (await h.submit()).id
    await h.op(v, "hold")
    await h.op(v, "release")
    await h.op(v, "terminate")
    await h.wait(v, S.DONE)
    # PENDING -> FAILED (pending timeout) -> PENDING (recover --retry)
    v = (await h.submit("CPU = 1\nMEMORY = 999999\n")).id
    await h.wait(v, S.FAILED)
    await h.op(v, "recover", recover="retry")
    await h.wait(v, S.PENDING)
    await h.op(v, "terminate")
    w.clear_fault("a")
    w.clear_fault("b")
    await h.wait_host("a", HostState.MONITORED)
    await h.wait_host("b", HostState.MONITORED)

    # PROLOG -> FAILED -> PROLOG (retry);  BOOT -> FAILED -> BOOT (retry)
    w.set_fault("a", "fail_prolog")
    w.set_fault("b", "fail_prolog")
    v = (await h.submit()).id
    assert (await h.wait(v, S.FAILED)).failed_state is S.PROLOG
    w.clear_fault("a", "fail_prolog")
    w.clear_fault("b", "fail_prolog")
    await h.op(v, "recover", recover="retry")
    await h.wait(v, S.RUNNING)
    w.set_fault("a", "fail_deploy")
    w.set_fault("b", "fail_deploy")
    v = (await h.submit()).id
    assert (await h.wait(v, S.FAILED)).failed_state is S.BOOT
    await h.op(v, "recover", recover="success")  # FAILED -> RUNNING
    await h.wait(v, S.RUNNING)
    v2 = (await h.submit()).id
    await h.wait(v2, S.FAILED)
    w.clear_fault("a", "fail_deploy")
    w.clear_fault("b", "fail_deploy")
    await h.op(v2, "recover", recover="retry")
    await h.wait(v2, S.RUNNING)

    # BOOT -> PENDING: a cloud refused the deploy for capacity; failover places it again
    w.set_fault("a", "refuse_deploy", "InsufficientInstanceCapacity")
    w.set_fault("b", "refuse_deploy", "InsufficientInstanceCapacity")
    v = (await h.submit()).id
    await h.wait_for(lambda: ("BOOT", "PENDING") in h.transitions(v), "a failover")
    w.clear_fault("a", "refuse_deploy")
    w.clear_fault("b", "refuse_deploy")
    await h.wait(v, S.RUNNING)

    # PROLOG -> EPILOG and BOOT -> EPILOG: recover --delete/--recreate of a stuck step
    w.set_fault("a", "latency_prolog", "5")
    w.set_fault("b", "latency_prolog", "5")
    v = (await h.submit()).id
    await h.wait(v, S.PROLOG)
    await h.op(v, "recover", recover="delete")
    await h.wait(v, S.DONE)
    w.clear_fault("a", "latency_prolog")
    w.clear_fault("b", "latency_prolog")
    w.set_fault("a", "latency_deploy", "5")
    w.set_fault("b", "latency_deploy", "5")
    v = (await h.submit()).id
    await h.wait(v, S.BOOT)
    await h.op(v, "recover", recover="recreate")  # BOOT -> EPILOG -> PENDING -> ...
    w.clear_fault("a", "latency_deploy")
    w.clear_fault("b", "latency_deploy")
    await h.wait(v, S.RUNNING)
    assert ("EPILOG", "PENDING") in h.transitions(v)

    # RUNNING -> RUNNING (reboot), -> SAVING -> SUSPENDED -> BOOT -> RUNNING
    v = await running()
    await h.op(v, "reboot")
    await h.wait(v, S.RUNNING)
    await h.op(v, "suspend")
    await h.wait(v, S.SUSPENDED)
    await h.op(v, "resume")
    await h.wait(v, S.RUNNING)
    # SUSPENDED -> EPILOG (stop) -> STOPPED -> PENDING (resume)
    await h.op(v, "suspend")
    await h.wait(v, S.SUSPENDED)
    await h.op(v, "stop")
    await h.wait(v, S.STOPPED)
    await h.op(v, "resume")
    await h.wait(v, S.RUNNING)
    # SAVING -> EPILOG -> STOPPED -> PROLOG (deploy) ; STOPPED -> EPILOG (terminate)
    await h.op(v, "stop")
    await h.wait(v, S.STOPPED)
    await h.op(v, "deploy", host="a")
    await h.wait(v, S.RUNNING)
    await h.op(v, "stop")
    await h.wait(v, S.STOPPED)
    await h.op(v, "terminate")
    await h.wait(v, S.DONE)
    # SUSPENDED -> EPILOG (terminate)
    v = await running()
    await h.op(v, "suspend")
    await h.wait(v, S.SUSPENDED)
    await h.op(v, "terminate")
    await h.wait(v, S.DONE)

    # SHUTTING_DOWN -> POWEROFF -> BOOT ; POWEROFF -> EPILOG (undeploy) -> UNDEPLOYED
    v = await running()
    await h.op(v, "poweroff")
    await h.wait(v, S.POWEROFF)
    await h.op(v, "resume")
    await h.wait(v, S.RUNNING)
    await h.op(v, "poweroff")
    await h.wait(v, S.POWEROFF)
    await h.op(v, "undeploy")
    await h.wait(v, S.UNDEPLOYED)
    await h.op(v, "resume")  # UNDEPLOYED -> PENDING
    await h.wait(v, S.RUNNING)
    await h.op(v, "undeploy", hard=True)  # SHUTTING_DOWN -> EPILOG -> UNDEPLOYED
    await h.wait(v, S.UNDEPLOYED)
    await h.op(v, "deploy", host="b")  # UNDEPLOYED -> PROLOG
    await h.wait(v, S.RUNNING)
    await h.op(v, "undeploy")
    await h.wait(v, S.UNDEPLOYED)
    await h.op(v, "terminate")  # UNDEPLOYED -> EPILOG
    await h.wait(v, S.DONE)
    v = await running()
    await h.op(v, "poweroff")
    await h.wait(v, S.POWEROFF)
    await h.op(v, "terminate")  # POWEROFF -> EPILOG
    await h.wait(v, S.DONE)

    # SAVING -> FAILED -> SAVING (retry) ; FAILED -> SUSPENDED (success)
    v = await running()
    host = h.store.get_vm(v).host_name or ""
    w.set_fault(host, "fail_suspend")
    await h.op(v, "suspend")
    assert (await h.wait(v, S.FAILED)).failed_state is S.SAVING
    await h.op(v, "recover", recover="success")
    await h.wait(v, S.SUSPENDED)
    await h.op(v, "resume")
    await h.wait(v, S.RUNNING)
    await h.op(v, "suspend")
    await h.wait(v, S.FAILED)
    w.clear_fault(host, "fail_suspend")
    await h.op(v, "recover", recover="retry")
    await h.wait(v, S.SUSPENDED)
    await h.op(v, "terminate")
    await h.wait(v, S.DONE)

    # SHUTTING_DOWN -> FAILED -> SHUTTING_DOWN (retry); FAILED -> POWEROFF (success)
    v = await running()
    host = h.store.get_vm(v).host_name or ""
    w.set_fault(host, "fail_destroy")
    await h.op(v, "poweroff", hard=True)
    assert (await h.wait(v, S.FAILED)).failed_state is S.SHUTTING_DOWN
    await h.op(v, "recover", recover="success")
    await h.wait(v, S.POWEROFF)
    await h.op(v, "resume")
    await h.wait(v, S.RUNNING)
    await h.op(v, "terminate", hard=True)
    await h.wait(v, S.FAILED)
    w.clear_fault(host, "fail_destroy")
    await h.op(v, "recover", recover="retry")
    await h.wait(v, S.DONE)

    # EPILOG -> FAILED -> EPILOG (retry); FAILED -> STOPPED/UNDEPLOYED/DONE (success)
    for operation, success in (
        ("stop", S.STOPPED),
        ("undeploy", S.UNDEPLOYED),
        ("terminate", S.DONE),
    ):
        v = await running()
        host = h.store.get_vm(v).host_name or ""
        w.set_fault(host, "fail_cleanup")
        await h.op(v, operation)
        assert (await h.wait(v, S.FAILED)).failed_state is S.EPILOG
        await h.op(v, "recover", recover="success")
        await h.wait(v, success)
        w.clear_fault(host, "fail_cleanup")
    v = await running()
    host = h.store.get_vm(v).host_name or ""
    w.set_fault(host, "fail_cleanup")
    await h.op(v, "terminate")
    await h.wait(v, S.FAILED)
    w.clear_fault(host, "fail_cleanup")
    await h.op(v, "recover", recover="retry")
    await h.wait(v, S.DONE)
    # FAILED -> EPILOG (terminate)
    w.set_fault("a", "fail_deploy")
    w.set_fault("b", "fail_deploy")
    v = (await h.submit()).id
    await h.wait(v, S.FAILED)
    w.clear_fault("a", "fail_deploy")
    w.clear_fault("b", "fail_deploy")
    await h.op(v, "terminate")
    await h.wait(v, S.DONE)

    # MIGRATING -> RUNNING (live and cold); -> FAILED (cold restore fails) -> MIGRATING (retry)
    v = await running()
    src = h.store.get_vm(v).host_name or ""
    dst = "b" if src == "a" else "a"
    await h.op(v, "migrate", host=dst, live=True)
    await h.wait(v, S.RUNNING)
    w.set_fault(src, "fail_deploy")
    await h.op(v, "migrate", host=src)
    assert (await h.wait(v, S.FAILED)).failed_state is S.MIGRATING
    w.clear_fault(src, "fail_deploy")
    await h.op(v, "recover", recover="retry")
    assert (await h.wait(v, S.RUNNING)).host_name == src
    # MIGRATING -> EPILOG: recover --delete of a stuck migration
    w.set_fault(src, "latency_live_migrate", "5")
    await h.op(v, "migrate", host=dst, live=True)
    await h.wait(v, S.MIGRATING)
    await h.op(v, "recover", recover="delete")
    await h.wait(v, S.DONE)
    w.clear_fault(src, "latency_live_migrate")

    # RUNNING -> UNKNOWN -> RUNNING / POWEROFF / FAILED / SHUTTING_DOWN / EPILOG
    vms = [await running() for _ in range(6)]
    for host in ("a", "b"):
        w.set_fault(host, "unreachable")
    for vm_id in vms:
        await h.wait(vm_id, S.UNKNOWN)
    await h.op(vms[0], "terminate", hard=True)  # UNKNOWN -> SHUTTING_DOWN (fails: host down)
    await h.op(vms[1], "recover", recover="delete")  # UNKNOWN -> EPILOG -> DONE (best effort)
    await h.op(vms[2], "recover", recover="failure")  # UNKNOWN -> FAILED
    await h.wait(vms[0], S.FAILED)
    await h.wait(vms[1], S.DONE)
    w.set_state(h.store.get_vm(vms[3]).deploy_id or "", "off")
    w.set_state(h.store.get_vm(vms[4]).deploy_id or "", "destroyed")
    for host in ("a", "b"):
        w.clear_fault(host, "unreachable")
    await h.wait(vms[3], S.POWEROFF)
    await h.wait(vms[4], S.FAILED)
    await h.wait(vms[5], S.RUNNING)

    # RUNNING -> SHUTTING_DOWN -> EPILOG -> DONE, RUNNING -> POWEROFF (guest), -> FAILED (vanish)
    v = await running()
    await h.op(v, "terminate")
    await h.wait(v, S.DONE)
    v = await running()
    w.set_state(h.store.get_vm(v).deploy_id or "", "off")
    await h.wait(v, S.POWEROFF)
    v = await running()
    w.set_state(h.store.get_vm(v).deploy_id or "", "destroyed")
    await h.wait(v, S.FAILED)
    # resched: RUNNING -> MIGRATING via the scheduler
    v = await running()
    await h.op(v, "resched")
    await asyncio.sleep(0.3)
    await h.wait(v, S.RUNNING)


@pytest.mark.anyio
async def test_the_engine_walks_every_edge_of_the_transition_table(
    store: Store, tmp_path: Path
) -> None:
    config = replace(FAST, pending_timeout=0.6, failover_cooldown=0.1)
    async with Harness(store, tmp_path, config) as h:
        await _flows(h)
    walked = {(e.from_state, e.to_state) for e in store.events(object_type="vm", limit=100_000)}
    table = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    missing = sorted(table - walked)
    assert not missing, f"edges never walked: {missing}"
    unknown = sorted(walked - table - {("", "PENDING"), ("", "HOLD")})
    assert not unknown, f"transitions outside the table: {unknown}"
