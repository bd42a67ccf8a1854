"""Small runs of the daemon benchmarks, so they keep working (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_e2e_bench_runs_every_vm_it_creates() -> None:
    figures = _run("bench_e2e.py", "--vms", "300", "--hosts", "20")
    assert figures["vms"] == 300 and figures["store"] == "sqlite"
    assert float(figures["all_running_seconds"]) > 0  # type: ignore[arg-type]


def test_api_bench_measures_listing_and_show_latencies() -> None:
    figures = _run("bench_api.py", "--vms", "300", "--clients", "5", "--requests", "4")
    assert figures["vms"] == 300
    for shape in ("show_users", "show_saturated"):
        assert figures[shape]["requests"] == 20  # type: ignore[index]


def test_memory_bench_reports_the_daemon_rss() -> None:
    figures = _run("bench_memory.py", "--hosts", "20", "--vms", "200")
    assert 10 < float(figures["rss_mb"]) < 2000  # type: ignore[arg-type]


def test_clone_bench_compares_clones_with_a_full_copy() -> None:
    figures = _run("bench_clone.py", "--runs", "1", "--big-gib", "1", "--written-mib", "8")
    for measured in ("clone 10 MiB", "clone 1 GiB", "cp 1 GiB", "convert 1 GiB"):
        assert float(figures[measured]) > 0  # type: ignore[arg-type]


def test_lxc_bench_reports_deploy_and_answer_times() -> None:
    figures = _run("bench_lxc.py", "--containers", "2", "--singles", "1")
    assert figures["containers"] == 2
    assert float(figures["many"]["all_answering_s"]) > 0  # type: ignore[index]


def test_burst_bench_reports_the_reaction_and_the_driver_overhead() -> None:
    figures = _run("bench_burst.py", "--bursts", "1", "--deploys", "1")
    assert figures["bursts"] == 1 and figures["deploys"] == 1
    assert float(figures["reaction_median_s"]) > 0  # type: ignore[arg-type]


def test_ec2api_bench_measures_stratus_beside_moto() -> None:
    figures = _run("bench_ec2api.py", "--instances", "5", "--seconds", "0.3")
    assert figures["instances"] == 5
    for side in ("stratus", "moto"):
        rates = figures[side]
        assert isinstance(rates, dict)
        assert rates["describe_per_s"] > 0 and rates["run_per_s"] > 0
