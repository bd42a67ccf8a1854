"""A real QEMU VM through the whole stack: registered images, a network lease, a context
CD-ROM, the daemon's dispatcher and monitor, and the guest's own HTTP answer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.appliance_support import ensure_appliance
from tests.daemon.daemon import Daemon
from tests.e2e.conftest import guest_page, vm_template, wait_for, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web(cloud: Daemon) -> dict[str, Any]:
    """One appliance VM booted from the registered images, RUNNING and answering."""
    template = vm_template("web-1", ensure_appliance().cmdline)
    created = cloud.api("POST", "/vms", json={"template": template})
    vm = wait_state(cloud, created["vms"][0]["id"], "RUNNING", timeout=120)
    return vm


def _address(vm: dict[str, Any]) -> str:
    ports = vm["info"]["ports"]
    return str(ports["80"])


def test_the_guest_answers_with_the_name_and_ip_its_context_gave_it(
    cloud: Daemon, web: dict[str, Any]
) -> None:
    page = guest_page(_address(web))
    assert page["name"] == "web-1"
    lease = cloud.api("GET", "/vnets/usernet")
    used = [item for item in lease["leases"] if item.get("vm_id") == web["id"]]
    assert len(used) == 1
    assert page["ip"] == used[0]["ip"] == "192.168.150.100"


def test_the_guest_reports_ready_with_its_token(cloud: Daemon, web: dict[str, Any]) -> None:
    vm = wait_for(
        "the READY report",
        lambda: (v := cloud.api("GET", f"/vms/{web['id']}"))["info"].get("ready") and v,
        60,
    )
    assert any("READY" in event["reason"] for event in vm["events"])


def test_the_console_log_shows_the_boot(cloud: Daemon, web: dict[str, Any]) -> None:
    log = cloud.api("GET", f"/vms/{web['id']}/log")["log"]
    assert "Linux version" in log or "context" in log.lower()


def test_suspend_and_resume_keep_the_uptime_growing(cloud: Daemon, web: dict[str, Any]) -> None:
    before = guest_page(_address(web))["uptime"]
    cloud.api("POST", f"/vms/{web['id']}/suspend")
    wait_state(cloud, web["id"], "SUSPENDED")
    cloud.api("POST", f"/vms/{web['id']}/resume")
    vm = wait_state(cloud, web["id"], "RUNNING")
    after = guest_page(_address(vm))["uptime"]
    assert after > before


def test_live_migration_keeps_the_guest_answering_with_unbroken_uptime(
    cloud: Daemon, web: dict[str, Any]
) -> None:
    vm = cloud.api("GET", f"/vms/{web['id']}")
    source = vm["host"] if "host" in vm else vm.get("host_name")
    target = "qemu-b" if source == "qemu-a" else "qemu-a"
    before = guest_page(_address(vm))["uptime"]
    cloud.api("POST", f"/vms/{web['id']}/migrate", json={"host": target, "live": True})
    moved = wait_for(
        "the live migration",
        lambda: (
            (v := cloud.api("GET", f"/vms/{web['id']}"))["state"] == "RUNNING"
            and (v.get("host") or v.get("host_name")) == target
            and v
        ),
        120,
    )
    page = guest_page(_address(moved))
    assert page["name"] == "web-1"
    assert page["uptime"] > before  # no reboot: the same guest, still counting


def test_a_powered_off_vm_disk_saves_as_a_new_standalone_image(
    cloud: Daemon, web: dict[str, Any]
) -> None:
    assert cloud.client is not None
    refused = cloud.client.post(f"/vms/{web['id']}/disk-saveas", json={"disk": 0, "name": "x"})
    assert refused.status_code == 409  # still RUNNING: its disk is in use
    cloud.api("POST", f"/vms/{web['id']}/poweroff")
    wait_state(cloud, web["id"], "POWEROFF")
    cloud.api("POST", f"/vms/{web['id']}/disk-saveas", json={"disk": 0, "name": "web-1-disk"})
    image = wait_for(
        "the saved disk's import",
        lambda: (i := cloud.api("GET", "/images/web-1-disk"))["state"] != "LOCKED" and i,
        60,
    )
    assert image["state"] == "READY", image["reason"]
    assert image["format"] == "qcow2"
    assert image["checksum"].startswith("sha256:")
    stored = Path(image["path"])
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", str(stored)],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    )
    assert "backing-filename" not in info  # flattened: it stands on its own


def test_terminate_frees_the_lease_and_the_image(cloud: Daemon, web: dict[str, Any]) -> None:
    cloud.api("POST", f"/vms/{web['id']}/terminate")
    wait_state(cloud, web["id"], "DONE", timeout=120)
    network = cloud.api("GET", "/vnets/usernet")
    assert not [item for item in network["leases"] if item.get("vm_id") == web["id"]]
    image = cloud.api("GET", "/images/appliance")
    assert web["id"] not in image.get("vms", [])
