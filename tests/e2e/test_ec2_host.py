"""The source's appendix-B template on an `ec2` host, through a real daemon, against a
real EC2 API implementation (moto's server on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.daemon.daemon import Daemon
from tests.e2e.conftest import wait_for, wait_monitored, wait_state
from tests.moto_server import MOTO_CREDENTIALS, ec2_host, running_moto

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ec2-hybrid.tmpl"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with running_moto() as url:
        yield url


@pytest.fixture(scope="module")
def ec2(endpoint: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=MOTO_CREDENTIALS["access_key_id"],
        aws_secret_access_key=MOTO_CREDENTIALS["secret_access_key"],
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, endpoint: str) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ec2"), "--monitor-interval", "1").start()
    try:
        d.api("POST", "/hosts", json=ec2_host("ec2", endpoint, region=REGION))
        wait_monitored(d, "ec2")
        yield d
    finally:
        d.stop()


def test_the_appendix_b_template_deploys_on_ec2_and_shows_its_address(
    daemon: Daemon, ec2: Any
) -> None:
    ec2.create_key_pair(KeyName="gsg-keypair")
    elastic_ip = ec2.allocate_address(Domain="standard")["PublicIp"]
    template = (
        EXAMPLE.read_text()
        .replace("75.101.155.97", elastic_ip)
        .replace("#REQUIREMENTS", "REQUIREMENTS")
    )
    created = daemon.api("POST", "/vms", json={"template": template})
    vm = wait_state(daemon, created["vms"][0]["id"], "RUNNING", timeout=120)
    assert vm["host"] == "ec2"
    assert vm["info"]["address"] == elastic_ip  # as in the appendix: the VM's address
    reservations = ec2.describe_instances(InstanceIds=[vm["deploy_id"]])["Reservations"]
    instance = reservations[0]["Instances"][0]
    assert instance["InstanceType"] == "m1.small"
    assert instance["KeyName"] == "gsg-keypair"

    daemon.api("POST", f"/vms/{vm['id']}/terminate")
    wait_state(daemon, vm["id"], "DONE", timeout=120)
    states = {
        i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    }
    assert states <= {"terminated"}  # every instance created was terminated
    secret = MOTO_CREDENTIALS["secret_access_key"]
    assert secret not in str(daemon.api("GET", "/hosts/ec2"))
    assert secret not in (daemon.data_dir / "stratus.log").read_text()


HYBRID = """
NAME = "burst"
CPU = 0.5
MEMORY = 1700
EC2 = [ AMI = "ami-00bafcb5", INSTANCETYPE = "m1.small" ]
"""


def test_local_first_bursts_the_overflow_to_ec2_in_one_cycle_and_terminates_it_all(
    tmp_path: Path, endpoint: str, ec2: Any
) -> None:
    # A slow scheduling cycle (5 s): all six placements must come from the same one.
    d = Daemon(tmp_path, "--policy", "local-first", "--schedule-interval", "5").start()
    try:
        local = {"name": "local", "driver": "dummy", "cpu": 1.5, "memory": "6G"}
        cloud = ec2_host("aws", endpoint, region=REGION)
        for host in (local, cloud):
            d.api("POST", "/hosts", json=host)
        wait_monitored(d, "local", "aws")
        created = d.api("POST", "/vms", json={"template": HYBRID, "count": 6})
        ids = [vm["id"] for vm in created["vms"]]
        vms = [wait_state(d, vm_id, "RUNNING", timeout=60) for vm_id in ids]
        assert sorted(vm["host"] for vm in vms) == ["aws"] * 3 + ["local"] * 3
        placed = [d.api("GET", f"/vms/{vm_id}")["events"] for vm_id in ids]
        cycles = {next(e["time"] for e in events if e["to"] == "PROLOG") for events in placed}
        assert len(cycles) == 1  # one scheduling cycle placed all six
        cloud_ids = [vm["deploy_id"] for vm in vms if vm["host"] == "aws"]
        for vm_id in ids:
            d.api("POST", f"/vms/{vm_id}/terminate")
        for vm_id in ids:
            wait_state(d, vm_id, "DONE", timeout=60)
        found = ec2.describe_instances(InstanceIds=cloud_ids)["Reservations"]
        assert {i["State"]["Name"] for r in found for i in r["Instances"]} == {"terminated"}
    finally:
        d.stop()


def test_without_instancetype_the_cheapest_quota_type_runs_and_strays_show_as_orphans(
    daemon: Daemon, ec2: Any
) -> None:
    untyped = 'NAME = "untyped"\nCPU = 1\nMEMORY = 1024\nEC2 = [ AMI = "ami-00bafcb5" ]\n'
    created = daemon.api("POST", "/vms", json={"template": untyped})
    vm = wait_state(daemon, created["vms"][0]["id"], "RUNNING", timeout=120)
    assert vm["info"]["offering"] == "m1.small"  # the host's one quota type that fits
    found = ec2.describe_instances(InstanceIds=[vm["deploy_id"]])["Reservations"]
    assert found[0]["Instances"][0]["InstanceType"] == "m1.small"

    # an instance tagged for the host that Stratus did not make: `host show` lists it
    stray = ec2.run_instances(
        ImageId="ami-00bafcb5",
        InstanceType="t2.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "stratus:host", "Value": "ec2"}]}
        ],
    )["Instances"][0]["InstanceId"]
    try:
        host = wait_for(
            "the orphan in host show",
            lambda: (h := daemon.api("GET", "/hosts/ec2"))["orphans"] and h,
            30,
        )
        assert host["orphans"] == [stray]  # the VM's own instance is no orphan
        assert host["labels"]["COUNTRY"] == "US"  # derived at `host add` from the region
        assert host["labels"]["INSTANCE_TYPES"] == "m1.small=4"
    finally:
        ec2.terminate_instances(InstanceIds=[stray])
    wait_for("no orphans", lambda: daemon.api("GET", "/hosts/ec2")["orphans"] == [], 30)
    daemon.api("POST", f"/vms/{vm['id']}/terminate")
    wait_state(daemon, vm["id"], "DONE", timeout=120)
