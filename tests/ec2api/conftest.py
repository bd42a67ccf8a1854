"""One real `stratus serve` for the whole directory, with its EC2 API at <endpoint>/ec2.

The zone has a dummy host that takes disk images (label HYPERVISOR=qemu: its instances
run in a fraction of a second), an image "tiny" (a small qcow2), a kernel and an initrd,
and a user network that RunInstances attaches NICs to (`--ec2-network`). Each test makes
its own EC2 users, so tests never see each other's instances.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from stratus.model.ec2ids import ami_id, kernel_id, ramdisk_id
from tests.daemon.daemon import Daemon
from tests.e2e.conftest import register, wait_for, wait_monitored
from tests.imagefiles import cpio_bytes, make_bzimage, make_qcow2

REGION = "stratus-test-1"
ZONE = "stratus-test-1a"
NETWORK = """
NAME = "ec2net"
VN_MAD = "user"
NETWORK_ADDRESS = "192.168.160.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.160.1"
AR = [ TYPE = "IP4", IP = "192.168.160.10", SIZE = "200" ]
"""
#: boto3 without retries: an error answer is asserted once, not retried for seconds
NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=30)


@dataclass
class Account:
    """An EC2 user with one access key, and a boto3 client signing with it."""

    name: str
    key_id: str
    secret: str
    client: Any


@dataclass
class Zone:
    daemon: Daemon
    endpoint: str  # http://127.0.0.1:PORT/ec2
    ami: str  # the "tiny" image
    aki: str
    ari: str
    import_dir: Path
    names: Iterator[int]

    def client(self, key_id: str, secret: str, region: str = REGION) -> Any:
        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=NO_RETRY,
        )

    def user(self, prefix: str = "user", quota: dict[str, Any] | None = None) -> Account:
        """A new user with a key (a unique name per call)."""
        name = f"{prefix}-{next(self.names)}"
        body: dict[str, Any] = {"name": name}
        if quota is not None:
            body["quota"] = quota
        self.daemon.api("POST", "/users", json=body)
        key = self.daemon.api("POST", f"/users/{name}/keys")
        secret = key["secret_access_key"]
        return Account(
            name, key["access_key_id"], secret, self.client(key["access_key_id"], secret)
        )

    def vm(self, instance: str) -> dict[str, Any]:
        """The Stratus VM behind an instance id, through the REST API."""
        vm: dict[str, Any] = self.daemon.api("GET", f"/vms/{int(instance[2:], 16)}")
        return vm

    def vm_count(self) -> int:
        return len(self.daemon.all_vms())


@pytest.fixture(scope="session")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    files = tmp_path_factory.mktemp("ec2files")
    import_dir = tmp_path_factory.mktemp("ec2imports")
    daemon = Daemon(
        tmp_path_factory.mktemp("ec2zone"),
        "--monitor-interval", "0.2",
        "--schedule-interval", "0.05",
        "--shutdown-timeout", "1",
        "--ec2-region", REGION,
        "--ec2-network", "ec2net",
        "--ec2-address-pool", "203.0.113.0/28",
        "--ec2-import-dir", str(import_dir),
    )  # fmt: skip
    daemon.start()
    try:
        tiny = register(daemon, "tiny", make_qcow2(files / "tiny.qcow2", "16M"), "OS")
        kernel = register(daemon, "vmlinuz", make_bzimage(files / "vmlinuz"), "KERNEL")
        (files / "initrd.img").write_bytes(cpio_bytes())
        initrd = register(daemon, "initrd", files / "initrd.img", "RAMDISK")
        daemon.api("POST", "/vnets", json={"template": NETWORK})
        host = {
            "name": "node",
            "driver": "dummy",
            "cpu": 512,
            "memory": "1T",
            "labels": {"HYPERVISOR": "qemu"},
        }
        daemon.api("POST", "/hosts", json=host)
        wait_monitored(daemon, "node", timeout=20)
        endpoint = (daemon.data_dir / "endpoint").read_text().strip() + "/ec2"
        yield Zone(
            daemon=daemon,
            endpoint=endpoint,
            ami=ami_id(tiny["id"]),
            aki=kernel_id(kernel["id"]),
            ari=ramdisk_id(initrd["id"]),
            import_dir=import_dir,
            names=itertools.count(1),
        )
    finally:
        daemon.stop()


@pytest.fixture
def alice(zone: Zone) -> Account:
    return zone.user("alice")


@pytest.fixture
def bob(zone: Zone) -> Account:
    return zone.user("bob")


def instances_of(client: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every instance DescribeInstances returns (all pages), flattened."""
    found = []
    for page in client.get_paginator("describe_instances").paginate(**kwargs):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found


def wait_states(
    client: Any, ids: list[str], state: str, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Poll DescribeInstances until every instance is in `state` (EC2 name)."""

    def check() -> list[dict[str, Any]] | None:
        found = instances_of(client, InstanceIds=ids)
        return found if all(i["State"]["Name"] == state for i in found) else None

    result: list[dict[str, Any]] = wait_for(f"{ids} {state}", check, timeout, 0.1)
    return result


def error_code(call: Callable[[], Any]) -> tuple[str, str]:
    """(code, message) of the ClientError a boto3 call raises."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def run(client: Any, zone: Zone, count: int = 1, **kwargs: Any) -> list[str]:
    """RunInstances of the tiny image; the new instance ids."""
    kwargs.setdefault("InstanceType", "t2.micro")
    reply = client.run_instances(ImageId=zone.ami, MinCount=count, MaxCount=count, **kwargs)
    return [i["InstanceId"] for i in reply["Instances"]]


def settle(seconds: float = 0.3) -> None:
    time.sleep(seconds)
