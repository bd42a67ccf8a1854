"""Store throughput: create VMs, list 20,000 of them, and apply() state changes in batches.

    python bench/bench_store.py [--vms 20000] [--changes 5000] [--batch 200] [--pg-url URL]

SQLite runs in a temporary file; --pg-url names an EMPTY scratch PostgreSQL database
(the bench adds hosts and VMs to it and leaves them there). --skip-sqlite runs PostgreSQL only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stratus.model.lifecycle import VmState
from stratus.model.records import Vm
from stratus.store import NewVm, Store, VmChange, open_store

HOSTS = 100
TEMPLATE: dict[str, Any] = {
    "NAME": "bench",
    "CPU": 0.5,
    "VCPU": 1,
    "MEMORY": 512,
    "DISK": [{"IMAGE": "ubuntu-24.04", "SIZE": 10240}],
    "NIC": [{"NETWORK": "private"}],
    "CONTEXT": {"NETWORK": "YES", "SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3Nza... bench@stratus"},
    "SCHED_REQUIREMENTS": 'COUNTRY = "ES"',
}


def _timed(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median wall time of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def _new_vm(i: int) -> NewVm:
    return NewVm(
        name="",
        state=VmState.PENDING,
        cpu=0.5,
        vcpu=1,
        memory=512,
        user_priority=i % 10,
        requirements='COUNTRY = "ES"',
        rank="FREE_CPU",
        template=TEMPLATE,
    )


def _apply_all(store: Store, changes: list[VmChange], batch: int) -> tuple[float, list[Vm]]:
    started = time.perf_counter()
    done: list[Vm] = []
    for i in range(0, len(changes), batch):
        for result in store.apply(changes[i : i + batch]):
            if not isinstance(result, Vm):
                raise SystemExit(f"bench: a change was refused: {result}")
            done.append(result)
    return time.perf_counter() - started, done


def bench(store: Store, *, vms: int, changes: int, batch: int) -> None:
    """Run every measurement on one store and print one line per figure."""
    tag = f"{store.dialect:10}"
    if store.count_vms() or store.list_hosts(limit=1):
        raise SystemExit(f"bench: {store.url} is not empty: give an empty scratch database")
    hosts = [
        store.add_host(f"bench-{i}", "dummy", 64, 262144, {"COUNTRY": "ES"}, {})
        for i in range(HOSTS)
    ]

    started = time.perf_counter()
    created: list[Vm] = []
    for i in range(0, vms, 1000):
        created += store.create_vms([_new_vm(j) for j in range(i, min(i + 1000, vms))])
    elapsed = time.perf_counter() - started
    rate = vms / elapsed
    print(f"{tag} create_vms  {vms} VMs in batches of 1000: {elapsed:.2f} s ({rate:,.0f} VMs/s)")

    best, median = _timed(lambda: store.list_vms(limit=vms), repeat=5)
    print(f"{tag} list_vms    {vms} VMs: best {best:.3f} s, median {median:.3f} s")
    best, median = _timed(store.pending_vms, repeat=3)
    print(f"{tag} pending_vms {vms} VMs: best {best:.3f} s, median {median:.3f} s")
    best, median = _timed(store.all_hosts, repeat=5)
    print(
        f"{tag} all_hosts   {HOSTS} hosts with usage: "
        f"best {best * 1000:.1f} ms, median {median * 1000:.1f} ms"
    )

    count = min(changes, len(created))
    placements = [
        VmChange(
            vm.id, vm.version, VmState.PROLOG, "placed by the bench",
            host_id=hosts[i % HOSTS].id, open_history=(hosts[i % HOSTS].id, "placed by the bench"),
        )
        for i, vm in enumerate(created[:count])
    ]  # fmt: skip
    elapsed, placed = _apply_all(store, placements, batch)
    print(
        f"{tag} apply       {count} placements (+history) in batches of {batch}: "
        f"{elapsed:.2f} s ({count / elapsed:,.0f} changes/s)"
    )
    singles = placed[: min(500, count)]
    boots = [VmChange(vm.id, vm.version, VmState.BOOT, "images ready") for vm in singles]
    elapsed, _ = _apply_all(store, boots, 1)
    print(
        f"{tag} apply       {len(boots)} single changes, one transaction each: "
        f"{elapsed / len(boots) * 1000:.2f} ms per call ({len(boots) / elapsed:,.0f} changes/s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=20_000, help="VMs to create and list")
    parser.add_argument("--changes", type=int, default=5_000, help="VM changes to apply")
    parser.add_argument("--batch", type=int, default=200, help="changes per apply() call")
    parser.add_argument("--pg-url", help="an EMPTY scratch PostgreSQL database to bench too")
    parser.add_argument("--skip-sqlite", action="store_true", help="bench PostgreSQL only")
    args = parser.parse_args(argv)
    if args.skip_sqlite and not args.pg_url:
        parser.error("--skip-sqlite needs --pg-url")
    if not args.skip_sqlite:
        with (
            tempfile.TemporaryDirectory(prefix="stratus-bench-") as tmp,
            open_store(str(Path(tmp) / "bench.db")) as store,
        ):
            bench(store, vms=args.vms, changes=args.changes, batch=args.batch)
    if args.pg_url:
        with open_store(args.pg_url) as store:
            bench(store, vms=args.vms, changes=args.changes, batch=args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
