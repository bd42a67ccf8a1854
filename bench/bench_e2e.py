"""End to end: N VMs created through the API on H dummy hosts, time until all RUNNING.

Runs a real `stratus serve` process on loopback (SQLite by default; `--pg` starts a
throwaway PostgreSQL for the run). Prints one JSON line of figures.

    python bench/bench_e2e.py [--vms 10000] [--hosts 1000] [--pg]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon.daemon import Daemon

TEMPLATE = 'NAME = "bench"\nCPU = 0.5\nMEMORY = 512\n'


def run(vms: int, hosts: int, db_url: str | None, data_dir: Path) -> dict[str, float | int | str]:
    daemon = Daemon(
        data_dir, "--schedule-interval", "0.2", "--monitor-interval", "30", db_url=db_url
    ).start()
    try:
        cpu_per_host = max(8, (vms * 0.5) / hosts * 2)
        for i in range(hosts):
            daemon.api(
                "POST",
                "/hosts",
                json={
                    "name": f"h{i:05d}",
                    "driver": "dummy",
                    "cpu": cpu_per_host,
                    "memory": 1_000_000,
                },
            )
        _wait(daemon, lambda: _count_hosts(daemon, "MONITORED") == hosts, 120)
        started = time.perf_counter()
        batch = 500
        for done in range(0, vms, batch):
            daemon.api("POST", "/vms", json={"template": TEMPLATE, "count": min(batch, vms - done)})
        submitted = time.perf_counter() - started
        _wait(daemon, lambda: _count_vms(daemon, "RUNNING") == vms, 600)
        elapsed = time.perf_counter() - started
    finally:
        daemon.stop()
    return {
        "bench": "e2e",
        "store": "postgresql" if db_url else "sqlite",
        "hosts": hosts,
        "vms": vms,
        "submit_seconds": round(submitted, 2),
        "all_running_seconds": round(elapsed, 2),
        "vms_per_second": round(vms / elapsed, 1),
    }


def _count_vms(daemon: Daemon, state: str) -> int:
    return len(daemon.api("GET", "/vms", params={"state": state, "limit": 50000})["items"])


def _count_hosts(daemon: Daemon, state: str) -> int:
    return len(daemon.api("GET", "/hosts", params={"state": state, "limit": 50000})["items"])


def _wait(daemon: Daemon, done, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s\n{daemon.output()}")
        time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=1_000)
    parser.add_argument("--pg", action="store_true", help="use a throwaway PostgreSQL")
    args = parser.parse_args()
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-e2e-")))
        db_url = None
        if args.pg:
            from tests.pg import PostgresServer, find_pg_bin

            bin_dir = find_pg_bin()
            if bin_dir is None:
                raise SystemExit("no PostgreSQL binaries: apt-get install postgresql")
            server = PostgresServer(bin_dir)
            server.start()
            stack.callback(server.stop)
            db_url = server.create_database("bench")
        print(json.dumps(run(args.vms, args.hosts, db_url, data_dir)))


if __name__ == "__main__":
    main()
