"""HostSnapshot: the host columns the scheduler and the expression language read."""

from __future__ import annotations

import math
import random

import numpy as np

from stratus.model.expr import parse_expression
from stratus.model.expr_compile import (
    compile_rank,
    compile_requirement,
    evaluate_rank,
    evaluate_requirement,
)
from stratus.model.records import HostState
from stratus.scheduler import HostSnapshot
from tests.scheduler.factories import make_host, snapshot


def test_snapshot_exposes_capacity_labels_and_monitoring_as_columns() -> None:
    hosts = snapshot(
        make_host(
            1,
            cpu=8,
            memory=16384,
            used_cpu=2.5,
            used_mem=4096,
            vms=3,
            labels={"country": "ES", "Priority": "7"},
            monitoring={"HYPERVISOR": "kvm", "load": 0.25},
        ),
        make_host(2, state=HostState.ERROR, labels={"CLUSTER": "c1"}),
    )
    assert hosts.numeric("FREE_CPU").tolist() == [5.5, 8.0]
    assert hosts.numeric("FREE_MEM").tolist() == [12288.0, 16384.0]
    assert hosts.numeric("USED_CPU").tolist() == [2.5, 0.0]
    assert hosts.numeric("TOTAL_MEM").tolist() == [16384.0, 16384.0]
    assert hosts.numeric("RUNNING_VMS").tolist() == [3.0, 0.0]
    assert hosts.numeric("PRIORITY")[0] == 7.0 and math.isnan(hosts.numeric("PRIORITY")[1])
    assert hosts.numeric("LOAD")[0] == 0.25
    assert hosts.text("COUNTRY").tolist() == ["ES", None]
    assert hosts.text("CLUSTER").tolist() == [None, "c1"]
    assert hosts.text("HYPERVISOR").tolist() == ["kvm", "kvm"]
    assert hosts.text("STATE").tolist() == ["MONITORED", "ERROR"]
    assert hosts.text("NAME").tolist() == ["host-1", "host-2"]
    assert hosts.text("DRIVER").tolist() == ["dummy", "dummy"]
    assert hosts.text("ID").tolist() == ["1", "2"]
    assert hosts.monitored.tolist() == [True, False]


def test_built_in_columns_win_over_labels_and_labels_over_monitoring() -> None:
    hosts = snapshot(
        make_host(1, labels={"NAME": "fake", "ZONE": "label"}, monitoring={"ZONE": "probe"})
    )
    assert hosts.text("NAME").tolist() == ["host-1"]
    assert hosts.text("ZONE").tolist() == ["label"]


def test_hosts_are_ordered_by_id_whatever_the_input_order() -> None:
    hosts = snapshot(make_host(9), make_host(3), make_host(5))
    assert hosts.ids.tolist() == [3, 5, 9]
    assert hosts.names == ["host-3", "host-5", "host-9"]


def test_place_moves_capacity_from_free_to_used_and_counts_the_vm() -> None:
    hosts = snapshot(make_host(1, cpu=4, memory=8192), make_host(2))
    hosts.place(0, 1.5, 2048)
    assert hosts.numeric("FREE_CPU")[0] == 2.5
    assert hosts.numeric("USED_CPU")[0] == 1.5
    assert hosts.numeric("FREE_MEM")[0] == 6144
    assert hosts.numeric("USED_MEM")[0] == 2048
    assert hosts.numeric("RUNNING_VMS").tolist() == [1.0, 0.0]
    assert hosts.text("FREE_CPU").tolist() == ["2.5", "8"]


def test_requirements_on_live_columns_see_placements() -> None:
    hosts = snapshot(make_host(1, memory=8192))
    requirement = compile_requirement(parse_expression('FREE_MEM > 4096 & FREE_MEM = "8192"'))
    assert requirement(hosts).tolist() == [True]
    hosts.place(0, 1, 4096)
    assert requirement(hosts).tolist() == [False]


def test_a_view_of_some_rows_reads_the_same_values() -> None:
    hosts = snapshot(*(make_host(i, labels={"N": str(i)}) for i in range(1, 6)))
    rows = np.array([4, 1], dtype=np.intp)
    view = hosts.rows(rows)
    assert view.size == 2
    assert view.numeric("N").tolist() == [5.0, 2.0]
    assert view.text("NAME").tolist() == ["host-5", "host-2"]
    assert view.text("FREE_CPU").tolist() == ["8", "8"]
    assert hosts.rows(slice(None)) is hosts


def test_snapshot_evaluates_like_each_host_alone() -> None:
    rnd = random.Random(7)
    records = [
        make_host(
            i,
            cpu=rnd.choice([4, 8]),
            used_cpu=rnd.choice([0, 1.5, 4]),
            vms=rnd.randrange(4),
            labels={"COUNTRY": rnd.choice(["ES", "FR"]), "PRIORITY": rnd.choice(["1", "x", "10"])},
            monitoring={"HYPERVISOR": rnd.choice(["kvm", "lxc"]), "GPUS": ["a100", "t4"][: i % 3]},
        )
        for i in range(1, 300)
    ]
    pool = HostSnapshot.from_hosts(records)
    for text in [
        'COUNTRY = "E*" & FREE_CPU >= 4',
        "PRIORITY > 5 | RUNNING_VMS = 0",
        'GPUS @> "t4" & HYPERVISOR != "lxc"',
        "FREE_CPU * 2 - PRIORITY",
        'NAME = "host-1?" | ID < 3',
    ]:
        expr = parse_expression(text)
        alone = [
            {
                **host.labels,
                **host.monitoring,
                "ID": host.id,
                "NAME": host.name,
                "FREE_CPU": host.cpu - host.usage.cpu,
                "RUNNING_VMS": host.usage.vms,
            }
            for host in records
        ]
        assert compile_requirement(expr)(pool).tolist() == [
            evaluate_requirement(expr, attrs) for attrs in alone
        ]
        assert compile_rank(expr)(pool).tolist() == [evaluate_rank(expr, attrs) for attrs in alone]
