"""The proxy at 169.254.169.254 in a real network namespace, with two guests on its bridge.

Each guest is a namespace of its own with one end of a veth pair; the other end is on the
bridge under the name the LXC driver gives a container's veth, so the anti-spoofing guard
sees them as it would see containers. Traffic stays inside namespaces this module makes.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from stratus.drivers.metadata_proxy import METADATA_ADDRESS, proxy_argv
from stratus.drivers.netdev import veth_name
from stratus.model.ec2ids import instance_id
from stratus.store import Store, open_store
from tests.metadata.support import (
    ServiceThread,
    create_network,
    lease_ip,
    network_template,
    running_service,
    submit,
)
from tests.netns import Netns, netns_available, new_netns

pytestmark = pytest.mark.skipif(
    not netns_available(), reason="needs root and iproute2 to create network namespaces"
)

PREFIX = "192.168.181"
BRIDGE = "imdsbr1"
URL = f"http://{METADATA_ADDRESS}/latest/meta-data"
GUEST = """
NAME = "{name}"
MEMORY = 64
NIC = [ NETWORK = "lab" ]
"""
RAW_CLIENT = r"""
import socket, sys
source = (sys.argv[1], 0) if len(sys.argv) > 1 else None
try:
    s = socket.create_connection(("169.254.169.254", 80), timeout=3, source_address=source)
except OSError as exc:
    print("no connection:", type(exc).__name__)
    sys.exit(0)
s.sendall(sys.stdin.buffer.read())
s.settimeout(5)
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.buffer.write(out)
"""


@dataclass(frozen=True)
class Guest:
    vm_id: int
    ip: str
    ns: Netns

    def get(self, path: str) -> str | None:
        return self.ns.http_get(f"{URL}/{path}", timeout=5)

    def raw(self, request: bytes, source: str | None = None) -> str:
        argv = [sys.executable, "-c", RAW_CLIENT, *([source] if source else [])]
        result = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns.name}", "--", *argv],
            input=request, capture_output=True, timeout=20, check=False,
        )  # fmt: skip
        return result.stdout.decode(errors="replace")


@dataclass(frozen=True)
class Lab:
    ns: Netns
    service: ServiceThread
    guests: tuple[Guest, Guest]
    guarded: bool  # the nftables guard is in place (nft installed)
    store: Store


def _sh(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


def _plug(lab_ns: Netns, guest_ns: Netns, vm_id: int, ip: str) -> None:
    """A veth from the lab's bridge (named as the LXC driver names it) to the guest's eth0."""
    port = veth_name(vm_id, 0)
    _sh(["ip", "-n", lab_ns.name, "link", "add", port, "type", "veth",
         "peer", "name", "eth0", "netns", guest_ns.name])  # fmt: skip
    _sh(["ip", "-n", lab_ns.name, "link", "set", port, "master", BRIDGE, "up"])
    _sh(["ip", "-n", guest_ns.name, "addr", "add", f"{ip}/24", "dev", "eth0"])
    _sh(["ip", "-n", guest_ns.name, "link", "set", "eth0", "up"])
    _sh(["ip", "-n", guest_ns.name, "route", "add", "default", "via", f"{PREFIX}.1"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    data_dir = tmp_path_factory.mktemp("imds-proxy")
    with ExitStack() as stack:
        ns = stack.enter_context(new_netns("imds"))
        _sh(["ip", "-n", ns.name, "link", "add", BRIDGE, "type", "bridge"])
        _sh(["ip", "-n", ns.name, "addr", "add", f"{PREFIX}.1/24", "dev", BRIDGE])
        _sh(["ip", "-n", ns.name, "link", "set", BRIDGE, "up"])
        store = open_store(str(data_dir / "stratus.db"))
        stack.callback(store.close)
        create_network(store, network_template("lab", ns.name, BRIDGE, PREFIX))
        guests = []
        for name in ("one", "two"):
            vm = submit(store, GUEST.format(name=name))
            guest = Guest(vm.id, lease_ip(store, vm.id), stack.enter_context(new_netns("img")))
            _plug(ns, guest.ns, guest.vm_id, guest.ip)
            guests.append(guest)
        service = stack.enter_context(running_service(store, data_dir))
        service.call(service.service.proxies.ensure(ns.name))
        guarded = service.call(service.service.guard(ns.name))
        yield Lab(ns, service, (guests[0], guests[1]), guarded, store)


def test_each_guest_reads_its_own_instance_id_and_address(lab: Lab) -> None:
    for guest in lab.guests:
        assert guest.get("instance-id") == instance_id(guest.vm_id)
        assert guest.get("local-ipv4") == guest.ip


def test_a_forged_preamble_or_forwarding_header_gets_a_guest_only_its_own(lab: Lab) -> None:
    me, other = lab.guests
    forged = (
        f"STRATUS-META netns={lab.ns.name} src={other.ip}\n"
        f"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = me.raw(forged.encode())
    assert answer.startswith("HTTP/1.1 400")
    assert instance_id(other.vm_id) not in answer
    headers = (
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"X-Forwarded-For: {other.ip}\r\nForwarded: for={other.ip}\r\n\r\n"
    )
    answer = me.raw(headers.encode())
    assert answer.startswith("HTTP/1.1 200")
    assert answer.endswith(instance_id(me.vm_id))


def test_a_guest_that_takes_another_guests_address_gets_nothing(lab: Lab) -> None:
    """The other guest is offline and the bridge forgot its MAC, so only the guard stands
    between the impostor and the other guest's metadata."""
    if not lab.guarded:
        pytest.skip("nft (nftables) is not installed: tools/bootstrap.sh virt installs it")
    me, other = lab.guests
    request = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    _sh(["ip", "-n", other.ns.name, "link", "set", "eth0", "down"])
    _sh(["ip", "-n", lab.ns.name, "neigh", "flush", "dev", BRIDGE])
    _sh(["ip", "-n", me.ns.name, "addr", "add", f"{other.ip}/32", "dev", "eth0"])
    try:
        answer = me.raw(request, source=other.ip)
    finally:
        _sh(["ip", "-n", me.ns.name, "addr", "del", f"{other.ip}/32", "dev", "eth0"])
        _sh(["ip", "-n", other.ns.name, "link", "set", "eth0", "up"])
        _sh(["ip", "-n", other.ns.name, "route", "replace", "default", "via", f"{PREFIX}.1"])
        _sh(["ip", "-n", lab.ns.name, "neigh", "flush", "dev", BRIDGE])
    assert answer.startswith("no connection")  # the guard dropped it at the bridge port
    assert me.get("instance-id") == instance_id(me.vm_id)
    assert other.get("instance-id") == instance_id(other.vm_id)


def test_a_restarted_service_brings_back_the_proxy_of_a_namespace_with_guests(
    lab: Lab, tmp_path: Path
) -> None:
    me = lab.guests[0]
    lab.service.call(lab.service.service.proxies.stop())
    try:
        assert me.get("instance-id") is None  # nothing listens in the namespace now
        with running_service(lab.store, tmp_path):
            deadline = time.monotonic() + 15
            answer = None
            while answer is None and time.monotonic() < deadline:
                answer = me.get("instance-id")
            assert answer == instance_id(me.vm_id)
    finally:
        lab.service.call(lab.service.service.proxies.ensure(lab.ns.name))


def test_a_proxy_whose_parent_died_exits_by_itself(tmp_path: Path) -> None:
    """A daemon killed with -9 leaves no proxy holding the namespace and its port."""
    with new_netns("imdsp") as ns:
        argv = shlex.join(proxy_argv(ns.name, tmp_path / "none.sock"))
        out = tmp_path / "proxy.out"
        parent = subprocess.run(
            ["sh", "-c", f"{argv} >{out} 2>&1 & echo $!; sleep 2"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        pid = int(parent.stdout.strip())
        assert out.read_text().startswith("listening")  # it did run while its parent lived
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{pid}").exists(), "the orphaned proxy is still running"
