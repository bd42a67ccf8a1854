"""The EC2 Query API: requests per second, Stratus beside moto's server, in one run.

Both run on loopback on this machine: a real `stratus serve` (SQLite, one dummy host big
enough for every instance, a user with an access key, a registered image) and moto's
ThreadedMotoServer. The same boto3 calls go to each, signed with SigV4:

    DescribeInstances   all N instances (--instances, default 1,000) in pages of 1,000,
                        one client calling in a loop for --seconds
    RunInstances        one instance per call, one client calling in a loop for --seconds
                        (the Stratus instances start on the dummy host meanwhile)

    python bench/bench_ec2api.py [--instances 1000] [--seconds 10]

Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from botocore.config import Config
from tests.daemon.daemon import Daemon
from tests.imagefiles import make_qcow2
from tests.moto_server import MOTO_CREDENTIALS, running_moto

REGION = "stratus-1"
MOTO_REGION = "us-east-1"
MOTO_AMI = "ami-00bafcb5"


def _client(endpoint: str, region: str, key: str, secret: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def _wait(what: str, check: Callable[[], Any], timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {timeout} s")


def _rate(call: Callable[[], Any], seconds: float) -> tuple[float, int]:
    """Calls per second of `call` in a loop for `seconds` (after one warm-up call)."""
    call()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        count += 1
    return count / (time.perf_counter() - start), count


def _fill(client: Any, ami: str, instances: int) -> None:
    """Launch `instances` instances, 100 per RunInstances call."""
    left = instances
    while left:
        batch = min(100, left)
        client.run_instances(ImageId=ami, InstanceType="m1.small", MinCount=batch, MaxCount=batch)
        left -= batch


def _count(client: Any) -> int:
    pages = client.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 1000})
    return sum(len(r["Instances"]) for page in pages for r in page["Reservations"])


def measure(client: Any, ami: str, instances: int, seconds: float) -> dict[str, float]:
    _fill(client, ami, instances)
    _wait(f"{instances} instances listed", lambda: _count(client) >= instances)

    def describe() -> None:
        found = sum(
            len(r["Instances"])
            for page in client.get_paginator("describe_instances").paginate(
                PaginationConfig={"PageSize": 1000}
            )
            for r in page["Reservations"]
        )
        assert found >= instances, found

    def run() -> None:
        client.run_instances(ImageId=ami, InstanceType="m1.small", MinCount=1, MaxCount=1)

    describe_rate, _ = _rate(describe, seconds)
    run_rate, launched = _rate(run, seconds)
    return {"describe_per_s": describe_rate, "run_per_s": run_rate, "launched": launched}


def stratus_side(work: Path, instances: int, seconds: float) -> dict[str, float]:
    data_dir = work / "data"
    data_dir.mkdir()
    daemon = Daemon(data_dir, "--monitor-interval", "30", "--ec2-region", REGION).start()
    try:
        capacity = {"cpu": 100000, "memory": "1000000G"}
        daemon.api("POST", "/hosts", json={"name": "big", "driver": "dummy", **capacity})
        disk = make_qcow2(work / "disk.qcow2", "16M")
        daemon.api("POST", "/images", json={"name": "bench", "path": str(disk), "type": "OS"})
        image = _wait(
            "image READY",
            lambda: (i := daemon.api("GET", "/images/bench"))["state"] == "READY" and i,
        )
        daemon.api("POST", "/users", json={"name": "bench"})
        key = daemon.api("POST", "/users/bench/keys")
        client = _client(
            f"{daemon.endpoint}/ec2", REGION, key["access_key_id"], key["secret_access_key"]
        )
        return measure(client, f"ami-{image['id']:08x}", instances, seconds)
    finally:
        daemon.stop()


def moto_side(instances: int, seconds: float) -> dict[str, float]:
    with running_moto() as endpoint:
        client = _client(
            endpoint,
            MOTO_REGION,
            MOTO_CREDENTIALS["access_key_id"],
            MOTO_CREDENTIALS["secret_access_key"],
        )
        return measure(client, MOTO_AMI, instances, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    with tempfile.TemporaryDirectory(prefix="bench-ec2api-") as tmp:
        ours = stratus_side(Path(tmp), args.instances, args.seconds)
    theirs = moto_side(args.instances, args.seconds)
    print(f"EC2 API requests per second, {args.instances} instances, one client each")
    print(f"{'':24}{'Stratus':>10}{'moto':>10}")
    for label, key in (
        ("DescribeInstances (all)", "describe_per_s"),
        ("RunInstances (1)", "run_per_s"),
    ):
        print(f"{label:24}{ours[key]:>10.2f}{theirs[key]:>10.2f}")
    print(json.dumps({"instances": args.instances, "stratus": ours, "moto": theirs}))


if __name__ == "__main__":
    main()
