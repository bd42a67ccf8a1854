"""Cloud bursting: how fast the overflow reaches the cloud, and what the ec2 driver costs.

Runs against moto's EC2 server on loopback (started here) and a real `stratus serve`.

    burst reaction   local capacity full (a dummy host with room for 3), then one more VM
                     of a hybrid template: from its creation to the BOOT step on the ec2
                     host, i.e. when RunInstances is sent (server-side event times);
                     median and max of --bursts runs
    driver deploy    Ec2Driver.deploy() of one instance until it is running, against a bare
                     boto3 RunInstances + DescribeInstances until running, same endpoint,
                     alternated, median of --deploys each

    python bench/bench_burst.py [--bursts 4] [--deploys 10]

Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from tests.daemon.daemon import Daemon
from tests.moto_server import MOTO_CREDENTIALS, ec2_host, running_moto

from stratus.drivers.base import DeploySpec, HostInfo
from stratus.drivers.ec2 import Ec2Driver

REGION = "us-east-1"
AMI = "ami-00bafcb5"
HYBRID = (
    'NAME = "burst"\nCPU = 0.5\nMEMORY = 1700\nEC2 = [ AMI = "%s", INSTANCETYPE = "m1.small" ]\n'
)


def _wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {timeout} s")


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def burst_reaction(endpoint: str, bursts: int, data_dir: Path) -> list[float]:
    daemon = Daemon(data_dir, "--policy", "local-first", "--monitor-interval", "2").start()
    try:
        daemon.api(
            "POST", "/hosts", json={"name": "local", "driver": "dummy", "cpu": 1.5, "memory": "8G"}
        )
        daemon.api("POST", "/hosts", json=ec2_host("aws", endpoint, region=REGION))
        for name in ("local", "aws"):
            _wait(
                f"{name} monitored",
                lambda n=name: daemon.api("GET", f"/hosts/{n}")["state"] == "MONITORED",
            )
        template = HYBRID % AMI
        fill = daemon.api("POST", "/vms", json={"template": template, "count": 3})["vms"]
        for vm in fill:
            _wait(
                "local VMs running",
                lambda v=vm: daemon.api("GET", f"/vms/{v['id']}")["state"] == "RUNNING",
            )
        reactions = []
        for _ in range(bursts):
            vm = daemon.api("POST", "/vms", json={"template": template})["vms"][0]
            shown = _wait(
                "the burst VM running",
                lambda v=vm: (
                    (d := daemon.api("GET", f"/vms/{v['id']}"))["state"] == "RUNNING" and d
                ),
            )
            assert shown["host"] == "aws", shown["host"]
            events = {e["to"]: _time(e["time"]) for e in shown["events"]}
            reactions.append(events["BOOT"] - events["PENDING"])
        return reactions
    finally:
        daemon.stop()


async def driver_overhead(endpoint: str, deploys: int) -> tuple[list[float], list[float]]:
    driver = Ec2Driver(Path(tempfile.mkdtemp()))
    host = HostInfo(
        id=1,
        name="bench-aws",
        options={
            "region": REGION,
            "endpoint": endpoint,
            "capacity": "m1.small=4",
            "poll_interval": "0.05",
        },
        labels={},
        secrets=dict(MOTO_CREDENTIALS),
    )
    client = boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=MOTO_CREDENTIALS["access_key_id"],
        aws_secret_access_key=MOTO_CREDENTIALS["secret_access_key"],
    )
    ours, bare = [], []
    try:
        for i in range(deploys):
            spec = DeploySpec(
                request_id=f"bench-{i}",
                vm_id=1000 + i,
                name=f"bench-{i}",
                cpu=0.5,
                vcpu=1,
                memory=1700,
                template={"MEMORY": "1700", "EC2": {"AMI": AMI, "INSTANCETYPE": "m1.small"}},
            )
            started = time.perf_counter()
            info = await driver.deploy(host, spec)
            ours.append(time.perf_counter() - started)
            await driver.destroy(host, info.deploy_id)

            started = time.perf_counter()
            made = client.run_instances(
                ImageId=AMI, InstanceType="m1.small", MinCount=1, MaxCount=1
            )
            instance_id = made["Instances"][0]["InstanceId"]
            while True:
                found = client.describe_instances(InstanceIds=[instance_id])
                if found["Reservations"][0]["Instances"][0]["State"]["Name"] == "running":
                    break
                await asyncio.sleep(0.05)
            bare.append(time.perf_counter() - started)
            client.terminate_instances(InstanceIds=[instance_id])
    finally:
        await driver.close()
    return ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=4, help="burst VMs (the ec2 quota is 4)")
    parser.add_argument("--deploys", type=int, default=10, help="deploys timed per side")
    args = parser.parse_args()
    with running_moto() as endpoint, tempfile.TemporaryDirectory() as tmp:
        reactions = burst_reaction(endpoint, min(args.bursts, 4), Path(tmp))
        ours, bare = asyncio.run(driver_overhead(endpoint, args.deploys))
    figures = {
        "bursts": len(reactions),
        "reaction_median_s": round(statistics.median(reactions), 3),
        "reaction_max_s": round(max(reactions), 3),
        "deploys": len(ours),
        "driver_deploy_median_s": round(statistics.median(ours), 4),
        "bare_boto3_median_s": round(statistics.median(bare), 4),
    }
    figures["driver_overhead_median_s"] = round(
        figures["driver_deploy_median_s"] - figures["bare_boto3_median_s"], 4
    )
    for label, key in (
        ("burst reaction (creation -> RunInstances), median", "reaction_median_s"),
        ("burst reaction, max", "reaction_max_s"),
        ("ec2 driver deploy until running, median", "driver_deploy_median_s"),
        ("bare boto3 RunInstances until running, median", "bare_boto3_median_s"),
    ):
        print(f"{label:<55} {figures[key]} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
