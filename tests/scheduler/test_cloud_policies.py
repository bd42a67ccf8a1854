"""Public clouds as hosts: local-first and cheapest policies, budgets, cool-downs, compliance."""

from __future__ import annotations

import pytest

from stratus.model.catalogue import Catalogue, Offering, shipped_catalogue
from stratus.model.errors import InvalidInput
from stratus.model.records import Host
from stratus.scheduler import PendingVm, Plan, SchedulerConfig, Unavailable, plan
from tests.scheduler.factories import make_host, snapshot, vm

SHIPPED = shipped_catalogue()


def _cloud(host_id: int, region: str = "eu-west-1", *, cpu: float = 64, **labels: str) -> Host:
    return make_host(
        host_id,
        cpu=cpu,
        memory=262144,
        labels={"PUBLIC_CLOUD": "YES", "PROVIDER": "ec2", "REGION": region, **labels},
    )


def _plan(
    vms: list[PendingVm],
    *hosts: Host,
    catalogue: Catalogue | None = SHIPPED,
    policy: str = "packing",
    budgets: dict[str, float] | None = None,
    spend: dict[str, float] | None = None,
    unavailable: list[Unavailable] | None = None,
    type_usage: dict[int, dict[str, int]] | None = None,
) -> Plan:
    config = SchedulerConfig(policy=policy, catalogue=catalogue, budgets=budgets or {})
    return plan(
        vms,
        snapshot(*hosts),
        config,
        spend=spend,
        unavailable=unavailable or (),
        type_usage=type_usage,
    )


def _where(result: Plan) -> list[tuple[int, int]]:
    return [(p.vm_id, p.host_id) for p in result.placements]


# -- local-first ---------------------------------------------------------------------------


def test_local_first_fills_local_hosts_then_bursts_to_the_cloud() -> None:
    # the cloud already runs VMs, so packing alone would pick it first
    busy_cloud = make_host(
        9,
        cpu=4,
        memory=8192,
        vms=5,
        labels={"PUBLIC_CLOUD": "YES", "PROVIDER": "ec2", "REGION": "eu-west-1"},
    )
    local = [make_host(1, cpu=2, memory=4096), make_host(2, cpu=1, memory=4096)]
    result = _plan([vm(i) for i in range(1, 7)], *local, busy_cloud, policy="local-first")
    assert _where(result) == [(1, 1), (2, 1), (3, 2), (4, 9), (5, 9), (6, 9)]
    assert [p.offering for p in result.placements] == [
        "",
        "",
        "",
        "t3.micro",
        "t3.micro",
        "t3.micro",
    ]
    assert result.placements[3].price_per_hour == pytest.approx(0.0114)
    assert result.placements[3].reason == (
        "placed by local-first policy on host-9 as t3.micro at 0.0114/h (rank 5) among 1/3 hosts"
    )
    assert result.pending == {}


def test_burst_three_local_and_three_on_an_ec2_host_with_a_quota_of_four() -> None:
    local = make_host(1, cpu=3, memory=3 * 1024)
    # quota m1.small=4: CPU and memory are the sum of the quota
    ec2 = make_host(
        2,
        cpu=4,
        memory=4 * 1740,
        labels={
            "PUBLIC_CLOUD": "YES",
            "PROVIDER": "ec2",
            "REGION": "eu-west-1",
            "INSTANCE_TYPES": "m1.small=4",
        },
    )
    result = _plan(
        [vm(i, cpu=1, memory=1024) for i in range(1, 7)], local, ec2, policy="local-first"
    )
    assert [p.host_id for p in result.placements] == [1, 1, 1, 2, 2, 2]
    assert {p.offering for p in result.placements if p.host_id == 2} == {"m1.small"}


def test_local_first_without_a_catalogue_still_prefers_local_hosts() -> None:
    cloud = make_host(2, vms=9, labels={"PUBLIC_CLOUD": "YES"})
    result = _plan([vm(1)], make_host(1), cloud, catalogue=None, policy="local-first")
    assert _where(result) == [(1, 1)]


# -- cheapest ------------------------------------------------------------------------------


def test_cheapest_picks_the_cheaper_region() -> None:
    result = _plan([vm(1)], _cloud(1, "eu-west-1"), _cloud(2, "us-east-1"), policy="cheapest")
    assert _where(result) == [(1, 2)]
    assert result.placements[0].offering == "t3.micro"
    assert result.placements[0].price_per_hour == pytest.approx(0.0104)


def test_cheapest_picks_the_cheaper_cloud_across_providers() -> None:
    other = Catalogue([Offering("gce", "europe-west1", "e2-micro", 2, 1024, 0.0084)])
    gce = make_host(2, labels={"PUBLIC_CLOUD": "YES", "PROVIDER": "gce", "REGION": "europe-west1"})
    result = _plan([vm(1)], _cloud(1), gce, catalogue=SHIPPED.updated(other), policy="cheapest")
    assert _where(result) == [(1, 2)]
    assert result.placements[0].offering == "e2-micro"


def test_cheapest_respects_a_local_hosts_price_label() -> None:
    dear_local = make_host(1, labels={"PRICE": "0.5"})
    cheap_local = make_host(3, labels={"PRICE": "0.001"})
    assert _where(_plan([vm(1)], dear_local, _cloud(2), policy="cheapest")) == [(1, 2)]
    result = _plan([vm(1)], dear_local, _cloud(2), cheap_local, policy="cheapest")
    assert _where(result) == [(1, 3)]
    assert result.placements[0].price_per_hour == pytest.approx(0.001)
    assert "on host-3 at 0.001/h" in result.placements[0].reason
    # a local host without a PRICE label costs nothing
    assert _where(_plan([vm(1)], _cloud(2), make_host(4), policy="cheapest")) == [(1, 4)]


def test_cheapest_chooses_the_smallest_fitting_type_and_honours_vcpu() -> None:
    result = _plan([vm(1, cpu=2, memory=4096)], _cloud(1, "us-east-1"), policy="cheapest")
    assert result.placements[0].offering == "t3.medium"
    result = _plan([vm(1, cpu=0.5, memory=4096, vcpu=4)], _cloud(1, "us-east-1"), policy="cheapest")
    assert result.placements[0].offering == "c5.xlarge"  # 4 vCPUs for 0.17/h


def test_cheapest_ties_keep_the_packing_order() -> None:
    hosts = [make_host(1, vms=1), make_host(2, vms=4), make_host(3, vms=2)]
    assert _where(_plan([vm(1)], *hosts, policy="cheapest")) == [(1, 2)]


def test_a_cloud_host_limited_to_its_quota_types_uses_only_those() -> None:
    host = _cloud(1, "us-east-1", INSTANCE_TYPES="m1.small=4, m1.large=1")
    result = _plan([vm(1, memory=1024), vm(2, memory=4096)], host, policy="cheapest")
    assert [p.offering for p in result.placements] == ["m1.small", "m1.large"]


def test_a_full_type_quota_sends_later_vms_to_the_next_type_within_one_plan() -> None:
    host = _cloud(1, "us-east-1", INSTANCE_TYPES="m1.small=2, m1.large=1")
    result = _plan([vm(i, memory=1024) for i in range(1, 5)], host, policy="cheapest")
    assert [p.offering for p in result.placements] == ["m1.small", "m1.small", "m1.large"]
    assert result.pending == {
        4: "0/1 hosts: 1 at the m1.small quota (2 of 2 in use)"
        " and at the m1.large quota (1 of 1 in use)"
    }


def test_instances_already_running_count_against_the_type_quota() -> None:
    host = _cloud(1, "us-east-1", INSTANCE_TYPES="m1.small=2, m1.large=1")
    usage = {1: {"m1.small": 2}}
    result = _plan([vm(1, memory=1024)], host, policy="cheapest", type_usage=usage)
    assert [p.offering for p in result.placements] == ["m1.large"]
    full = {1: {"m1.small": 2, "m1.large": 1}}
    result = _plan([vm(1, memory=1024)], host, policy="cheapest", type_usage=full)
    assert result.pending == {
        1: "0/1 hosts: 1 at the m1.small quota (2 of 2 in use)"
        " and at the m1.large quota (1 of 1 in use)"
    }


def test_spot_hosts_use_spot_offerings() -> None:
    result = _plan([vm(1, cpu=2, memory=8192)], _cloud(1, "us-east-1", SPOT="YES"))
    spot = SHIPPED.get("ec2", "us-east-1", "t3.large", spot=True)
    assert spot is not None
    assert result.placements[0].offering == "t3.large"
    assert result.placements[0].price_per_hour == spot.price_per_hour


def test_a_vm_too_big_for_every_instance_type_is_kept_off_the_cloud_with_a_reason() -> None:
    host = _cloud(1, INSTANCE_TYPES="m1.small")
    result = _plan([vm(1, cpu=2, memory=2048)], host, make_host(2, cpu=1))
    assert result.pending == {1: "0/2 hosts: 1 lack CPU, 1 have no instance type that fits"}


# -- compliance ----------------------------------------------------------------------------


def test_compliance_reason_names_the_rule_that_kept_the_vm_off_the_cloud() -> None:
    small = [make_host(i, memory=1024) for i in (1, 2)]
    clouds = [_cloud(i) for i in (3, 4, 5)]
    private = vm(1, memory=4096, requirements='PUBLIC_CLOUD != "YES"')
    result = _plan([private], *small, *clouds, policy="cheapest")
    assert result.pending == {
        1: "0/5 hosts: 2 lack memory, 3 fail SCHED_REQUIREMENTS 'PUBLIC_CLOUD != \"YES\"'"
    }
    spanish = vm(2, requirements='COUNTRY = "ES"')
    result = _plan([spanish], make_host(1, labels={"COUNTRY": "ES"}), _cloud(3, COUNTRY="IE"))
    assert _where(result) == [(2, 1)]


# -- budgets -------------------------------------------------------------------------------

_FLAT = Catalogue([Offering("ec2", "eu-west-1", "std", 1, 1024, 0.13)])


def test_a_budget_keeps_the_fourth_vm_pending_with_the_budget_reason() -> None:
    result = _plan([vm(i) for i in range(1, 5)], _cloud(1), catalogue=_FLAT, budgets={"ec2": 0.5})
    assert [p.vm_id for p in result.placements] == [1, 2, 3]
    assert result.pending == {
        4: "0/1 hosts: 1 over budget: ec2 would spend 0.52/h, over its 0.50/h limit"
    }


def test_current_spend_counts_against_the_budget() -> None:
    vms = [vm(i) for i in range(1, 4)]
    result = _plan(vms, _cloud(1), catalogue=_FLAT, budgets={"ec2": 0.5}, spend={"ec2": 0.25})
    assert [p.vm_id for p in result.placements] == [1]
    assert "ec2 would spend 0.51/h, over its 0.50/h limit" in result.pending[2]


def test_the_overall_budget_and_other_providers() -> None:
    both = _FLAT.updated(Catalogue([Offering("gce", "eu", "g", 1, 1024, 0.2)]))
    gce = make_host(2, labels={"PUBLIC_CLOUD": "YES", "PROVIDER": "gce", "REGION": "eu"})
    vms = [vm(i) for i in range(1, 5)]
    # ec2 takes two, then its budget sends the third VM to gce, the next best
    result = _plan(vms, _cloud(1), gce, catalogue=both, budgets={"ec2": 0.3}, policy="cheapest")
    assert _where(result) == [(1, 1), (2, 1), (3, 2), (4, 2)]
    capped = _plan(vms, _cloud(1), gce, catalogue=both, budgets={"*": 0.3}, policy="cheapest")
    assert _where(capped) == [(1, 1), (2, 1)]
    assert capped.pending[3] == (
        "0/2 hosts: 2 over budget: all clouds would spend 0.39/h, over the overall 0.30/h limit"
    )


def test_budgets_never_limit_local_hosts() -> None:
    local = make_host(1, cpu=2, labels={"PRICE": "1"})
    result = _plan([vm(1), vm(2), vm(3)], local, _cloud(2), catalogue=_FLAT, budgets={"*": 0.1})
    assert [p.host_id for p in result.placements] == [1, 1]
    assert result.pending[3] == (
        "0/2 hosts: 1 lack CPU, 1 over budget: all clouds would spend 0.13/h,"
        " over the overall 0.10/h limit"
    )


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(InvalidInput, match="budget 'ec2'"):
        SchedulerConfig(budgets={"ec2": -1})
    with pytest.raises(InvalidInput, match="budget"):
        SchedulerConfig(budgets={"ec2": float("nan")})


# -- cool-downs ----------------------------------------------------------------------------


def test_a_host_cooling_down_is_skipped_with_its_reason() -> None:
    down = [Unavailable(1, None, "InsufficientInstanceCapacity")]
    result = _plan([vm(1)], _cloud(1), _cloud(2, cpu=0.5), unavailable=down)
    assert result.pending == {
        1: "0/2 hosts: 1 lack CPU, 1 cooling down after InsufficientInstanceCapacity"
    }
    assert _where(_plan([vm(1)], _cloud(1), _cloud(2), unavailable=down)) == [(1, 2)]


def test_an_offering_cooling_down_sends_the_vm_to_the_next_offering() -> None:
    down = [Unavailable(1, "t3.micro", "InsufficientInstanceCapacity")]
    result = _plan([vm(1)], _cloud(1, "us-east-1"), policy="cheapest", unavailable=down)
    assert result.placements[0].offering == "t2.micro"  # the next cheapest that fits
    others = [Unavailable(1, name, "InstanceLimitExceeded") for name in ("t2.micro", "t3.micro")]
    host = _cloud(1, "us-east-1", INSTANCE_TYPES="t2.micro,t3.micro")
    result = _plan([vm(1)], host, unavailable=others)
    assert result.pending == {1: "0/1 hosts: 1 cooling down after InstanceLimitExceeded"}


def test_unknown_policy_lists_the_cost_policies_too() -> None:
    with pytest.raises(InvalidInput) as caught:
        SchedulerConfig(policy="greedy")
    assert "cheapest, local-first" in str(caught.value)
