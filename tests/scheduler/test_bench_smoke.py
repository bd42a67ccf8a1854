"""The scheduler benchmark, run small: it must place everything that fits, quickly."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_scheduler.py"


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scheduler", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_benchmark_places_everything_that_fits() -> None:
    bench = _load_bench()
    started = time.perf_counter()
    [figures] = bench.main(["--hosts", "200", "--vms", "2000", "--check"])
    assert time.perf_counter() - started < 10
    assert figures["placed"] + figures["pending"] == 2000
    assert figures["pending_but_fitting"] == 0
    assert figures["overcommitted_hosts"] == 0
    # only the VMs asking for a country no host is in should wait (about 1 in 35)
    assert figures["placed"] >= 0.95 * 2000
    assert figures["placements_per_second"] > 0
