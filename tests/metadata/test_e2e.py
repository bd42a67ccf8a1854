"""Done when: a guest of the test appliance, booted locally, reads its instance-id,
local-ipv4 and user-data from 169.254.169.254; another guest cannot read them.

A real daemon runs a QEMU VM and an LXC container on one bridge network in a namespace
this module makes, and a QEMU VM on a user network that holds 169.254.169.254 (link-local
addresses), whose connections QEMU relays. Each guest's START_SCRIPT asks the metadata
service the same paths and publishes the answers on its HTTP page; each must show its own.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stratus.model.ec2ids import instance_id
from tests.appliance_support import ensure_appliance
from tests.daemon.daemon import Daemon
from tests.e2e.conftest import end_every_vm, register, wait_for, wait_monitored
from tests.netns import Netns, netns_available, new_netns

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not netns_available(), reason="needs root and iproute2 for namespaces"),
]

# Asks the metadata service until it answers (bounded), then publishes what it read.
START_SCRIPT = """
M=http://169.254.169.254/latest
get() { timeout 5 wget -q -O - "$M/$1" 2>/dev/null; }
n=0
until id=$(get meta-data/instance-id) && [ -n "$id" ]; do
  n=$((n + 1)); [ "$n" -ge 20 ] && break; sleep 1
done
{ echo "instance-id=$id"; echo "local-ipv4=$(get meta-data/local-ipv4)"
  echo "user-data=$(get user-data)"; } > /usr/share/stratus/www/imds.txt
"""
LAB_NET = """
NAME = "lab"
BRIDGE = "imdsbr2"
NETNS = "{netns}"
NETWORK_ADDRESS = "192.168.182.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.182.1"
AR = [ TYPE = "IP4", IP = "192.168.182.100", SIZE = "10" ]
"""
LINK_LOCAL_NET = """
NAME = "linklocal"
VN_MAD = "user"
NETWORK_ADDRESS = "169.254.0.0"
NETWORK_MASK = "255.255.0.0"
GATEWAY = "169.254.0.1"
GUEST_PORTS = "80"
AR = [ TYPE = "IP4", IP = "169.254.0.100", SIZE = "10" ]
"""
GUEST = """
NAME = "{name}"
CPU = 0.5
MEMORY = {memory}
DISK = [ IMAGE = "{image}" ]
NIC = [ NETWORK = "{network}" ]
{os}
CONTEXT = [ NETWORK = "YES", SET_HOSTNAME = "$NAME", START_SCRIPT_BASE64 = "{script}" ]
METADATA = [ USER_DATA = "{user_data}" ]
"""


def guest_template(name: str, image: str, network: str, *, vm: bool) -> str:
    cmdline = ensure_appliance().cmdline
    boot = f'OS = [ KERNEL = "kernel", INITRD = "initrd", KERNEL_CMD = "{cmdline}" ]'
    return GUEST.format(
        name=name,
        memory=256 if vm else 32,
        image=image,
        network=network,
        os=boot if vm else "",
        script=base64.b64encode(START_SCRIPT.encode()).decode(),
        user_data=base64.b64encode(f"hello {name}".encode()).decode(),
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[Netns]:
    with new_netns("e2e-imds") as ns:
        yield ns


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, lab: Netns) -> Iterator[Daemon]:
    appliance = ensure_appliance()
    daemon = Daemon(
        tmp_path_factory.mktemp("imds-e2e"),
        "--monitor-interval", "1", "--schedule-interval", "0.2",
    ).start()  # fmt: skip
    try:
        for name, path, kind in (
            ("rootfs", appliance.rootfs, "OS"),
            ("disk", appliance.disk, "OS"),
            ("kernel", appliance.kernel, "KERNEL"),
            ("initrd", appliance.initrd, "RAMDISK"),
        ):
            register(daemon, name, path, kind)
        daemon.api("POST", "/vnets", json={"template": LAB_NET.format(netns=lab.name)})
        daemon.api("POST", "/vnets", json={"template": LINK_LOCAL_NET})
        box = {"name": "box", "driver": "lxc", "cpu": 2, "memory": "2G"}
        daemon.api("POST", "/hosts", json={**box, "options": {"netns": lab.name}})
        daemon.api(
            "POST", "/hosts", json={"name": "vmm", "driver": "qemu", "cpu": 2, "memory": "2G"}
        )
        wait_monitored(daemon, "box", "vmm")
        yield daemon
    finally:
        try:
            end_every_vm(daemon)
        finally:
            daemon.stop()


def _submit(daemon: Daemon, template: str) -> int:
    vm_id: int = daemon.api("POST", "/vms", json={"template": template})["vms"][0]["id"]
    return vm_id


def _lease(daemon: Daemon, network: str, vm_id: int) -> str:
    leases = daemon.api("GET", f"/vnets/{network}")["leases"]
    [ip] = [item["ip"] for item in leases if item.get("vm_id") == vm_id]
    return str(ip)


def _read_page(fetch: Any) -> dict[str, str] | None:
    text = fetch()
    if not text or "instance-id=i-" not in text:
        return None
    return dict(line.split("=", 1) for line in text.strip().splitlines() if "=" in line)


def _local_page(daemon: Daemon, vm_id: int) -> str | None:
    ports = daemon.api("GET", f"/vms/{vm_id}")["info"].get("ports") or {}
    if "80" not in ports:
        return None
    try:
        answer = httpx.get(f"http://{ports['80']}/imds.txt", timeout=3)
    except httpx.HTTPError:
        return None
    return answer.text if answer.status_code == 200 else None


def test_each_guest_reads_its_own_instance_id_address_and_user_data(
    daemon: Daemon, lab: Netns
) -> None:
    guests = {
        "vm-bridge": (_submit(daemon, guest_template("vm-bridge", "disk", "lab", vm=True)), "lab"),
        "ct-bridge": (
            _submit(daemon, guest_template("ct-bridge", "rootfs", "lab", vm=False)),
            "lab",
        ),
        "vm-user": (
            _submit(daemon, guest_template("vm-user", "disk", "linklocal", vm=True)),
            "linklocal",
        ),
    }
    fetchers = {}
    for name, (vm_id, network) in guests.items():
        ip = _lease(daemon, network, vm_id)
        if network == "lab":
            fetchers[name] = lambda ip=ip: lab.http_get(f"http://{ip}/imds.txt", timeout=2)
        else:
            fetchers[name] = lambda vm_id=vm_id: _local_page(daemon, vm_id)
    pages: dict[str, dict[str, str]] = {}

    def all_published() -> bool:
        for name, fetch in fetchers.items():
            if name not in pages and (page := _read_page(fetch)):
                pages[name] = page
        return len(pages) == len(guests)

    wait_for("every guest publishing what the metadata service told it", all_published, 90, 1)
    for name, (vm_id, network) in guests.items():
        assert pages[name] == {
            "instance-id": instance_id(vm_id),
            "local-ipv4": _lease(daemon, network, vm_id),
            "user-data": f"hello {name}",
        }, name
