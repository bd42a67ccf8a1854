"""Placement on clouds through the engine: the chosen instance type reaches the driver,
refusals of one type send the VM to the next type, budgets count what runs, per-type
quotas count what runs, and compliance rules keep VMs off clouds — each with its reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from stratus.model.catalogue import shipped_catalogue
from stratus.model.errors import InvalidInput
from stratus.model.lifecycle import VmState as S
from stratus.scheduler import SchedulerConfig
from stratus.store import Store
from tests.engine.harness import FAST, Harness

EC2_US = {"PUBLIC_CLOUD": "YES", "PROVIDER": "ec2", "REGION": "us-east-1"}
TINY = 'NAME = "tiny"\nCPU = 1\nMEMORY = 512\n'


def _harness(store: Store, tmp_path: Path, **scheduler: object) -> Harness:
    config = SchedulerConfig(catalogue=shipped_catalogue(), **scheduler)  # type: ignore[arg-type]
    return Harness(store, tmp_path, replace(FAST, scheduler=config))


@pytest.fixture
async def cheapest(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(sqlite_store, tmp_path, policy="cheapest") as h:
        yield h


def _placements(h: Harness, vm_id: int) -> list[str]:
    events = h.store.events(object_type="vm", object_id=vm_id, limit=100)
    return [e.reason for e in events if (e.from_state, e.to_state) == ("PENDING", "PROLOG")]


@pytest.mark.anyio
async def test_the_cheapest_fitting_type_is_what_runs_and_what_the_vm_shows(
    cheapest: Harness,
) -> None:
    await cheapest.add_host("aws-us", labels=EC2_US)
    vm = await cheapest.wait((await cheapest.submit(TINY)).id, S.RUNNING)
    assert vm.info["offering"] == "t3.micro"
    assert vm.info["price_per_hour"] == pytest.approx(0.0104)
    instance = cheapest.world.get(vm.deploy_id or "")
    assert instance is not None and instance.host == "aws-us"
    assert _placements(cheapest, vm.id) == [
        "placed by cheapest policy on aws-us as t3.micro at 0.0104/h (rank 0) among 1/1 hosts"
    ]


@pytest.mark.anyio
async def test_an_injected_capacity_error_sends_the_vm_to_the_next_offering(
    cheapest: Harness,
) -> None:
    await cheapest.add_host("aws-us", labels=EC2_US, refuse_types="t3.micro")
    vm = await cheapest.submit(TINY)
    running = await cheapest.wait(vm.id, S.RUNNING)
    assert running.info["offering"] == "t2.micro"  # the next cheapest type that fits
    events = cheapest.store.events(object_type="vm", object_id=vm.id, limit=100)
    refused = [e.reason for e in events if (e.from_state, e.to_state) == ("BOOT", "PENDING")]
    assert refused == ["aws-us refused the deploy (InsufficientInstanceCapacity): re-queued"]
    placed = _placements(cheapest, vm.id)
    assert [reason.split(" at ")[0] for reason in placed] == [
        "placed by cheapest policy on aws-us as t3.micro",
        "placed by cheapest policy on aws-us as t2.micro",
    ]
    # only t3.micro cools down: the host still takes the next VM, as t2.micro at once
    second = await cheapest.wait((await cheapest.submit(TINY)).id, S.RUNNING)
    assert second.info["offering"] == "t2.micro"
    assert ("BOOT", "PENDING") not in cheapest.transitions(second.id)


@pytest.mark.anyio
async def test_a_budget_counts_what_already_runs_and_frees_with_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # t3.micro costs 0.0104/h in us-east-1: the budget pays for two
    async with _harness(sqlite_store, tmp_path, policy="cheapest", budgets={"ec2": 0.025}) as h:
        await h.add_host("aws-us", labels=EC2_US)
        first = await h.wait((await h.submit(TINY)).id, S.RUNNING)
        await h.wait((await h.submit(TINY)).id, S.RUNNING)
        third = await h.submit(TINY)
        await h.wait_for(
            lambda: "limit" in h.store.get_vm(third.id).reason, "the budget reason", timeout=5
        )
        kept = h.store.get_vm(third.id)
        assert kept.state is S.PENDING
        assert kept.reason == (
            "0/1 hosts: 1 over budget: ec2 would spend 0.0312/h, over its 0.025/h limit"
        )
        await h.op(first.id, "terminate")
        await h.wait(first.id, S.DONE)
        assert (await h.wait(third.id, S.RUNNING)).host_name == "aws-us"


@pytest.mark.anyio
async def test_a_per_type_quota_counts_running_instances_across_cycles(
    cheapest: Harness,
) -> None:
    await cheapest.add_host("aws-us", labels={**EC2_US, "INSTANCE_TYPES": "t3.micro=1,t2.micro=1"})
    first = await cheapest.wait((await cheapest.submit(TINY)).id, S.RUNNING)
    second = await cheapest.wait((await cheapest.submit(TINY)).id, S.RUNNING)
    assert [first.info["offering"], second.info["offering"]] == ["t3.micro", "t2.micro"]
    third = await cheapest.submit(TINY)
    await cheapest.wait_for(
        lambda: "quota" in cheapest.store.get_vm(third.id).reason, "the quota reason", timeout=5
    )
    assert cheapest.store.get_vm(third.id).reason == (
        "0/1 hosts: 1 at the t3.micro quota (1 of 1 in use)"
        " and at the t2.micro quota (1 of 1 in use)"
    )


@pytest.mark.anyio
async def test_a_vm_kept_off_public_clouds_waits_for_a_local_host_with_the_rule_named(
    sqlite_store: Store, tmp_path: Path
) -> None:
    async with _harness(sqlite_store, tmp_path, policy="local-first") as h:
        await h.add_host("local", cpu=1, memory=1024)
        await h.add_host("aws-us", labels=EC2_US)
        fill = await h.wait((await h.submit(TINY)).id, S.RUNNING)
        assert fill.host_name == "local"
        private = TINY + "SCHED_REQUIREMENTS = 'PUBLIC_CLOUD != \"YES\"'\n"
        kept = await h.submit(private)
        burst = await h.wait((await h.submit(TINY)).id, S.RUNNING)
        assert burst.host_name == "aws-us"  # an unrestricted VM bursts meanwhile
        pending = h.store.get_vm(kept.id)
        assert pending.state is S.PENDING
        assert pending.reason == (
            "0/2 hosts: 1 lack CPU, 1 fail SCHED_REQUIREMENTS 'PUBLIC_CLOUD != \"YES\"'"
        )
        await h.op(fill.id, "terminate")
        assert (await h.wait(kept.id, S.RUNNING)).host_name == "local"


@pytest.mark.anyio
async def test_a_country_rule_keeps_the_vm_in_its_country(
    sqlite_store: Store, tmp_path: Path
) -> None:
    async with _harness(sqlite_store, tmp_path, policy="cheapest") as h:
        await h.add_host("aws-us", labels={**EC2_US, "COUNTRY": "US"})
        eu = {"PUBLIC_CLOUD": "YES", "PROVIDER": "ec2", "REGION": "eu-west-1", "COUNTRY": "IE"}
        await h.add_host("aws-eu", labels=eu)
        cheap = await h.wait((await h.submit(TINY)).id, S.RUNNING)
        assert cheap.host_name == "aws-us"  # us-east-1 is cheaper
        in_eu = TINY + "SCHED_REQUIREMENTS = 'COUNTRY = \"IE\"'\n"
        vm = await h.wait((await h.submit(in_eu)).id, S.RUNNING)
        assert vm.host_name == "aws-eu"
        assert vm.info["offering"] == "t3.micro"


@pytest.mark.anyio
async def test_a_metadata_section_with_bad_user_data_is_refused_at_submit(
    cheapest: Harness,
) -> None:
    with pytest.raises(InvalidInput, match="USER_DATA is not base64"):
        await cheapest.submit(TINY + 'METADATA = [ USER_DATA = "not base64!" ]\n')
    assert cheapest.store.count_vms() == 0


@pytest.mark.anyio
async def test_a_cloud_capacity_beyond_any_account_is_refused_with_what_to_do(
    cheapest: Harness,
) -> None:
    options = {"region": "us-east-1", "capacity": f"m1.large={10**9}"}
    with pytest.raises(InvalidInput, match="capacity must be") as refused:
        await cheapest.engine.add_host(
            "huge", "ec2", cpu=None, memory=None, labels={}, options=options
        )
    assert refused.value.hint is not None and "--capacity" in refused.value.hint
    assert cheapest.store.all_hosts() == []
