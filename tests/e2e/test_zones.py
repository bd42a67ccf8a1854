"""Federated zones: two real daemons on loopback. Zone A, with one small local host, bursts
into zone B through B's EC2 API; the VMs run in B as real LXC containers, the image they
need is transferred from A and verified first, and terminating them in A ends them in B.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance_support import ensure_appliance
from tests.daemon.daemon import STRATUS, Daemon
from tests.e2e.conftest import end_every_vm, register, wait_for, wait_monitored, wait_state
from tests.netns import Netns, new_netns

pytestmark = pytest.mark.slow

LAB = """
NAME = "lab"
BRIDGE = "stzb0"
NETNS = "{netns}"
NETWORK_ADDRESS = "192.168.171.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.171.1"
AR = [ TYPE = "IP4", IP = "192.168.171.100", SIZE = "20" ]
"""

# Local in A (an LXC root filesystem), or anywhere a cloud takes it: the EC2 section has
# no AMI, so on a zone the image follows the VM.
HYBRID = """
NAME = "burst"
CPU = 1
MEMORY = 256
DISK = [ IMAGE = "rootfs" ]
EC2 = [ INSTANCETYPE = "m1.small" ]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Netns]:
    with new_netns("zone") as ns:
        yield ns


@pytest.fixture(scope="module")
def zone_b(tmp_path_factory: pytest.TempPathFactory, lab: Netns) -> Iterator[Daemon]:
    """Zone B: an LXC host, a bridge network RunInstances attaches, no images at all."""
    daemon = Daemon(
        tmp_path_factory.mktemp("zone-b"),
        "--monitor-interval",
        "1",
        "--schedule-interval",
        "0.2",
        "--ec2-network",
        "lab",
    ).start()
    try:
        daemon.api("POST", "/vnets", json={"template": LAB.format(netns=lab.name)})
        # room for two m1.small instances (1 vCPU, 1740 MB each), the quota B grants A
        host = {"name": "box", "driver": "lxc", "cpu": 2, "memory": "4G"}
        daemon.api("POST", "/hosts", json={**host, "options": {"netns": lab.name}})
        wait_monitored(daemon, "box")
        yield daemon
    finally:
        try:
            end_every_vm(daemon)
        finally:
            daemon.stop()


@pytest.fixture(scope="module")
def zone_a(tmp_path_factory: pytest.TempPathFactory, zone_b: Daemon) -> Iterator[Daemon]:
    """Zone A: one small local host (room for one VM), the image, and zone B as a host."""
    data_dir = tmp_path_factory.mktemp("zone-a")
    daemon = Daemon(
        data_dir, "--policy", "local-first", "--monitor-interval", "1", "--schedule-interval", "1"
    ).start()
    try:
        register(daemon, "rootfs", ensure_appliance().rootfs, "OS")
        local = {"name": "local", "driver": "dummy", "cpu": 1, "memory": "1G"}
        daemon.api("POST", "/hosts", json={**local, "labels": {"HYPERVISOR": "lxc"}})
        # B grants A a quota of two VMs, through a user and an access key of its own
        zone_b.api("POST", "/users", json={"name": "zone-a", "quota": {"vms": 2}})
        key = zone_b.api("POST", "/users/zone-a/keys")
        secret_file = data_dir / "zone-b.secret"
        secret_file.write_text(key["secret_access_key"] + "\n")
        cli(
            daemon,
            "zone",
            "add",
            "zone-b",
            "--endpoint",
            f"{zone_b.endpoint}/ec2",
            "--access-key",
            key["access_key_id"],
            "--secret-file",
            str(secret_file),
            "--capacity",
            "m1.small=2",
        )
        wait_monitored(daemon, "local", "zone-b")
        yield daemon
    finally:
        try:
            end_every_vm(daemon)
        finally:
            daemon.stop()


def cli(daemon: Daemon, *args: str) -> str:
    env = {"STRATUS_URL": daemon.endpoint, "STRATUS_TOKEN": daemon.token}
    done = subprocess.run(
        [STRATUS, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _vms_of(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {vm["name"]: vm for vm in daemon.all_vms()}


def test_a_bursts_into_b_where_the_vms_really_run_and_terminating_in_a_ends_them_in_b(
    zone_a: Daemon, zone_b: Daemon, lab: Netns
) -> None:
    assert zone_b.api("GET", "/images")["items"] == []  # B has no image yet
    created = zone_a.api("POST", "/vms", json={"template": HYBRID, "count": 3})
    ids = [vm["id"] for vm in created["vms"]]
    vms = [wait_state(zone_a, vm_id, "RUNNING", timeout=180) for vm_id in ids]
    assert sorted(vm["host"] for vm in vms) == ["local", "zone-b", "zone-b"]

    # the image was transferred to B and verified there before the VMs ran
    image_a = zone_a.api("GET", "/images/rootfs")
    (image_b,) = zone_b.api("GET", "/images")["items"]
    assert image_b["checksum"] == image_a["checksum"]
    assert image_b["name"].startswith("rootfs-")
    assert image_b["state"] in ("READY", "USED")

    # B's own view: two VMs of user zone-a, RUNNING as containers on B's LXC host
    in_b = [vm for vm in zone_b.all_vms() if vm["state"] != "DONE"]
    assert len(in_b) == 2
    assert {vm["state"] for vm in in_b} == {"RUNNING"}
    assert {vm["host"] for vm in in_b} == {"box"}
    for vm in in_b:
        shown = zone_b.api("GET", f"/vms/{vm['id']}")
        address = next(
            item["ip"]
            for item in zone_b.api("GET", "/vnets/lab")["leases"]
            if item["vm_id"] == shown["id"]
        )
        page = wait_for(
            f"B's container {vm['id']} answering",
            lambda a=address: lab.http_get(f"http://{a}/"),
            60,
        )
        assert address in page  # the appliance's page names its own address
    # A's cloud VMs know their instances in B
    burst = [vm for vm in vms if vm["host"] == "zone-b"]
    assert {vm["deploy_id"] for vm in burst} <= {f"i-{vm['id']:017x}" for vm in in_b}

    for vm_id in ids:
        zone_a.api("POST", f"/vms/{vm_id}/terminate")
    for vm_id in ids:
        wait_state(zone_a, vm_id, "DONE", timeout=120)
    wait_for(
        "B's VMs ended",
        lambda: all(zone_b.api("GET", f"/vms/{vm['id']}")["state"] == "DONE" for vm in in_b),
        60,
    )


def test_a_zone_refuses_more_than_its_quota_and_a_fails_over_or_waits(
    zone_a: Daemon, zone_b: Daemon
) -> None:
    # Bursting three VMs when B grants two and A's local host holds one: all three run
    # (one local, two in B); the fourth waits in A for room, with the reason.
    created = zone_a.api("POST", "/vms", json={"template": HYBRID, "count": 4})
    ids = [vm["id"] for vm in created["vms"]]
    running = []
    for vm_id in ids[:3]:
        running.append(wait_state(zone_a, vm_id, "RUNNING", timeout=180))
    waiting = zone_a.api("GET", f"/vms/{ids[3]}")
    assert waiting["state"] == "PENDING"
    assert "0/2 hosts" in waiting["reason"]
    for vm_id in ids:
        zone_a.api("POST", f"/vms/{vm_id}/terminate")
    for vm_id in ids:
        wait_state(zone_a, vm_id, "DONE", timeout=120)


def test_the_zone_secret_never_shows_in_a(zone_a: Daemon) -> None:
    secret = (Path(zone_a.data_dir) / "zone-b.secret").read_text().strip()
    assert secret not in str(zone_a.api("GET", "/hosts/zone-b"))
    assert secret not in (zone_a.data_dir / "stratus.log").read_text()
    assert secret not in cli(zone_a, "zone", "list", "--json")


def test_an_image_marked_prestage_is_copied_to_the_zone_before_any_vm_needs_it(
    zone_a: Daemon, zone_b: Daemon
) -> None:
    image = register(zone_a, "golden", ensure_appliance().rootfs, "OS")
    cli(zone_a, "image", "prestage", "golden")
    assert zone_a.api("GET", "/images/golden")["prestage"] is True

    def staged() -> dict[str, Any] | None:
        found = [
            i for i in zone_b.api("GET", "/images")["items"] if i["name"].startswith("golden-")
        ]
        return found[0] if found and found[0]["state"] in ("READY", "USED") else None

    copy = wait_for("the pre-staged copy in B", staged, 120)
    assert copy["checksum"] == image["checksum"]  # verified by B on import
    assert not [vm for vm in zone_a.all_vms() if vm["state"] != "DONE"]  # no VM needed it
