"""Stratus's own ec2 driver with this EC2 API as its endpoint: a zone as another's cloud.

The zone's daemon gets an `ec2` host whose endpoint is its own /ec2 and whose keys are an
EC2 user's: a VM placed on that host is deployed by the driver through RunInstances,
watched through DescribeInstances (tag filters) and ended through TerminateInstances,
exactly as it would be on a partner zone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from stratus.drivers.base import DiskSpec
from stratus.drivers.cloud_errors import CloudError
from stratus.drivers.ec2_images import ensure_image, remote_image_name
from tests.e2e.conftest import wait_monitored, wait_state
from tests.ec2api.conftest import REGION, Zone, instances_of
from tests.imagefiles import FileServer, file_server, make_qcow2  # noqa: F401 (a fixture)


def test_the_ec2_driver_deploys_and_terminates_through_this_api(zone: Zone) -> None:
    partner = zone.user("partner")
    daemon = zone.daemon
    daemon.api(
        "POST",
        "/hosts",
        json={
            "name": "partner-zone",
            "driver": "ec2",
            "cpu": 2,
            "memory": 2 * 1740,
            "options": {
                "region": REGION,
                "endpoint": zone.endpoint,
                "capacity": "m1.small=2",
                "poll_interval": 0.2,
            },
            "secrets": {"access_key_id": partner.key_id, "secret_access_key": partner.secret},
        },
    )
    try:
        wait_monitored(daemon, "partner-zone", timeout=20)
        template = {
            "NAME": "federated",
            "CPU": 1,
            "MEMORY": 1024,
            "EC2": {"AMI": zone.ami, "INSTANCETYPE": "m1.small", "AUTHORIZED_PORTS": "22"},
            "SCHED_REQUIREMENTS": 'HYPERVISOR = "ec2"',
        }
        body = {"template": json.dumps(template), "format": "json"}
        outer = daemon.api("POST", "/vms", json=body)["vms"][0]
        running = wait_state(daemon, outer["id"], "RUNNING", timeout=30)
        assert running["host"] == "partner-zone"

        [inner] = instances_of(
            partner.client, Filters=[{"Name": "tag:stratus:vm", "Values": [str(outer["id"])]}]
        )
        assert inner["InstanceId"] == running["deploy_id"]
        assert inner["State"]["Name"] == "running" and inner["InstanceType"] == "m1.small"
        [group] = partner.client.describe_security_groups(GroupNames=[f"stratus-{outer['id']}"])[
            "SecurityGroups"
        ]
        assert group["IpPermissions"][0]["FromPort"] == 22
        assert zone.vm(inner["InstanceId"])["template"]["DISK"] == {"IMAGE": "tiny"}

        daemon.api("POST", f"/vms/{outer['id']}/terminate")
        wait_state(daemon, outer["id"], "DONE", timeout=30)
        [gone] = instances_of(partner.client, InstanceIds=[inner["InstanceId"]])
        assert gone["State"]["Name"] == "terminated"
        assert partner.client.describe_security_groups()["SecurityGroups"] == []
    finally:
        daemon.api("DELETE", "/hosts/partner-zone")


def test_an_image_whose_checksum_does_not_match_fails_and_frees_its_name(
    zone: Zone,
    file_server: FileServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    partner = zone.user("images")
    content = make_qcow2(tmp_path / "disk.qcow2", "8M").read_bytes()
    url = file_server.serve("/disk.qcow2", content)
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    disk = DiskSpec(0, 7, "golden", "/unused", "qcow2", "OS", False, checksum=wrong, url=url)

    async def call(operation: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(partner.client, operation), **kwargs)

    with pytest.raises(CloudError, match="could not import image golden"):
        asyncio.run(ensure_image(call, disk, poll=0.1, timeout=60))
    name = remote_image_name(disk)
    left = partner.client.describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
    )
    assert left["Images"] == []  # deregistered: a later deploy may try again
    right = replace(disk, checksum="sha256:" + hashlib.sha256(content).hexdigest())
    ami = asyncio.run(ensure_image(call, right, poll=0.1, timeout=60))
    [image] = partner.client.describe_images(ImageIds=[ami])["Images"]
    assert image["State"] == "available" and image["Name"] == remote_image_name(right)
