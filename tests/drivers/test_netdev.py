"""Bridges, taps and veths made through a HostAccess, inside a namespace the test owns."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from stratus.drivers.access import LocalAccess
from stratus.drivers.netdev import (
    MAX_IFNAME,
    add_tap,
    delete_link,
    ensure_bridge,
    gateway_cidr,
    list_bridges,
    tap_name,
    veth_name,
)
from stratus.model.errors import DriverError
from tests.netns import Netns, new_netns

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ns() -> Iterator[Netns]:
    with new_netns("nd") as made:
        yield made


def _addresses(ns: Netns, dev: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns.name, "-o", "-4", "addr", "show", "dev", dev],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout


def test_device_names_fit_ifnamsiz_and_differ_per_vm_and_nic() -> None:
    names = {tap_name(vm, nic) for vm in (1, 42, 10**9, 10**14) for nic in (0, 1, 9)}
    names |= {veth_name(vm, nic) for vm in (1, 42, 10**9, 10**14) for nic in (0, 1, 9)}
    assert len(names) == 24
    assert all(len(name) <= MAX_IFNAME for name in names)
    assert tap_name(42, 0) == "stp42n0"
    assert veth_name(42, 1) == "sve42n1"


def test_gateway_cidr_takes_a_dotted_mask_or_a_prefix_length() -> None:
    assert gateway_cidr("192.168.150.1", "255.255.255.0") == "192.168.150.1/24"
    assert gateway_cidr("10.1.0.1", "16") == "10.1.0.1/16"
    assert gateway_cidr(None, "255.255.255.0") is None
    with pytest.raises(DriverError, match="NETWORK_MASK"):
        gateway_cidr("10.1.0.1", "255.0.255.0")


async def test_ensure_bridge_creates_it_up_with_the_gateway_and_is_repeatable(ns: Netns) -> None:
    access = LocalAccess()
    await ensure_bridge(access, "sbr0", ns.name, "192.168.150.1/24")
    await ensure_bridge(access, "sbr0", ns.name, "192.168.150.1/24")  # again: no error
    assert ns.links("bridge") == ["sbr0"]
    assert "192.168.150.1/24" in _addresses(ns, "sbr0")
    state = ns.run(["cat", "/sys/class/net/sbr0/operstate"])
    link = subprocess.run(
        ["ip", "-n", ns.name, "-o", "link", "show", "dev", "sbr0"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    assert ",UP" in link, (link, state.stdout)
    assert await list_bridges(access, ns.name) == ["sbr0"]


async def test_concurrent_ensure_bridge_calls_all_succeed(ns: Netns) -> None:
    access = LocalAccess()
    await asyncio.gather(*(ensure_bridge(access, "sbr1", ns.name, "10.9.0.1/24") for _ in range(8)))
    assert ns.links("bridge") == ["sbr1"]


async def test_ensure_bridge_creates_a_missing_namespace() -> None:
    name = f"nd-new-{uuid.uuid4().hex[:8]}"
    made = Netns(name)
    try:
        await ensure_bridge(LocalAccess(), "sbr2", name, None)
        assert made.links("bridge") == ["sbr2"]
        assert "lo" in made.links()
    finally:
        made.delete()


async def test_tap_is_attached_to_the_bridge_and_deleted(ns: Netns) -> None:
    access = LocalAccess()
    await ensure_bridge(access, "sbr3", ns.name, None)
    tap = tap_name(7, 0)
    await add_tap(access, tap, "sbr3", ns.name)
    await add_tap(access, tap, "sbr3", ns.name)  # a retried deploy reuses it
    master = ns.run(["readlink", f"/sys/class/net/{tap}/master"]).stdout
    link = subprocess.run(
        ["ip", "-n", ns.name, "-o", "link", "show", "dev", tap],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    assert "master sbr3" in link, (link, master)
    assert tap in ns.links("tun")
    await delete_link(access, tap, ns.name)
    await delete_link(access, tap, ns.name)  # already gone: success
    assert tap not in ns.links()


async def test_delete_link_in_a_missing_namespace_is_success() -> None:
    await delete_link(LocalAccess(), "sve1n0", f"nd-gone-{uuid.uuid4().hex[:8]}")


async def test_list_bridges_of_a_missing_namespace_is_empty() -> None:
    assert await list_bridges(LocalAccess(), f"nd-gone-{uuid.uuid4().hex[:8]}") == []


async def test_bad_names_are_refused_before_any_command(ns: Netns) -> None:
    with pytest.raises(DriverError, match="network device name"):
        await ensure_bridge(LocalAccess(), "a-bridge-name-too-long", ns.name, None)
    with pytest.raises(DriverError, match="namespace name"):
        await ensure_bridge(LocalAccess(), "sbr4", "bad ns; rm -rf /", None)
