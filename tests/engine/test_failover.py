"""Failover: a deploy a cloud refuses for capacity or quota goes to the next-best host,
the refusing host cools down, and retries end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stratus.model.lifecycle import VmState as S
from stratus.store import Store
from tests.engine.harness import FAST, Harness

RANKED = 'NAME = "burst"\nCPU = 1\nMEMORY = 512\nSCHED_RANK = "PRIORITY"\n'
CLOUD = {"PUBLIC_CLOUD": "YES"}


@pytest.mark.anyio
async def test_insufficient_capacity_sends_the_vm_to_the_next_host_with_the_reason(
    h: Harness,
) -> None:
    await h.add_host("cloud-a", labels={**CLOUD, "PRIORITY": "10"})
    await h.add_host("cloud-b", labels={**CLOUD, "PRIORITY": "1"})
    h.world.set_fault("cloud-a", "refuse_deploy", "InsufficientInstanceCapacity")
    vm = await h.submit(RANKED)
    placed = await h.wait(vm.id, S.RUNNING)
    assert placed.host_name == "cloud-b"
    events = h.store.events(object_type="vm", object_id=vm.id, limit=100)
    refused = [e.reason for e in events if (e.from_state, e.to_state) == ("BOOT", "PENDING")]
    assert refused == ["cloud-a refused the deploy (InsufficientInstanceCapacity): re-queued"]
    history = h.store.history(vm.id)
    assert [record.host_name for record in history] == ["cloud-a", "cloud-b"]
    # while cloud-a cools down, the next VM goes straight to cloud-b
    second = await h.submit(RANKED)
    assert (await h.wait(second.id, S.RUNNING)).host_name == "cloud-b"
    assert ("BOOT", "PENDING") not in h.transitions(second.id)


@pytest.mark.anyio
async def test_a_vm_every_host_refuses_fails_after_a_bounded_number_of_failovers(
    sqlite_store: Store, tmp_path: Path
) -> None:
    async with Harness(sqlite_store, tmp_path, replace(FAST, failover_cooldown=0.05)) as h:
        await h.add_host("cloud-a", labels=CLOUD)
        h.world.set_fault("cloud-a", "refuse_deploy", "InstanceLimitExceeded")
        vm = await h.submit(RANKED)
        failed = await h.wait(vm.id, S.FAILED, timeout=20)
        assert failed.failed_state is S.BOOT
        assert "InstanceLimitExceeded" in failed.reason
        assert h.transitions(vm.id).count(("BOOT", "PENDING")) == 5


@pytest.mark.anyio
async def test_an_ordinary_deploy_error_fails_the_vm_without_failover(h: Harness) -> None:
    await h.add_host("cloud-a", labels=CLOUD)
    await h.add_host("cloud-b", labels=CLOUD)
    h.world.set_fault("cloud-a", "refuse_deploy", "InvalidAMIID.NotFound")
    h.world.set_fault("cloud-b", "refuse_deploy", "InvalidAMIID.NotFound")
    vm = await h.submit(RANKED)
    failed = await h.wait(vm.id, S.FAILED)
    assert "InvalidAMIID.NotFound" in failed.reason
    assert ("BOOT", "PENDING") not in h.transitions(vm.id)
