"""Scheduler benchmark: 10,000 hosts and 100,000 pending VMs through one plan() call.

Prints one JSON object per line. The product's published figure is `placements_per_second`
for the default sizes; `--hosts 200 --vms 2000` is a quick smoke run. `--check` verifies
that no host is overcommitted and that every VM left pending fits nowhere.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from stratus.model.expr import parse_expression
from stratus.model.expr_compile import compile_requirement
from stratus.model.records import Host, HostState, HostUsage
from stratus.scheduler import HostSnapshot, PendingVm, Plan, SchedulerConfig, plan

COUNTRIES = ["ES", "FR", "DE", "NL", "US"]
REQUIREMENTS = [
    'COUNTRY = "ES"',
    'CLUSTER = "c*" & FREE_MEM > 4096',
    'COUNTRY = "FR" | COUNTRY = "DE"',
    'HYPERVISOR = "kvm" & PRICE < 0.5',
    'CLUSTER = "d[12]"',
    'PUBLIC_CLOUD != "YES" & TOTAL_CPU >= 32',
    'COUNTRY = "JP"',  # no such host: these VMs stay pending with a reason
]
RANKS = ["FREE_CPU", "-PRICE", "PRIORITY * 10 - RUNNING_VMS"]


def build_hosts(count: int, seed: int) -> list[Host]:
    """A pool with a few unmonitored hosts, partly used, labelled by country and cluster."""
    rnd = random.Random(seed)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    hosts = []
    for i in range(count):
        cpu = rnd.choice([16.0, 32.0, 64.0])
        memory = rnd.choice([65536, 131072, 262144])
        public = rnd.random() < 0.1
        state = HostState.MONITORED if rnd.random() > 0.02 else rnd.choice(list(HostState))
        labels = {
            "COUNTRY": rnd.choice(COUNTRIES),
            "CLUSTER": f"{rnd.choice('cd')}{rnd.randrange(8)}",
            "PRIORITY": str(rnd.randrange(10)),
            "PRICE": f"{rnd.uniform(0.05, 1.0):.3f}",
            "PUBLIC_CLOUD": "YES" if public else "NO",
        }
        usage = HostUsage(cpu=cpu * rnd.random() * 0.3, memory=int(memory * rnd.random() * 0.3))
        hosts.append(
            Host(
                id=i + 1,
                name=f"host-{i + 1}",
                driver="ec2" if public else "dummy",
                state=state,
                cpu=cpu,
                memory=memory,
                labels=labels,
                options={},
                reason="",
                monitoring={"HYPERVISOR": rnd.choice(["kvm", "lxc"]), "LOAD": rnd.random()},
                last_monitored=now,
                created=now,
                version=1,
                usage=usage,
            )
        )
    return hosts


def build_vms(count: int, hosts: int, seed: int) -> list[PendingVm]:
    """Mixed sizes; one fifth with requirements, a few with SCHED_RANK or an excluded host."""
    rnd = random.Random(seed + 1)
    vms = []
    for i in range(count):
        draw = rnd.random()
        vms.append(
            PendingVm(
                id=i + 1,
                cpu=rnd.choice([0.5, 1.0, 2.0, 4.0]),
                memory=rnd.choice([512, 1024, 2048, 4096, 8192]),
                requirements=rnd.choice(REQUIREMENTS) if draw < 0.2 else "",
                rank=rnd.choice(RANKS) if 0.2 <= draw < 0.25 else "",
                user_priority=rnd.randrange(4),
                exclude_hosts=frozenset({rnd.randrange(1, hosts + 1)})
                if draw > 0.995
                else frozenset(),
            )
        )
    return vms


def check(result: Plan, vms: Sequence[PendingVm], snapshot: HostSnapshot) -> dict[str, int]:
    """Overcommitted hosts, and pending VMs that would fit on a host in the final snapshot."""
    overcommitted = int(np.count_nonzero((snapshot.free_cpu < -1e-6) | (snapshot.free_mem < 0)))
    fitting = 0
    masks: dict[str, np.ndarray] = {}
    by_id = {vm.id: vm for vm in vms}
    for vm_id in result.pending:
        vm = by_id[vm_id]
        if vm.requirements not in masks:
            text = vm.requirements or "1"
            masks[vm.requirements] = compile_requirement(parse_expression(text))(snapshot)
        ok = (
            masks[vm.requirements]
            & snapshot.monitored
            & (snapshot.free_cpu >= vm.cpu - 1e-9)
            & (snapshot.free_mem >= vm.memory)
            & ~np.isin(snapshot.ids, list(vm.exclude_hosts))
        )
        fitting += bool(ok.any())
    return {"overcommitted_hosts": overcommitted, "pending_but_fitting": fitting}


def run(hosts: int, vms: int, seed: int, policy: str, verify: bool) -> dict[str, object]:
    host_records = build_hosts(hosts, seed)
    pending = build_vms(vms, hosts, seed)
    started = time.perf_counter()
    snapshot = HostSnapshot.from_hosts(host_records)
    built, cpu_started = time.perf_counter(), time.process_time()
    result = plan(pending, snapshot, SchedulerConfig(policy=policy))
    planned, cpu_used = time.perf_counter(), time.process_time() - cpu_started
    figures: dict[str, object] = {
        "hosts": hosts,
        "vms": vms,
        "policy": policy,
        "placed": len(result.placements),
        "pending": len(result.pending),
        "snapshot_seconds": round(built - started, 4),
        "plan_seconds": round(planned - built, 4),
        "placements_per_second": round(len(result.placements) / (planned - built)),
        # CPU time is steadier than wall time on a machine shared with other work
        "plan_cpu_seconds": round(cpu_used, 4),
        "placements_per_cpu_second": round(len(result.placements) / cpu_used),
    }
    if verify:
        figures.update(check(result, pending, snapshot))
    return figures


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--vms", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--policy", action="append", help="repeatable; default: packing")
    parser.add_argument("--check", action="store_true", help="verify the plan (slower)")
    args = parser.parse_args(argv)
    results = []
    for policy in args.policy or ["packing"]:
        figures = run(args.hosts, args.vms, args.seed, policy, args.check)
        print(json.dumps(figures), flush=True)
        results.append(figures)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
