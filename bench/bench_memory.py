"""Daemon memory with many hosts and VMs: resident set size of `stratus serve`.

python bench/bench_memory.py [--hosts 10000] [--vms 100000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon.daemon import Daemon

TEMPLATE = 'NAME = "mem"\nCPU = 0.1\nMEMORY = 64\n'


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _not_running(daemon: Daemon) -> int:
    """How many VMs are not RUNNING yet (pages through them all)."""
    count, after = 0, 0
    while True:
        page = daemon.api("GET", "/vms", params={"limit": 50000, "after": after})
        count += sum(1 for vm in page["items"] if vm["state"] != "RUNNING")
        if page["next"] is None:
            return count
        after = page["next"]


def run(hosts: int, vms: int, data_dir: Path) -> dict[str, object]:
    # 10,000 hosts probed every 60 s: 166 probes a second beside the VMs starting.
    daemon = Daemon(data_dir, "--monitor-interval", "60", "--schedule-interval", "1").start()
    assert daemon.proc is not None
    try:
        started = time.perf_counter()
        for i in range(hosts):
            daemon.api(
                "POST",
                "/hosts",
                json={"name": f"h{i:05d}", "driver": "dummy", "cpu": 64, "memory": 262144},
            )
        for done in range(0, vms, 1000):
            daemon.api("POST", "/vms", json={"template": TEMPLATE, "count": min(1000, vms - done)})
        deadline = time.monotonic() + 1800
        while _not_running(daemon):
            if time.monotonic() > deadline:
                raise SystemExit("VMs did not all run in 1800 s")
            time.sleep(2)
        elapsed = time.perf_counter() - started
        time.sleep(3)
        rss, peak = _rss_mb(daemon.proc.pid)
    finally:
        daemon.stop()
    return {
        "bench": "memory",
        "hosts": hosts,
        "vms": vms,
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "setup_seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--vms", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stratus-mem-") as tmp:
        print(json.dumps(run(args.hosts, args.vms, Path(tmp))))


if __name__ == "__main__":
    main()
