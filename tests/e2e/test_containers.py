"""Twenty containers through the whole stack: one root filesystem image, a bridge network
in a namespace the test makes, an LXC host; each answers with its own context."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.appliance_support import ensure_appliance
from tests.daemon.daemon import Daemon
from tests.e2e.conftest import end_every_vm, register, wait_for, wait_monitored
from tests.netns import Netns, new_netns

pytestmark = pytest.mark.slow

COUNT = 20
CONTAINER = """
NAME = "ct"
CPU = 0.05
MEMORY = 32
DISK = [ IMAGE = "rootfs" ]
NIC = [ NETWORK = "lab" ]
CONTEXT = [ NETWORK = "YES", SET_HOSTNAME = "ct-$VMID" ]
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Netns]:
    with new_netns("e2e") as ns:
        yield ns


@pytest.fixture(scope="module")
def lxc_cloud(tmp_path_factory: pytest.TempPathFactory, lab: Netns) -> Iterator[Daemon]:
    daemon = Daemon(
        tmp_path_factory.mktemp("lxc"), "--monitor-interval", "1", "--schedule-interval", "0.2"
    ).start()
    try:
        register(daemon, "rootfs", ensure_appliance().rootfs, "OS")
        network = f"""
NAME = "lab"
BRIDGE = "stbr0"
NETNS = "{lab.name}"
NETWORK_ADDRESS = "192.168.170.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.170.1"
AR = [ TYPE = "IP4", IP = "192.168.170.100", SIZE = "50" ]
"""
        daemon.api("POST", "/vnets", json={"template": network})
        host = {"name": "box", "driver": "lxc", "cpu": 2, "memory": "2G"}
        daemon.api("POST", "/hosts", json={**host, "options": {"netns": lab.name}})
        wait_monitored(daemon, "box")
        yield daemon
    finally:
        try:
            end_every_vm(daemon)
        finally:
            daemon.stop()


def test_twenty_containers_from_one_image_each_answer_with_their_own_context(
    lxc_cloud: Daemon, lab: Netns
) -> None:
    start = time.monotonic()
    created = lxc_cloud.api("POST", "/vms", json={"template": CONTAINER, "count": COUNT})
    ids = [vm["id"] for vm in created["vms"]]
    leases = {}
    for item in lxc_cloud.api("GET", "/vnets/lab")["leases"]:
        leases[item["vm_id"]] = item["ip"]
    assert sorted(leases) == sorted(ids)  # one address each, taken at submit

    answers: dict[int, dict[str, object]] = {}

    def all_answer() -> bool:
        for vm_id in ids:
            if vm_id not in answers:
                page = lab.http_get(f"http://{leases[vm_id]}/", timeout=2)
                if page:
                    answers[vm_id] = json.loads(page)
        return len(answers) == COUNT

    wait_for(f"{COUNT} containers answering", all_answer, 60, interval=0.2)
    elapsed = time.monotonic() - start
    for vm_id in ids:
        assert answers[vm_id]["name"] == f"ct-{vm_id}"
        assert answers[vm_id]["ip"] == leases[vm_id]
    assert elapsed < 30, f"{COUNT} containers took {elapsed:.1f} s"
    print(f"\n{COUNT} containers from submit to all answering: {elapsed:.1f} s")
