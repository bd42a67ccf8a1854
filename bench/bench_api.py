"""API latency with many VMs stored: list them all, and `vm show` under 50 clients.

Two load shapes for `vm show`, both from a separate process (bench/loadgen.py):
  users:     50 clients, each pausing ~0.25 s between requests (50 people using it)
  saturated: 50 clients sending back to back (what the server can take at most)

    python bench/bench_api.py [--vms 20000] [--clients 50] [--requests 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon.daemon import Daemon

TEMPLATE = 'NAME = "api"\nCPU = 0.1\nMEMORY = 64\n'
LOADGEN = Path(__file__).with_name("loadgen.py")


def _percentiles(latencies: list[float]) -> dict[str, float]:
    latencies = sorted(latencies)
    return {
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
        "requests": len(latencies),
    }


def _load(daemon: Daemon, clients: int, requests: int, think: float, ids: list[int]) -> dict:  # type: ignore[type-arg]
    assert daemon.client is not None
    url = str(daemon.client.base_url).removesuffix("/api/v1")
    token = (daemon.data_dir / "admin.token").read_text().strip()
    paths = [f"/api/v1/vms/{vm_id}" for vm_id in ids[:: max(1, len(ids) // 500)]]
    command = [sys.executable, str(LOADGEN), url, token, str(clients), str(requests), str(think)]
    done = subprocess.run(
        [*command, *paths], capture_output=True, text=True, check=True, timeout=600
    )
    return _percentiles(json.loads(done.stdout))


def run(vms: int, clients: int, requests: int, data_dir: Path) -> dict[str, object]:
    daemon = Daemon(data_dir).start()
    try:
        for i in range(max(1, vms // 100)):  # 100 VMs a host, as on a real pool
            host = {"name": f"h{i:04d}", "driver": "dummy", "cpu": 64, "memory": 65536}
            daemon.api("POST", "/hosts", json=host)
        for done in range(0, vms, 1000):
            daemon.api("POST", "/vms", json={"template": TEMPLATE, "count": min(1000, vms - done)})
        deadline = time.monotonic() + 600
        while daemon.api("GET", "/vms", params={"state": "PENDING", "limit": 1})["items"] or any(
            v["state"] != "RUNNING" for v in daemon.all_vms()
        ):
            if time.monotonic() > deadline:
                raise SystemExit("VMs did not all run in 600 s")
            time.sleep(1)
        list_times = []
        for _ in range(7):
            started = time.perf_counter()
            items = daemon.api("GET", "/vms", params={"limit": 50000})["items"]
            list_times.append(time.perf_counter() - started)
            assert len(items) == vms
        ids = [v["id"] for v in items]
        users = _load(daemon, clients, requests, 0.25, ids)
        saturated = _load(daemon, clients, requests, 0.0, ids)
    finally:
        daemon.stop()
    return {
        "bench": "api",
        "vms": vms,
        "list_all_median_s": round(statistics.median(list_times), 3),
        "list_all_min_s": round(min(list_times), 3),
        "show_clients": clients,
        "show_users": users,
        "show_saturated": saturated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stratus-api-") as tmp:
        print(json.dumps(run(args.vms, args.clients, args.requests, Path(tmp))))


if __name__ == "__main__":
    main()
