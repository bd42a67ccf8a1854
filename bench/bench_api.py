"""API latency with many VMs stored: list them all, and `vm show` under 50 concurrent clients.

python bench/bench_api.py [--vms 20000] [--clients 50] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon.daemon import Daemon

TEMPLATE = 'NAME = "api"\nCPU = 0.1\nMEMORY = 64\n'


async def _show_latencies(
    base: str, token: str, ids: list[int], clients: int, requests: int
) -> list[float]:
    latencies: list[float] = []
    per_client = requests // clients
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30
    ) as client:

        async def one_client(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(per_client):
                started = time.perf_counter()
                response = await client.get(f"/vms/{rng.choice(ids)}")
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return latencies


def run(vms: int, clients: int, requests: int, data_dir: Path) -> dict[str, object]:
    daemon = Daemon(data_dir, "--monitor-interval", "30").start()
    try:
        daemon.api(
            "POST",
            "/hosts",
            json={"name": "big", "driver": "dummy", "cpu": vms, "memory": vms * 100},
        )
        for done in range(0, vms, 1000):
            daemon.api("POST", "/vms", json={"template": TEMPLATE, "count": min(1000, vms - done)})
        deadline = time.monotonic() + 600
        while (
            len(daemon.api("GET", "/vms", params={"state": "RUNNING", "limit": 50000})["items"])
            < vms
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
        assert daemon.client is not None
        base = str(daemon.client.base_url)
        token = (data_dir / "admin.token").read_text().strip()
        latencies = asyncio.run(_show_latencies(base, token, ids, clients, requests))
    finally:
        daemon.stop()
    latencies.sort()
    return {
        "bench": "api",
        "vms": vms,
        "list_all_median_s": round(statistics.median(list_times), 3),
        "list_all_min_s": round(min(list_times), 3),
        "show_clients": clients,
        "show_requests": len(latencies),
        "show_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "show_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stratus-api-") as tmp:
        print(json.dumps(run(args.vms, args.clients, args.requests, Path(tmp))))


if __name__ == "__main__":
    main()
