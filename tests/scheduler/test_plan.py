"""plan(): order, capacity, filters, limits and the reasons VMs stay pending."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stratus.model.expr import parse_expression
from stratus.model.expr_compile import TextArray, compile_rank, compile_requirement
from stratus.model.records import Host, HostState
from stratus.scheduler import POLICIES, HostSnapshot, PendingVm, SchedulerConfig, plan
from tests.scheduler.factories import make_host, snapshot, vm


def test_higher_user_priority_goes_first_and_ties_are_fifo() -> None:
    pool = snapshot(make_host(1, cpu=2))
    vms = [vm(5, user_priority=0), vm(3, user_priority=1), vm(4, user_priority=1), vm(1)]
    result = plan(vms, pool, SchedulerConfig())
    assert [p.vm_id for p in result.placements] == [3, 4]
    assert sorted(result.pending) == [1, 5]


def test_capacity_is_consumed_across_placements_in_one_plan() -> None:
    pool = snapshot(make_host(1, cpu=4, memory=4096), make_host(2, cpu=1, memory=1024))
    result = plan([vm(i, cpu=2, memory=1024) for i in range(1, 4)], pool, SchedulerConfig())
    assert [(p.vm_id, p.host_id) for p in result.placements] == [(1, 1), (2, 1)]
    assert result.pending == {3: "0/2 hosts: 2 lack CPU"}
    assert pool.free_cpu.tolist() == [0.0, 1.0]
    assert pool.free_mem.tolist() == [2048.0, 1024.0]
    assert pool.running_vms.tolist() == [2.0, 0.0]


def test_vm_that_fits_nowhere_counts_what_removed_each_host() -> None:
    small = [make_host(i, memory=2048, labels={"COUNTRY": "ES"}) for i in range(1, 9)]
    foreign = [make_host(i, memory=65536, labels={"COUNTRY": "FR"}) for i in range(9, 13)]
    big = vm(1, memory=8192, requirements='COUNTRY = "ES"')
    result = plan([big], snapshot(*small, *foreign), SchedulerConfig())
    assert result.placements == []
    assert result.pending == {
        1: "0/12 hosts: 8 lack memory, 4 fail SCHED_REQUIREMENTS 'COUNTRY = \"ES\"'"
    }


def test_reason_counts_every_filter_in_order() -> None:
    pool = snapshot(
        make_host(1, state=HostState.ERROR),
        make_host(2, state=HostState.DISABLED),
        make_host(3, state=HostState.ERROR),
        make_host(4, cpu=1),
        make_host(5, memory=512),
        make_host(6, labels={"COUNTRY": "FR"}),
        make_host(7, labels={"COUNTRY": "ES"}),
    )
    picky = vm(1, cpu=2, memory=1024, requirements='COUNTRY = "ES"', exclude_hosts=frozenset({7}))
    result = plan([picky], pool, SchedulerConfig())
    assert result.pending[1] == (
        "0/7 hosts: 3 not monitored (1 DISABLED, 2 ERROR), 1 lack CPU, 1 lack memory,"
        " 1 fail SCHED_REQUIREMENTS 'COUNTRY = \"ES\"', 1 excluded"
    )


def test_max_dispatch_bounds_placements_per_call() -> None:
    pool = snapshot(make_host(1), make_host(2))
    result = plan([vm(i) for i in range(1, 6)], pool, SchedulerConfig(max_dispatch=2))
    assert [p.vm_id for p in result.placements] == [1, 2]
    assert sorted(result.pending) == [3, 4, 5]
    assert "max_dispatch (2 placements)" in result.pending[3]


def test_max_per_host_spreads_then_keeps_the_rest_pending() -> None:
    pool = snapshot(make_host(1, vms=4), make_host(2))
    result = plan([vm(i) for i in range(1, 4)], pool, SchedulerConfig(max_per_host=1))
    assert [(p.vm_id, p.host_id) for p in result.placements] == [(1, 1), (2, 2)]
    assert result.pending == {3: "0/2 hosts: 2 reached the dispatch limit of 1 per host"}


def test_excluded_host_is_avoided_even_when_it_ranks_best() -> None:
    pool = snapshot(make_host(1, vms=9), make_host(2))
    result = plan([vm(1, exclude_hosts=frozenset({1}))], pool, SchedulerConfig())
    assert result.placements[0].host_id == 2


@pytest.mark.parametrize("state", [s for s in HostState if s is not HostState.MONITORED])
def test_hosts_not_monitored_are_never_chosen(state: HostState) -> None:
    pool = snapshot(make_host(1, vms=50, state=state, labels={"PRIORITY": "99"}), make_host(2))
    for policy in POLICIES:
        result = plan([vm(1)], pool, SchedulerConfig(policy=policy))
        assert [p.host_id for p in result.placements] == [2]
    alone = plan([vm(2)], snapshot(make_host(1, state=state)), SchedulerConfig())
    assert alone.pending == {2: f"0/1 hosts: 1 not monitored (1 {state.value})"}


def test_bad_requirement_or_rank_keeps_only_that_vm_pending_with_the_error() -> None:
    pool = snapshot(make_host(1))
    vms = [vm(1, requirements='COUNTRY = "ES'), vm(2, rank="FREE_CPU *"), vm(3)]
    result = plan(vms, pool, SchedulerConfig())
    assert [p.vm_id for p in result.placements] == [3]
    assert result.pending[1].startswith("SCHED_REQUIREMENTS: unterminated string")
    assert "at position 11 of" in result.pending[1]
    assert result.pending[2].startswith("SCHED_RANK: expected an attribute, number or string")


def test_live_requirement_sees_the_capacity_earlier_placements_took() -> None:
    pool = snapshot(make_host(1, memory=8192))
    vms = [vm(i, memory=2048, requirements="FREE_MEM > 4096") for i in range(1, 4)]
    result = plan(vms, pool, SchedulerConfig())
    assert [p.vm_id for p in result.placements] == [1, 2]
    assert result.pending == {3: "0/1 hosts: 1 fail SCHED_REQUIREMENTS 'FREE_MEM > 4096'"}


def test_requirement_that_becomes_true_is_retried_for_later_vms() -> None:
    pool = snapshot(make_host(1), make_host(2))
    follower = "RUNNING_VMS >= 1"
    vms = [vm(1, requirements=follower), vm(2), vm(3, requirements=follower)]
    result = plan(vms, pool, SchedulerConfig(policy="striping"))
    assert [(p.vm_id, p.host_id) for p in result.placements] == [(2, 1), (3, 1)]
    assert result.pending == {1: "0/2 hosts: 2 fail SCHED_REQUIREMENTS 'RUNNING_VMS >= 1'"}


class _CountingSnapshot(HostSnapshot):
    """Counts reads of text columns, to show static requirements are evaluated once."""

    reads = 0

    def text(self, name: str) -> TextArray:
        self.reads += name == "COUNTRY"
        return super().text(name)


def test_static_requirement_is_evaluated_once_per_plan_whatever_the_vm_shapes() -> None:
    pool = _CountingSnapshot(
        [make_host(i, cpu=100, memory=10**6, labels={"COUNTRY": "ES"}) for i in range(1, 5)]
    )
    vms = [
        vm(i, cpu=0.5 * (i % 3 + 1), memory=256 * (i % 5 + 1), requirements=req)
        for i in range(1, 61)
        for req in ['COUNTRY = "ES"', 'COUNTRY = "ES" & FREE_MEM > 0']
    ]
    result = plan(vms, pool, SchedulerConfig())
    assert len(result.placements) == 120
    assert pool.reads == 1


def test_empty_pool_keeps_every_vm_pending_with_a_reason() -> None:
    result = plan([vm(1), vm(2)], snapshot(), SchedulerConfig())
    assert result.pending == dict.fromkeys([1, 2], "0/0 hosts: the pool has no hosts")


# --------------------------------------------------------------------------- reference check


def _reference_plan(
    vms: list[PendingVm], hosts: list[Host], config: SchedulerConfig
) -> list[tuple[int, int]]:
    """The obvious algorithm: every filter and rank on every host, for every VM."""
    pool = HostSnapshot.from_hosts(hosts)
    dispatched = np.zeros(pool.size, dtype=int)
    placed: list[tuple[int, int]] = []
    for one in sorted(vms, key=lambda v: (-v.user_priority, v.id)):
        if config.max_dispatch and len(placed) >= config.max_dispatch:
            break
        ok = pool.monitored & (pool.free_cpu >= one.cpu - 1e-9) & (pool.free_mem >= one.memory)
        if one.requirements:
            ok &= compile_requirement(parse_expression(one.requirements))(pool)
        ok &= ~np.isin(pool.ids, list(one.exclude_hosts))
        if config.max_per_host:
            ok &= dispatched < config.max_per_host
        if not ok.any():
            continue
        rank_text = one.rank or POLICIES[config.policy]
        ranks = compile_rank(parse_expression(rank_text))(pool)
        row = int(np.argmax(np.where(ok, np.maximum(ranks, -1e308), -np.inf)))
        placed.append((one.id, int(pool.ids[row])))
        pool.place(row, one.cpu, one.memory)
        dispatched[row] += 1
    return placed


def _scenario(seed: int) -> tuple[list[Host], list[PendingVm]]:
    rnd = random.Random(seed)
    states = [HostState.MONITORED] * 8 + [HostState.ERROR, HostState.DISABLED]
    hosts = [
        make_host(
            i,
            cpu=rnd.choice([2, 4, 8]),
            memory=rnd.choice([2048, 4096, 8192]),
            state=rnd.choice(states),
            labels={"COUNTRY": rnd.choice(["ES", "FR"]), "PRIORITY": str(rnd.randrange(3))},
            vms=rnd.randrange(3),
        )
        for i in rnd.sample(range(1, 200), 25)
    ]
    requirements = ["", "", 'COUNTRY = "ES"', "FREE_MEM > 3000", "RUNNING_VMS < 3", "FREE_CPU < 4"]
    ranks = ["", "", "", "FREE_MEM", "-RUNNING_VMS * 2 + PRIORITY", "PRIORITY"]
    vms = [
        vm(
            i,
            cpu=rnd.choice([0.5, 1, 2]),
            memory=rnd.choice([256, 512, 1024]),
            requirements=rnd.choice(requirements),
            rank=rnd.choice(ranks),
            user_priority=rnd.randrange(3),
            exclude_hosts=frozenset({hosts[0].id}) if rnd.random() < 0.1 else frozenset(),
        )
        for i in range(1, 151)
    ]
    return hosts, vms


@pytest.mark.parametrize("seed", range(12))
def test_plan_matches_the_obvious_algorithm(seed: int) -> None:
    hosts, vms = _scenario(seed)
    policy = list(POLICIES)[seed % len(POLICIES)]
    config = SchedulerConfig(policy=policy, max_per_host=seed % 3 * 2, max_dispatch=seed % 2 * 90)
    result = plan(vms, HostSnapshot.from_hosts(hosts), config)
    assert [(p.vm_id, p.host_id) for p in result.placements] == _reference_plan(vms, hosts, config)
    assert len(result.placements) + len(result.pending) == len(vms)


def test_same_input_gives_the_same_plan() -> None:
    hosts, vms = _scenario(99)
    first = plan(vms, HostSnapshot.from_hosts(hosts), SchedulerConfig())
    second = plan(
        list(reversed(vms)), HostSnapshot.from_hosts(list(reversed(hosts))), SchedulerConfig()
    )
    assert first == second
