"""Disk staging (stratus.drivers.transfer) on real files with qemu-img, on this machine and
on an SSH host (an sshd on 127.0.0.1 whose datastore is another folder)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stratus.drivers.access import HostAccess, LocalAccess
from stratus.drivers.base import DiskSpec, HostInfo
from stratus.drivers.ssh import SshAccess, ssh_params
from stratus.drivers.transfer import (
    copy_vm_dir,
    prepare_disks,
    rebase_clones,
    remove_vm_dir,
    save_disk,
    stage_image,
)
from stratus.model.errors import DriverError, InvalidInput
from tests.sshd import SshServer, ssh_server

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with ssh_server() as server:
        yield server


@pytest.fixture(params=["local", "ssh"])
async def access(request: pytest.FixtureRequest) -> AsyncIterator[HostAccess]:
    if request.param == "local":
        yield LocalAccess()
        return
    server: SshServer = request.getfixturevalue("sshd")
    remote = SshAccess(ssh_params(HostInfo(1, "h1", dict(server.options), {})))
    try:
        yield remote
    finally:
        await remote.close()


def qemu_io(path: Path | str, command: str, fmt: str = "qcow2") -> str:
    done = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "Pattern verification failed" not in done.stdout, done
    return done.stdout


def pattern_matches(path: Path | str, pattern: int, offset: int, fmt: str = "qcow2") -> bool:
    done = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"read -P {pattern:#x} {offset} 4k", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def image_info(path: Path | str) -> dict[str, object]:
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def raw_image(path: Path, size: int, pattern: int | None = 0xAB) -> Path:
    """A sparse raw image with 4 KiB of `pattern` at offset 1 MiB."""
    with path.open("wb") as f:
        f.truncate(size)
    if pattern is not None:
        qemu_io(path, f"write -P {pattern:#x} {MIB} 4k", fmt="raw")
    return path


def disk(index: int, source: Path, *, fmt: str = "raw", **more: object) -> DiskSpec:
    fields: dict[str, object] = {
        "image_id": 10 + index, "image": f"img{index}", "type": "OS", "persistent": False,
    }  # fmt: skip
    fields.update(more)
    return DiskSpec(index=index, source=str(source), format=fmt, **fields)  # type: ignore[arg-type]


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


async def test_clone_reads_the_base_and_keeps_its_writes_from_it(
    access: HostAccess, tmp_path: Path
) -> None:
    base = raw_image(tmp_path / "base.raw", 10 * MIB)
    before = sha256(base)
    ds = str(tmp_path / "ds")
    [clone] = await prepare_disks(access, ds, f"{ds}/5", [disk(0, base)])
    assert clone == f"{ds}/5/disk.0"
    info = image_info(clone)
    assert info["format"] == "qcow2" and info["backing-filename-format"] == "raw"
    staged = str(info["backing-filename"])
    assert staged == (str(base) if access.is_local else f"{ds}/.images/10/base.raw")
    assert pattern_matches(clone, 0xAB, MIB)
    qemu_io(clone, f"write -P 0xcd {MIB} 4k")
    assert pattern_matches(clone, 0xCD, MIB)
    assert sha256(base) == before and pattern_matches(staged, 0xAB, MIB, fmt="raw")


async def test_prepare_again_keeps_the_vm_writes(access: HostAccess, tmp_path: Path) -> None:
    base = raw_image(tmp_path / "base.raw", 10 * MIB)
    ds = str(tmp_path / "ds")
    [clone] = await prepare_disks(access, ds, f"{ds}/5", [disk(0, base)])
    qemu_io(clone, f"write -P 0xcd {MIB} 4k")
    await prepare_disks(access, ds, f"{ds}/5", [disk(0, base)])
    assert pattern_matches(clone, 0xCD, MIB)


async def test_an_image_is_pushed_to_a_remote_host_once(tmp_path: Path, sshd: SshServer) -> None:
    remote = SshAccess(ssh_params(HostInfo(1, "h1", dict(sshd.options), {})))
    try:
        base = raw_image(tmp_path / "base.raw", MIB, pattern=None)
        ds = str(tmp_path / "remote-ds")
        first = await stage_image(remote, ds, disk(0, base))
        stamp = os.stat(first).st_mtime_ns
        assert await stage_image(remote, ds, disk(0, base)) == first
        assert os.stat(first).st_mtime_ns == stamp
        assert sorted(os.listdir(f"{ds}/.images/10")) == ["base.raw"]  # no partial copy left
    finally:
        await remote.close()


async def test_persistent_disks_and_cdroms_are_links_to_the_image(tmp_path: Path) -> None:
    base = raw_image(tmp_path / "data.raw", MIB, pattern=None)
    iso = tmp_path / "tools.iso"
    iso.write_bytes(b"\0" * 4096)
    ds = str(tmp_path / "ds")
    disks = [disk(0, base, persistent=True), disk(1, iso, fmt="iso", type="CDROM")]
    paths = await prepare_disks(LocalAccess(), ds, f"{ds}/3", disks)
    assert [os.readlink(p) for p in paths] == [str(base), str(iso)]


async def test_a_root_filesystem_is_no_disk_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="root filesystem, not a disk image"):
        await prepare_disks(LocalAccess(), str(tmp_path), f"{tmp_path}/1", [
            disk(0, tmp_path / "rootfs.tar", fmt="tar"),
        ])  # fmt: skip


async def test_cloning_10_gib_costs_about_what_cloning_10_mib_does(tmp_path: Path) -> None:
    small = raw_image(tmp_path / "small.raw", 10 * MIB, pattern=None)
    big = raw_image(tmp_path / "big.raw", 10 * 1024 * MIB, pattern=None)
    access, ds = LocalAccess(), str(tmp_path / "ds")
    timings = {}
    for name, image in (("small", small), ("big", big)):
        started = time.perf_counter()
        for vm in range(3):
            await prepare_disks(access, ds, f"{ds}/{name == 'big'}{vm}", [disk(0, image)])
        timings[name] = (time.perf_counter() - started) / 3
    assert timings["big"] < 1.0 and timings["small"] < 1.0, timings
    assert timings["big"] < 3 * timings["small"] + 0.1, timings


async def test_save_disk_flattens_the_clone_onto_the_front_end(
    access: HostAccess, tmp_path: Path
) -> None:
    base = raw_image(tmp_path / "base.raw", 10 * MIB)
    ds = str(tmp_path / "ds")
    [clone] = await prepare_disks(access, ds, f"{ds}/8", [disk(0, base)])
    qemu_io(clone, f"write -P 0xcd {2 * MIB} 4k")
    dest = tmp_path / "saved" / "img.qcow2"
    await save_disk(access, f"{ds}/8", 0, str(dest))
    info = image_info(dest)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert pattern_matches(dest, 0xAB, MIB) and pattern_matches(dest, 0xCD, 2 * MIB)
    assert sorted(os.listdir(f"{ds}/8")) == ["disk.0"]  # no temporary copy left behind


async def test_save_disk_of_a_missing_disk_names_it(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="has no disk 4"):
        await save_disk(LocalAccess(), str(tmp_path / "9"), 4, str(tmp_path / "out.qcow2"))


async def test_a_vm_directory_moves_to_another_host_and_its_clones_follow(
    tmp_path: Path, sshd: SshServer
) -> None:
    """Cold migration without shared storage: copy the files, remake the links, rebase."""
    base = raw_image(tmp_path / "base.raw", 10 * MIB)
    data = raw_image(tmp_path / "data.raw", MIB, pattern=None)
    disks = [disk(0, base), disk(1, data, persistent=True)]
    local, src_ds = LocalAccess(), str(tmp_path / "ds-a")
    await prepare_disks(local, src_ds, f"{src_ds}/4", disks)
    qemu_io(f"{src_ds}/4/disk.0", f"write -P 0xcd {2 * MIB} 4k")
    Path(f"{src_ds}/4/checkpoint.state").write_bytes(b"state")
    remote = SshAccess(ssh_params(HostInfo(2, "h2", dict(sshd.options), {})))
    try:
        dst_ds = str(tmp_path / "ds-b")
        await copy_vm_dir(local, f"{src_ds}/4", remote, f"{dst_ds}/4")
        assert sorted(os.listdir(f"{dst_ds}/4")) == ["checkpoint.state", "disk.0"]
        await prepare_disks(remote, dst_ds, f"{dst_ds}/4", disks)
        await rebase_clones(remote, dst_ds, f"{dst_ds}/4", disks)
    finally:
        await remote.close()
    moved = f"{dst_ds}/4/disk.0"
    assert image_info(moved)["backing-filename"] == f"{dst_ds}/.images/10/base.raw"
    assert pattern_matches(moved, 0xAB, MIB) and pattern_matches(moved, 0xCD, 2 * MIB)
    assert os.readlink(f"{dst_ds}/4/disk.1") == f"{dst_ds}/.images/11/data.raw"


async def test_remove_vm_dir_deletes_only_vm_directories(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "disk.0").write_bytes(b"x")
    await remove_vm_dir(LocalAccess(), str(tmp_path / "12"))
    await remove_vm_dir(LocalAccess(), str(tmp_path / "12"))  # gone already: fine
    assert not (tmp_path / "12").exists()
    with pytest.raises(DriverError, match="not a VM directory"):
        await remove_vm_dir(LocalAccess(), str(tmp_path))
