"""A real `stratus serve` with the appliance registered, a user network and QEMU hosts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.appliance_support import ensure_appliance
from tests.daemon.daemon import Daemon

USER_NET = """
NAME = "usernet"
VN_MAD = "user"
NETWORK_ADDRESS = "192.168.150.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.150.1"
GUEST_PORTS = "80"
AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "10" ]
"""

VM_TEMPLATE = """
NAME = "{name}"
CPU = 0.5
MEMORY = 256
DISK = [ IMAGE = "appliance" ]
NIC = [ NETWORK = "usernet" ]
OS = [ KERNEL = "appliance-kernel", INITRD = "appliance-initrd", KERNEL_CMD = "{cmdline}" ]
CONTEXT = [ NETWORK = "YES", SET_HOSTNAME = "$NAME", TOKEN = "YES"{extra} ]
"""


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout} s (last: {last!r})")


def wait_monitored(daemon: Daemon, *names: str, timeout: float = 30) -> None:
    """Wait until each named host is MONITORED (probed and schedulable)."""
    for name in names:
        wait_for(
            f"host {name} MONITORED",
            lambda n=name: daemon.api("GET", f"/hosts/{n}")["state"] == "MONITORED",
            timeout,
        )


def wait_state(daemon: Daemon, vm_id: int, state: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        vm: dict[str, Any] = daemon.api("GET", f"/vms/{vm_id}")
        if vm["state"] == "FAILED" and state != "FAILED":
            raise AssertionError(f"VM {vm_id} FAILED: {vm['reason']}")
        return vm if vm["state"] == state else None

    result: dict[str, Any] = wait_for(f"VM {vm_id} reaching {state}", check, timeout)
    return result


def guest_page(address: str, timeout: float = 60) -> dict[str, Any]:
    """The appliance's JSON answer at 127.0.0.1:PORT, once it answers."""

    def fetch() -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"http://{address}/", timeout=3)
            return answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    page: dict[str, Any] = wait_for(f"the guest answering on {address}", fetch, timeout)
    return page


def register(daemon: Daemon, name: str, path: Path, kind: str) -> dict[str, Any]:
    daemon.api("POST", "/images", json={"name": name, "path": str(path), "type": kind})

    def ready() -> dict[str, Any] | None:
        image: dict[str, Any] = daemon.api("GET", f"/images/{name}")
        if image["state"] == "ERROR":
            raise AssertionError(f"image {name}: {image['reason']}")
        return image if image["state"] in ("READY", "USED") else None

    image: dict[str, Any] = wait_for(f"image {name} READY", ready, 60)
    return image


@contextmanager
def cloud_daemon(data_dir: Path, *args: str) -> Iterator[Daemon]:
    """A daemon with the appliance images, network `usernet`, hosts qemu-a and qemu-b;
    whatever VMs are left at the end are ended, so no QEMU outlives it."""
    appliance = ensure_appliance()
    daemon = Daemon(data_dir, "--monitor-interval", "1", "--schedule-interval", "0.5", *args)
    daemon.start()
    try:
        register(daemon, "appliance", appliance.disk, "OS")
        register(daemon, "appliance-kernel", appliance.kernel, "KERNEL")
        register(daemon, "appliance-initrd", appliance.initrd, "RAMDISK")
        daemon.api("POST", "/vnets", json={"template": USER_NET})
        for name in ("qemu-a", "qemu-b"):
            host = {"name": name, "driver": "qemu", "cpu": 2, "memory": "2G"}
            daemon.api("POST", "/hosts", json=host)
        wait_monitored(daemon, "qemu-a", "qemu-b")
        yield daemon
    finally:
        try:
            end_every_vm(daemon)
        finally:
            daemon.stop()


def end_every_vm(daemon: Daemon) -> None:
    assert daemon.client is not None
    for vm in daemon.all_vms():
        if vm["state"] == "FAILED":
            daemon.client.post(f"/vms/{vm['id']}/recover", json={"mode": "delete"})
        elif vm["state"] != "DONE":
            daemon.client.post(f"/vms/{vm['id']}/terminate", json={"hard": True})
    wait_for("every VM ended", lambda: all(v["state"] == "DONE" for v in daemon.all_vms()), 90)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with cloud_daemon(tmp_path_factory.mktemp("cloud")) as daemon:
        yield daemon


def vm_template(name: str, cmdline: str, extra: str = "") -> str:
    return VM_TEMPLATE.format(name=name, cmdline=cmdline, extra=extra)
