"""Stratus's own ec2 driver with this EC2 API as its endpoint: a zone as another's cloud.

The zone's daemon gets an `ec2` host whose endpoint is its own /ec2 and whose keys are an
EC2 user's: a VM placed on that host is deployed by the driver through RunInstances,
watched through DescribeInstances (tag filters) and ended through TerminateInstances,
exactly as it would be on a partner zone.
"""

from __future__ import annotations

import json

from tests.e2e.conftest import wait_for, wait_state
from tests.ec2api.conftest import REGION, Zone, instances_of


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
        wait_for(
            "partner-zone MONITORED",
            lambda: daemon.api("GET", "/hosts/partner-zone")["state"] == "MONITORED",
            20,
            0.1,
        )
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
