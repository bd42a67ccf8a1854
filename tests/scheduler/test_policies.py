"""Placement policies and SCHED_RANK: which host wins among those that fit."""

from __future__ import annotations

import pytest

from stratus.model.errors import InvalidInput
from stratus.model.records import HostState
from stratus.scheduler import HostSnapshot, PendingVm, SchedulerConfig, plan
from tests.scheduler.factories import make_host, snapshot, vm


def _hosts_chosen(policy: str, *vms: PendingVm, hosts: HostSnapshot | None = None) -> list[int]:
    pool = hosts or snapshot(
        make_host(1, cpu=16, used_cpu=2, vms=2, labels={"PRIORITY": "1", "PRICE": "0.3"}),
        make_host(2, cpu=16, used_cpu=8, vms=5, labels={"PRIORITY": "9", "PRICE": "0.9"}),
        make_host(3, cpu=16, used_cpu=0, vms=0, labels={"PRICE": "0.1"}),
    )
    result = plan(vms, pool, SchedulerConfig(policy=policy))
    return [placement.host_id for placement in result.placements]


def test_packing_fills_the_host_with_most_vms() -> None:
    assert _hosts_chosen("packing", vm(1), vm(2)) == [2, 2]


def test_striping_spreads_to_the_host_with_fewest_vms() -> None:
    assert _hosts_chosen("striping", vm(1), vm(2), vm(3)) == [3, 3, 1]


def test_load_prefers_the_most_free_cpu() -> None:
    assert _hosts_chosen("load", vm(1, cpu=1), vm(2, cpu=2)) == [3, 3]
    # host 3 falls to 13 free CPU, below host 1's 14
    assert _hosts_chosen("load", vm(1, cpu=3), vm(2, cpu=1)) == [3, 1]


def test_fixed_prefers_the_highest_priority_label_and_hosts_without_it_come_last() -> None:
    assert _hosts_chosen("fixed", vm(1)) == [2]
    some = snapshot(make_host(1), make_host(2, labels={"PRIORITY": "0"}))
    assert _hosts_chosen("fixed", vm(1), hosts=some) == [2]
    unlabelled = snapshot(make_host(1), make_host(2))
    assert _hosts_chosen("fixed", vm(1), hosts=unlabelled) == [1]


def test_sched_rank_overrides_the_policy() -> None:
    assert _hosts_chosen("packing", vm(1, rank="-PRICE")) == [3]
    assert _hosts_chosen("packing", vm(1, rank="PRIORITY")) == [2]
    assert _hosts_chosen("striping", vm(1, rank="RUNNING_VMS * 2")) == [2]


def test_equal_ranks_go_to_the_lowest_host_id() -> None:
    same = snapshot(make_host(7), make_host(4), make_host(9))
    assert _hosts_chosen("packing", vm(1), hosts=same) == [4]
    assert _hosts_chosen("packing", vm(1, rank="UNKNOWN_ATTRIBUTE"), hosts=same) == [4]


def test_the_reason_names_the_policy_host_rank_and_candidates() -> None:
    pool = snapshot(
        make_host(1, vms=1),
        make_host(2, vms=3),
        make_host(3, state=HostState.ERROR),
    )
    result = plan([vm(1)], pool, SchedulerConfig())
    assert (
        result.placements[0].reason == "placed by packing policy on host-2 (rank 3) among 2/3 hosts"
    )
    ranked = plan([vm(2, rank=" FREE_CPU ")], pool, SchedulerConfig())
    assert (
        ranked.placements[0].reason
        == "placed by SCHED_RANK 'FREE_CPU' on host-1 (rank 8) among 2/3 hosts"
    )


def test_unknown_policy_fails_at_construction_naming_the_valid_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        SchedulerConfig(policy="random")
    assert "random" in str(caught.value)
    assert "fixed, load, packing, striping" in str(caught.value)


def test_negative_limits_are_refused() -> None:
    with pytest.raises(InvalidInput, match="max_dispatch"):
        SchedulerConfig(max_dispatch=-1)
    with pytest.raises(InvalidInput, match="max_per_host"):
        SchedulerConfig(max_per_host=-2)
