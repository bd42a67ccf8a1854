"""What a container is made of, from its DeploySpec (pure: no LXC needed)."""

from __future__ import annotations

import io
import tarfile

import pytest

from stratus.drivers.base import DeploySpec, DiskSpec, NicSpec
from stratus.drivers.lxcconf import (
    ContainerPaths,
    HostFacts,
    bridge_nics,
    check_path,
    container_name,
    context_tar,
    hostname_for,
    render_config,
    root_disk,
    vm_id_of,
)
from stratus.model.errors import DriverError

ROOTFS = DiskSpec(
    index=0, image_id=3, image="alpine", source="/img/alpine.tar.gz", format="tar", type="OS",
    persistent=False,
)  # fmt: skip
NIC = NicSpec(
    index=0, network="lan", driver="bridge", mac="02:00:c0:a8:96:65", bridge="br-lan",
    netns="lab",
)  # fmt: skip
PATHS = ContainerPaths(rootfs="/ds/.images/3/rootfs", vm_dir="/ds/7", veths=("sve7n0",))
V1 = HostFacts(version="5.0.2", cgroup2=False, common_conf="/usr/share/lxc/config/common.conf")
V2 = HostFacts(version="6.0.0", cgroup2=True, common_conf=None)


def _spec(**changes: object) -> DeploySpec:
    fields: dict[str, object] = {
        "request_id": "vm-7-2", "vm_id": 7, "name": "web 7", "cpu": 0.5, "vcpu": 1,
        "memory": 256, "template": {}, "disks": (ROOTFS,), "nics": (NIC,),
    }  # fmt: skip
    fields.update(changes)
    return DeploySpec(**fields)  # type: ignore[arg-type]


def _keys(config: str) -> dict[str, str]:
    pairs = (line.split(" = ", 1) for line in config.splitlines() if " = " in line)
    return {key: value for key, value in pairs}


def test_container_names_carry_the_vm_id_and_a_safe_request_id() -> None:
    name = container_name(7, "vm-7-2/../x y")
    assert name == "stratus-7-vm-7-2_.._x_y"
    assert vm_id_of(name) == 7
    for other in ("stratus-x-1", "dummy-vm-7-2", "stratus-7-", "stratus-7-a;b"):
        with pytest.raises(DriverError, match="not a container of the lxc driver"):
            vm_id_of(other)


def test_cgroup_v1_config_has_overlay_init_signals_context_limits_and_veth() -> None:
    keys = _keys(render_config(_spec(), PATHS, V1))
    assert keys["lxc.include"] == V1.common_conf
    assert keys["lxc.uts.name"] == "web-7"
    assert keys["lxc.rootfs.path"] == "overlay:/ds/.images/3/rootfs:/ds/7/upper"
    assert keys["lxc.init.cmd"] == "/sbin/init"
    assert (keys["lxc.signal.halt"], keys["lxc.signal.reboot"]) == ("SIGUSR2", "SIGTERM")
    assert keys["lxc.console.logfile"] == "/ds/7/console.log"
    assert keys["lxc.mount.entry"].startswith("/ds/7/context mnt/context none bind,ro")
    assert keys["lxc.cgroup.memory.limit_in_bytes"] == "256M"
    assert keys["lxc.cgroup.cpu.cfs_quota_us"] == "50000"
    assert keys["lxc.net.0.type"] == "veth"
    assert keys["lxc.net.0.link"] == "br-lan"
    assert keys["lxc.net.0.veth.pair"] == "sve7n0"
    assert keys["lxc.net.0.hwaddr"] == "02:00:c0:a8:96:65"
    assert keys["lxc.net.0.name"] == "eth0"


def test_cgroup_v2_config_uses_cgroup2_keys() -> None:
    keys = _keys(render_config(_spec(cpu=2.0), PATHS, V2))
    assert keys["lxc.cgroup2.memory.max"] == str(256 << 20)
    assert keys["lxc.cgroup2.cpu.max"] == "200000 100000"
    assert not any(key.startswith("lxc.cgroup.") for key in keys)
    assert "lxc.include" not in keys and "lxc.cap.drop" in keys


def test_a_container_without_nics_gets_loopback_only() -> None:
    keys = _keys(render_config(_spec(nics=()), ContainerPaths("/r", "/v", ()), V1))
    assert keys["lxc.net.0.type"] == "empty"


def test_names_and_macs_cannot_inject_config_lines() -> None:
    config = render_config(_spec(name="x\nlxc.mount.entry = / evil", request_id="a\nb"), PATHS, V1)
    assert "evil" not in _keys(config).get("lxc.mount.entry", "")
    assert len([line for line in config.splitlines() if line.startswith("lxc.mount.entry")]) == 1
    bad_mac = NicSpec(index=0, network="lan", driver="bridge", mac="02:00\nx", bridge="b")
    with pytest.raises(DriverError, match="not a MAC address"):
        render_config(_spec(nics=(bad_mac,)), PATHS, V1)


def test_hostname_is_a_valid_label() -> None:
    assert hostname_for("My VM #1", 3) == "My-VM-1"
    assert hostname_for("---", 3) == "vm-3"
    assert len(hostname_for("a" * 100, 3)) == 63


def test_the_root_disk_must_be_one_non_persistent_tar_or_dir() -> None:
    assert root_disk(_spec()) is ROOTFS
    qcow = DiskSpec(1, 4, "data", "/img/d.qcow2", "qcow2", "DATABLOCK", False)
    with pytest.raises(DriverError, match="cannot be attached to a container"):
        root_disk(_spec(disks=(ROOTFS, qcow)))
    with pytest.raises(DriverError, match="has 0 root filesystem disks"):
        root_disk(_spec(disks=()))
    persistent = DiskSpec(0, 3, "alpine", "/img/a", "dir", "OS", True)
    with pytest.raises(DriverError, match="make the image non-persistent"):
        root_disk(_spec(disks=(persistent,)))


def test_nics_must_be_bridges_in_one_namespace() -> None:
    assert bridge_nics(_spec()) == ([NIC], "lab")
    user = NicSpec(index=0, network="outside", driver="user", mac="02:00:00:00:00:01")
    with pytest.raises(DriverError, match="outside uses QEMU user networking"):
        bridge_nics(_spec(nics=(user,)))
    elsewhere = NicSpec(index=1, network="wan", driver="bridge", mac=NIC.mac, bridge="br-wan")
    with pytest.raises(DriverError, match="different network namespaces"):
        bridge_nics(_spec(nics=(NIC, elsewhere)))


def test_paths_lxc_cannot_hold_are_refused() -> None:
    assert check_path("/var/lib/stratus/ds-1/.hosts/h1") == "/var/lib/stratus/ds-1/.hosts/h1"
    for bad in ("/data/my ds", "/data/a:b", "/data/it's"):
        with pytest.raises(DriverError, match="cannot hold"):
            check_path(bad)


def test_context_tar_holds_flat_files_only() -> None:
    data = context_tar({"context.sh": b"VMID='1'\n", "init.sh": b"#!/bin/sh\n"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["context.sh", "init.sh"]
        member = tar.extractfile("context.sh")
        assert member is not None and member.read() == b"VMID='1'\n"
    with pytest.raises(DriverError, match="plain file name"):
        context_tar({"../etc/passwd": b""})
