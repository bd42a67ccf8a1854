"""Many threads writing at once: optimistic concurrency holds, and SQLite never says "locked"."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from stratus.model.errors import Conflict
from stratus.model.lifecycle import VmState
from stratus.model.records import Vm
from stratus.store import Store, VmChange
from tests.store.helpers import add_host, new_vm, run_on

THREADS = 8
ATTEMPTS = 25


def test_concurrent_conditional_updates_have_one_winner_per_version(store: Store) -> None:
    [vm] = store.create_vms([new_vm()])
    vm = run_on(store, vm, add_host(store))
    start_version = vm.version
    last_event = store.events(object_type="vm", object_id=vm.id)[-1].id
    barrier = threading.Barrier(THREADS)

    def writer(number: int) -> list[tuple[int, bool]]:
        barrier.wait(timeout=30)
        outcomes = []
        for attempt in range(ATTEMPTS):
            seen = store.get_vm(vm.id).version
            change = VmChange(vm.id, seen, VmState.RUNNING, f"writer {number} try {attempt}")
            [result] = store.apply([change])
            if isinstance(result, Conflict):
                assert "changed meanwhile" in str(result)
            outcomes.append((seen, isinstance(result, Vm)))
        return outcomes

    with ThreadPoolExecutor(THREADS) as pool:
        # .result() re-raises any error a thread hit, such as "database is locked".
        outcomes = [
            o
            for future in [pool.submit(writer, n) for n in range(THREADS)]
            for o in future.result()
        ]

    won = [version for version, ok in outcomes if ok]
    assert won, "no writer ever won"
    assert max(Counter(won).values()) == 1, "two writers won the same version"
    assert sorted(won) == list(range(start_version, start_version + len(won)))
    final = store.get_vm(vm.id)
    assert final.version == start_version + len(won)  # no lost update
    events = store.events(object_type="vm", object_id=vm.id, after_id=last_event, limit=1000)
    assert len(events) == len(won)
    lost = [version for version, ok in outcomes if not ok]
    assert all(version in won for version in lost), "a writer lost to a version nobody won"


def test_concurrent_writers_on_different_vms_all_succeed(store: Store) -> None:
    host = add_host(store)
    barrier = threading.Barrier(THREADS)

    def writer(number: int) -> int:
        barrier.wait(timeout=30)
        created = store.create_vms([new_vm(f"w{number}-{i}") for i in range(20)])
        results = store.apply(
            [VmChange(v.id, v.version, VmState.PROLOG, "placed", host_id=host.id) for v in created]
        )
        assert all(isinstance(result, Vm) for result in results), results
        store.list_vms(limit=100)
        return len(results)

    with ThreadPoolExecutor(THREADS) as pool:
        done = sum(pool.map(writer, range(THREADS)))
    assert done == THREADS * 20
    assert store.count_vms(state=VmState.PROLOG) == THREADS * 20
    assert store.get_host(host.id).usage.vms == THREADS * 20
    assert len(store.events(object_type="vm", limit=10_000)) == 2 * THREADS * 20
