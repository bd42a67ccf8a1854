"""Bad input gets a clear error and leaves nothing behind (through a real daemon)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.daemon.daemon import Daemon
from tests.e2e.conftest import vm_template, wait_for

TINY_NET = """
NAME = "tiny"
VN_MAD = "user"
NETWORK_ADDRESS = "192.168.151.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.151.1"
AR = [ TYPE = "IP4", IP = "192.168.151.10", SIZE = "1" ]
"""


def _submit(cloud: Daemon, template: str, **args: Any) -> tuple[int, dict[str, Any]]:
    assert cloud.client is not None
    response = cloud.client.post("/vms", json={"template": template, **args})
    return response.status_code, response.json()


def _vm_count(cloud: Daemon) -> int:
    return len(cloud.all_vms())


def test_a_template_naming_a_missing_image_is_refused_and_creates_nothing(cloud: Daemon) -> None:
    before = _vm_count(cloud)
    template = vm_template("x", "console=ttyS0").replace('"appliance"', '"no-such-image"')
    status, body = _submit(cloud, template)
    assert status == 404
    assert "no-such-image" in body["error"]["message"]
    assert _vm_count(cloud) == before


def test_a_template_naming_a_missing_network_is_refused_and_creates_nothing(
    cloud: Daemon,
) -> None:
    before = _vm_count(cloud)
    template = vm_template("x", "console=ttyS0").replace('"usernet"', '"no-such-net"')
    status, body = _submit(cloud, template)
    assert status == 404
    assert "no-such-net" in body["error"]["message"]
    assert _vm_count(cloud) == before


def test_a_network_with_no_free_lease_refuses_the_vm_and_leaks_nothing(cloud: Daemon) -> None:
    cloud.api("POST", "/vnets", json={"template": TINY_NET})
    template = vm_template("t", "console=ttyS0").replace('"usernet"', '"tiny"')
    before = _vm_count(cloud)
    status, body = _submit(cloud, template, count=2, hold=True)  # two VMs, one address
    assert status == 409
    assert "no free lease" in body["error"]["message"]
    assert _vm_count(cloud) == before  # neither VM was created
    assert cloud.api("GET", "/vnets/tiny")["leases"] == []  # and no lease taken
    status, body = _submit(cloud, template, hold=True)
    assert status == 201
    status, body = _submit(cloud, template, hold=True)
    assert status == 409
    assert "tiny" in body["error"]["message"]


def test_an_image_file_that_is_not_a_disk_ends_in_error_and_leaves_no_file(
    cloud: Daemon, tmp_path: Path
) -> None:
    junk = tmp_path / "notes.img"
    junk.write_text("these are my notes, not a disk\n" * 100)
    cloud.api("POST", "/images", json={"name": "junk", "path": str(junk), "type": "OS"})
    image = wait_for(
        "the import to end",
        lambda: (i := cloud.api("GET", "/images/junk"))["state"] != "LOCKED" and i,
        30,
    )
    assert image["state"] == "ERROR"
    assert "not a disk" in image["reason"]
    folder = cloud.data_dir / "datastores" / "images" / str(image["id"])
    assert not folder.exists() or not any(folder.iterdir())


def test_a_host_whose_ssh_is_down_goes_to_error_with_the_reason(
    cloud: Daemon, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"ssh_host": "127.0.0.1", "ssh_port": str(port), "ssh_key": str(key)}
    cloud.api(
        "POST",
        "/hosts",
        json={
            "name": "remote-down",
            "driver": "qemu",
            "cpu": 2,
            "memory": "2G",
            "options": options,
        },
    )
    host = wait_for(
        "the host to go to ERROR",
        lambda: (h := cloud.api("GET", "/hosts/remote-down"))["state"] == "ERROR" and h,
        30,
    )
    assert "ssh" in host["reason"].lower()
    assert str(port) in host["reason"]
