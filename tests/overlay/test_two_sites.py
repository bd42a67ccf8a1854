"""Two sites joined by the overlay, through a real `stratus serve` and the `stratus` CLI.

Site A is the network's namespace: the bridge, an LXC container of the test appliance (the
"local instance", serving HTTP at its private address) deployed by the daemon, and the hub
the daemon starts there. Site B is another namespace, reached from A only over a veth
"underlay" (10.231.0.0/30); the remote instance there brings up the configuration that
`stratus vnet overlay peer add` printed, with wg-quick, as a remote machine would.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.appliance_support import ensure_appliance
from tests.daemon.daemon import STRATUS, Daemon
from tests.e2e.conftest import end_every_vm, register, wait_for, wait_monitored, wait_state
from tests.moto_server import MOTO_CREDENTIALS, ec2_host, running_moto
from tests.netns import Netns, netns_available, new_netns
from tests.overlay.sites import (
    Capture,
    connect_sites,
    openvpn_up,
    stop_processes,
    wg_quick_up,
)

TOOLS = ("wireguard-go", "wg-quick", "openvpn", "tcpdump", "lxc-start")
MISSING = [tool for tool in TOOLS if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin") is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not netns_available(), reason="needs root and iproute2 (namespaces)"),
    pytest.mark.skipif(bool(MISSING), reason=f"missing {MISSING}: run tools/bootstrap.sh net virt"),
]

SUBNET, GATEWAY = "192.168.171.0/24", "192.168.171.1"
PORT = 51820
NETWORK = """
NAME = "lan"
BRIDGE = "sovbr0"
NETNS = "{netns}"
NETWORK_ADDRESS = "192.168.171.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.171.1"
AR = [ TYPE = "IP4", IP = "192.168.171.100", SIZE = "20" ]
"""
CONTAINER = """
NAME = "web"
CPU = 0.1
MEMORY = 64
DISK = [ IMAGE = "rootfs" ]
NIC = [ NETWORK = "lan" ]
CONTEXT = [ NETWORK = "YES", SET_HOSTNAME = "web" ]
"""


class Sites:
    """Site A (the network's namespace), site B (a remote machine), and the underlay."""

    def __init__(self, a: Netns, b: Netns, hub_ip: str) -> None:
        self.a, self.b, self.hub_ip = a, b, hub_ip


@pytest.fixture(scope="module")
def sites() -> Iterator[Sites]:
    with new_netns("ova") as a, new_netns("ovb") as b:
        try:
            hub_ip, _ = connect_sites(a, b, "ula0", "ulb0", "10.231.0.0/30")
            yield Sites(a, b, hub_ip)
        finally:
            stop_processes(b)
            stop_processes(a)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, sites: Sites) -> Iterator[Daemon]:
    """A daemon with network `lan` in site A and a container `web` answering on it."""
    data_dir = tmp_path_factory.mktemp("overlay")
    daemon = Daemon(data_dir, "--monitor-interval", "1", "--schedule-interval", "0.2").start()
    try:
        register(daemon, "rootfs", ensure_appliance().rootfs, "OS")
        daemon.api("POST", "/vnets", json={"template": NETWORK.format(netns=sites.a.name)})
        host = {"name": "box", "driver": "lxc", "cpu": 2, "memory": "2G"}
        daemon.api("POST", "/hosts", json={**host, "options": {"netns": sites.a.name}})
        wait_monitored(daemon, "box")
        daemon.api("POST", "/vms", json={"template": CONTAINER})
        yield daemon
    finally:
        try:
            if daemon.client is not None:
                daemon.client.delete("/vnets/lan/overlay")
            end_every_vm(daemon)
        finally:
            daemon.stop()


@pytest.fixture(scope="module")
def web(daemon: Daemon, sites: Sites) -> str:
    """The local instance's private address, once it answers inside site A."""
    lease = next(item for item in daemon.api("GET", "/vnets/lan")["leases"] if item["vm_id"])
    ip = str(lease["ip"])
    wait_for("web answering in site A", lambda: sites.a.http_get(f"http://{ip}/", 2), 60, 0.2)
    return ip


def stratus(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real CLI against the daemon."""
    argv = [STRATUS, "--data-dir", str(daemon.data_dir), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert done.returncode == 0, f"stratus {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def overlay(daemon: Daemon, sites: Sites, web: str) -> dict[str, Any]:
    stratus(daemon, "vnet", "overlay", "enable", "lan", "--endpoint", f"{sites.hub_ip}:{PORT}")
    shown: dict[str, Any] = json.loads(
        stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout
    )
    return shown


def _private_key(config: str) -> str:
    return next(
        line.split("=", 1)[1].strip()
        for line in config.splitlines()
        if line.startswith("PrivateKey")
    )


def test_remote_instance_reaches_local_http_through_the_tunnel_and_the_underlay_sees_only_udp(
    daemon: Daemon, sites: Sites, web: str, overlay: dict[str, Any], tmp_path: Path
) -> None:
    assert overlay["hub"]["up"], overlay
    assert overlay["kind"] == "wireguard" and overlay["subnet"] == SUBNET
    out = tmp_path / "laptop.conf"
    stratus(daemon, "vnet", "overlay", "peer", "add", "lan", "laptop", "--out", str(out))
    assert out.stat().st_mode & 0o777 == 0o600
    config = out.read_text()
    assert f"Endpoint = {sites.hub_ip}:{PORT}" in config and f"AllowedIPs = {SUBNET}" in config
    with Capture(sites.b, "ulb0", tmp_path / "underlay.pcap") as capture:
        wg_quick_up(sites.b, config, tmp_path, f"ovb{os.getpid() % 100000}")
        page = wait_for(
            "web through the tunnel", lambda: sites.b.http_get(f"http://{web}/", 2), 20, 0.2
        )
    answer = json.loads(page)
    assert answer["name"] == "web" and answer["ip"] == web

    packets = capture.packets()
    assert packets, "the capture on the underlay saw nothing"
    for packet in packets:
        assert packet.proto == 17, f"not UDP on the underlay: {packet}"
        assert PORT in (packet.sport, packet.dport), f"not the tunnel's port: {packet}"
        assert {packet.src, packet.dst} == {"10.231.0.1", "10.231.0.2"}, str(packet)

    shown = json.loads(stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout)
    laptop = next(peer for peer in shown["peers"] if peer["name"] == "laptop")
    assert laptop["kind"] == "vm" and laptop["vm_id"] is None
    assert laptop["status"]["latest_handshake"] and laptop["status"]["rx_bytes"] > 0
    held = {
        item["ip"] for item in daemon.api("GET", "/vnets/lan")["leases"] if item["state"] == "held"
    }
    assert {laptop["address"], shown["hub_address"]} <= held  # real leases: no VM can take them
    secret = _private_key(config)
    assert secret not in json.dumps(shown)
    assert secret not in stratus(daemon, "vnet", "overlay", "show", "lan").stdout
    assert secret not in (daemon.data_dir / "daemon.out").read_text()


@contextmanager
def remote_site(sites: Sites, prefix: str, link: str, dev: str) -> Iterator[Netns]:
    """Another namespace on a link of its own to site A, routed to the hub's endpoint."""
    with new_netns(prefix) as ns:
        try:
            a_ip, _ = connect_sites(sites.a, ns, f"{dev}a", f"{dev}r", link)
            route = ns.run(["ip", "route", "add", "10.231.0.0/30", "via", a_ip])
            assert route.returncode == 0, route.stderr
            yield ns
        finally:
            stop_processes(ns)


def test_gateway_mode_joins_a_whole_subnet_behind_a_site_gateway(
    daemon: Daemon, sites: Sites, web: str, overlay: dict[str, Any], tmp_path: Path
) -> None:
    config = stratus(
        daemon, "vnet", "overlay", "peer", "add", "lan", "branch", "--site-subnet", "10.200.0.0/24"
    ).stdout
    assert "Address" not in config and f"AllowedIPs = {SUBNET}" in config
    with remote_site(sites, "ovg", "10.231.0.4/30", "ulg") as gateway, new_netns("ovh") as behind:
        try:
            connect_sites(gateway, behind, "lan0", "eth0", "10.200.0.0/24")
            for ns, argv in (
                (gateway, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]),
                (behind, ["ip", "route", "add", "default", "via", "10.200.0.1"]),
            ):
                assert ns.run(argv).returncode == 0
            wg_quick_up(gateway, config, tmp_path, f"ovg{os.getpid() % 100000}")
            page = wait_for(
                "web from behind the gateway",
                lambda: behind.http_get(f"http://{web}/", 2),
                20,
                0.2,
            )
            assert json.loads(page)["name"] == "web"
        finally:
            stop_processes(behind)
    shown = json.loads(stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout)
    branch = next(peer for peer in shown["peers"] if peer["name"] == "branch")
    assert branch["kind"] == "site" and branch["allowed_ips"] == "10.200.0.0/24"
    overlapping = stratus(
        daemon, "vnet", "overlay", "peer", "add", "lan", "annex", "--site-subnet",
        "10.200.0.128/25", check=False,
    )  # fmt: skip
    assert overlapping.returncode != 0 and "overlaps 10.200.0.0/24" in overlapping.stderr


def test_a_removed_peer_is_cut_off_and_its_address_given_back(
    daemon: Daemon, sites: Sites, web: str, overlay: dict[str, Any], tmp_path: Path
) -> None:
    config = stratus(daemon, "vnet", "overlay", "peer", "add", "lan", "tablet").stdout
    address = next(line for line in config.splitlines() if line.startswith("Address"))
    ip = address.split("=")[1].strip().split("/")[0]
    with remote_site(sites, "ovt", "10.231.0.8/30", "ult") as tablet:
        wg_quick_up(tablet, config, tmp_path, f"ovt{os.getpid() % 100000}")
        wait_for("web from the tablet", lambda: tablet.http_get(f"http://{web}/", 2), 20, 0.2)
        stratus(daemon, "vnet", "overlay", "peer", "remove", "lan", "tablet")
        assert tablet.http_get(f"http://{web}/", 2) is None
    shown = json.loads(stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout)
    assert "tablet" not in {peer["name"] for peer in shown["peers"]}
    assert ip not in {item["ip"] for item in daemon.api("GET", "/vnets/lan")["leases"]}


FAR_VM = """
NAME = "far"
CPU = 0.5
MEMORY = 128
NIC = [ NETWORK = "lan" ]
EC2 = [ AMI = "ami-00bafcb5", INSTANCETYPE = "m1.small" ]
REQUIREMENTS = "PUBLIC_CLOUD = \\"YES\\""
CONTEXT = [ SET_HOSTNAME = "far" ]
"""


@pytest.fixture(scope="module")
def cloud(daemon: Daemon) -> Iterator[Any]:
    """An `ec2` host (labelled PUBLIC_CLOUD=YES) on moto's EC2 API on loopback; the boto3
    client the test reads instances' user-data with."""
    with running_moto() as endpoint:
        daemon.api("POST", "/hosts", json=ec2_host("cloud", endpoint))
        wait_monitored(daemon, "cloud")
        yield boto3.client(
            "ec2",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id=MOTO_CREDENTIALS["access_key_id"],
            aws_secret_access_key=MOTO_CREDENTIALS["secret_access_key"],
        )


def test_a_vm_placed_in_a_cloud_gets_its_tunnel_through_user_data_and_loses_it_when_done(
    daemon: Daemon, sites: Sites, web: str, overlay: dict[str, Any], cloud: Any, tmp_path: Path
) -> None:
    vm_id = daemon.api("POST", "/vms", json={"template": FAR_VM})["vms"][0]["id"]
    vm = wait_state(daemon, vm_id, "RUNNING", timeout=60)
    assert vm["host"] == "cloud"
    lease = next(
        item for item in daemon.api("GET", "/vnets/lan")["leases"] if item["vm_id"] == vm_id
    )
    shown = json.loads(stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout)
    peer = next(p for p in shown["peers"] if p["vm_id"] == vm_id)
    assert peer["name"] == f"vm-{vm_id}-nic0" and peer["allowed_ips"] == f"{lease['ip']}/32"

    attribute = cloud.describe_instance_attribute(InstanceId=vm["deploy_id"], Attribute="userData")
    user_data = yaml.safe_load(base64.b64decode(attribute["UserData"]["Value"]))
    entry = next(e for e in user_data["write_files"] if e["path"] == "/etc/wireguard/stratus.conf")
    assert entry["permissions"] == "0600" and ["wg-quick", "up", "stratus"] in user_data["runcmd"]
    config = base64.b64decode(entry["content"]).decode()
    assert f"Address = {lease['ip']}/24" in config and peer["public_key"] not in config

    with remote_site(sites, "ovf", "10.231.0.12/30", "ulf") as far:
        wg_quick_up(far, config, tmp_path, f"ovf{os.getpid() % 100000}")
        page = wait_for("web from the cloud VM", lambda: far.http_get(f"http://{web}/", 2), 20, 0.2)
        assert json.loads(page)["name"] == "web"

        daemon.api("POST", f"/vms/{vm_id}/terminate", json={"hard": True})
        wait_state(daemon, vm_id, "DONE", timeout=60)

        def peer_gone() -> bool:
            shown = json.loads(stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout)
            return all(p["vm_id"] != vm_id for p in shown["peers"])

        wait_for("the VM's peer leaving the hub", peer_gone, 10, 0.2)
        assert far.http_get(f"http://{web}/", 1) is None
    hub = sites.a.run(["sh", "-c", "wg show all allowed-ips"]).stdout
    assert f"{lease['ip']}/32" not in hub


def test_openvpn_overlay_carries_http_as_udp_to_its_port_after_wireguard_is_disabled(
    daemon: Daemon, sites: Sites, web: str, overlay: dict[str, Any], tmp_path: Path
) -> None:
    refused = stratus(daemon, "vnet", "overlay", "enable", "lan", "--endpoint", "10.231.0.1:1194",
                      check=False)  # fmt: skip
    assert refused.returncode != 0 and "already has an overlay" in refused.stderr
    before = json.loads(stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout)
    stratus(daemon, "vnet", "overlay", "disable", "lan")
    held = {i["ip"] for i in daemon.api("GET", "/vnets/lan")["leases"] if i["state"] == "held"}
    assert before["hub_address"] not in held and not held  # the hub's and peers' addresses
    assert sites.a.links("tun") == []  # the WireGuard hub is gone (wireguard-go with it)

    stratus(daemon, "vnet", "overlay", "enable", "lan", "--kind", "openvpn", "--endpoint",
            f"{sites.hub_ip}:1194")  # fmt: skip
    config = stratus(daemon, "vnet", "overlay", "peer", "add", "lan", "road").stdout
    assert f"remote {sites.hub_ip} 1194" in config and "<key>" in config
    site_refused = stratus(daemon, "vnet", "overlay", "peer", "add", "lan", "x", "--site-subnet",
                           "10.9.0.0/24", check=False)  # fmt: skip
    assert "wireguard overlays only" in site_refused.stderr
    with remote_site(sites, "ovo", "10.231.0.16/30", "ulo") as road:
        with Capture(road, "ulor", tmp_path / "openvpn.pcap") as capture:
            openvpn_up(road, config, tmp_path, "road")
            page = wait_for("web over OpenVPN", lambda: road.http_get(f"http://{web}/", 2), 30, 0.2)
        assert json.loads(page)["name"] == "web"

        def road_connected() -> dict[str, Any] | None:
            shown = json.loads(stratus(daemon, "vnet", "overlay", "show", "lan", "--json").stdout)
            road = next(peer for peer in shown["peers"] if peer["name"] == "road")
            return shown if road["status"] and road["status"]["rx_bytes"] > 0 else None

        shown = wait_for("the hub reporting road", road_connected, 10, 0.3)  # status: every 1 s
    assert shown["kind"] == "openvpn" and shown["hub"]["up"], shown["hub"]
    packets = capture.packets()
    assert packets and all(p.proto == 17 and 1194 in (p.sport, p.dport) for p in packets), [
        str(p) for p in packets if p.proto != 17 or 1194 not in (p.sport, p.dport)
    ]
    key = config.split("<key>")[1].split("</key>")[0].strip()
    assert key not in json.dumps(shown) and key not in (daemon.data_dir / "daemon.out").read_text()
