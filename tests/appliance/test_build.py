"""The appliance build: its files, their contents, the manifest, the cache and the lock."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

from typer.testing import CliRunner

from stratus.appliance import build_appliance, load_appliance
from stratus.appliance.build import OUTPUTS
from stratus.appliance.initramfs import NewcArchive
from stratus.cli.main import app
from tests.appliance_support import appliance_dir, ensure_appliance


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cpio(archive: bytes, *args: str) -> str:
    done = subprocess.run(
        ["cpio", "--quiet", *args], input=archive, capture_output=True, timeout=30, check=True
    )
    return done.stdout.decode()


def test_manifest_records_kernel_cmdline_and_the_hash_of_every_file() -> None:
    appliance = ensure_appliance()
    manifest = json.loads(appliance.manifest.read_text())
    assert manifest["cmdline"] == "console=ttyS0 root=/dev/vda rw"
    assert manifest["kernel_version"].endswith("-cloud-amd64")
    for name in OUTPUTS:
        assert manifest["files"][name]["sha256"] == _sha256(appliance.directory / name), name
    assert appliance.sha256 == {name: manifest["files"][name]["sha256"] for name in OUTPUTS}


def test_disk_is_qcow2_holding_an_ext4_root_labelled_stratus_root(tmp_path: Path) -> None:
    appliance = ensure_appliance()
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(appliance.disk)],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    raw = tmp_path / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(appliance.disk), str(raw)], timeout=60, check=True
    )
    with raw.open("rb") as disk:
        superblock = disk.read(2048)[1024:]
    assert superblock[56:58] == b"\x53\xef"  # the ext2/3/4 magic
    assert superblock[120:136].rstrip(b"\0") == b"stratus-root"
    inittab = subprocess.run(
        ["debugfs", "-R", "cat /etc/inittab", str(raw)], capture_output=True, timeout=30
    ).stdout.decode()
    assert "::sysinit:/etc/init.d/rcS" in inittab


def test_rootfs_tarball_is_owned_by_root_with_busybox_init() -> None:
    with tarfile.open(ensure_appliance().rootfs) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert all(member.uid == 0 and member.gid == 0 for member in members.values())
    assert members["sbin/init"].issym() and members["sbin/init"].linkname == "/bin/busybox"
    assert members["etc/init.d/rcS"].mode & 0o111
    assert members["usr/share/stratus/www/cgi-bin/index.cgi"].mode & 0o111
    assert members["etc/acpi/PWRF/00000080"].mode & 0o111


def test_initrd_loads_the_modules_dependencies_first() -> None:
    archive = gzip.decompress(ensure_appliance().initrd.read_bytes())
    names = _cpio(archive, "-it").split()
    assert {"init", "bin/busybox", "bin/switch_root", "dev/console"} <= set(names)
    order = _cpio(archive, "-i", "--to-stdout", "lib/modules/load-order").split()
    for needed in ("virtio_blk.ko", "virtio_net.ko", "virtio_pci.ko", "isofs.ko", "evdev.ko"):
        assert needed in order
    assert order.index("virtio_ring.ko") < order.index("virtio.ko") < order.index("virtio_blk.ko")
    assert (
        order.index("failover.ko") < order.index("net_failover.ko") < order.index("virtio_net.ko")
    )
    assert order.index("cdrom.ko") < order.index("isofs.ko")
    assert all(f"lib/modules/{name}" in names for name in order)


def test_newc_archive_is_read_by_cpio_with_types_and_targets() -> None:
    archive = NewcArchive()
    archive.directory("etc")
    archive.file("etc/hello", b"hello\n", mode=0o600)
    archive.symlink("sh", "busybox")
    archive.char_device("console", 5, 1)
    listing = _cpio(archive.to_bytes(), "-itv").splitlines()
    kinds = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line[0] for line in listing
    }
    assert kinds == {"etc": "d", "etc/hello": "-", "sh": "l", "console": "c"}
    assert "sh -> busybox" in "\n".join(listing)
    assert _cpio(archive.to_bytes(), "-i", "--to-stdout", "etc/hello") == "hello\n"


def test_a_second_build_with_the_same_inputs_reuses_the_first() -> None:
    appliance = ensure_appliance()
    before = appliance.manifest.stat().st_mtime_ns
    lines: list[str] = []
    again = build_appliance(appliance_dir(), progress=lines.append)
    assert again == appliance
    assert appliance.manifest.stat().st_mtime_ns == before
    assert any("up to date" in line for line in lines)


def test_load_appliance_is_none_when_a_file_is_missing(tmp_path: Path) -> None:
    appliance = ensure_appliance()
    assert load_appliance(appliance.directory) == appliance
    (tmp_path / "manifest.json").write_bytes(appliance.manifest.read_bytes())
    assert load_appliance(tmp_path) is None
    assert load_appliance(tmp_path / "nothing-here") is None


def test_cli_build_prints_the_paths_and_json_prints_the_manifest() -> None:
    appliance = ensure_appliance()
    runner = CliRunner()
    plain = runner.invoke(app, ["appliance", "build", "--out", str(appliance.directory)])
    assert plain.exit_code == 0, plain.output
    assert str(appliance.disk) in plain.stdout and str(appliance.kernel) in plain.stdout
    as_json = runner.invoke(
        app, ["appliance", "build", "--out", str(appliance.directory), "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["files"]["vmlinuz"]["sha256"] == appliance.sha256["vmlinuz"]


def test_module_entry_point_builds_like_the_cli() -> None:
    appliance = ensure_appliance()
    done = subprocess.run(
        [sys.executable, "-m", "stratus.appliance", "--out", str(appliance.directory), "--json"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout)["kernel_version"] == appliance.kernel_version


def test_a_build_waits_for_the_lock_another_process_holds() -> None:
    appliance = ensure_appliance()
    lines: list[str] = []
    results = []
    with (appliance.directory / ".build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a concurrent build holds while it works
        thread = threading.Thread(
            target=lambda: results.append(
                build_appliance(appliance.directory, progress=lines.append)
            )
        )
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive() and not results
        assert lines == ["waiting for another build of the appliance to finish"]
        fcntl.flock(lock, fcntl.LOCK_UN)
    thread.join(timeout=120)
    assert results == [appliance]
    assert any("up to date" in line for line in lines)


def test_cli_build_into_a_directory_that_cannot_exist_says_what_to_do() -> None:
    result = CliRunner().invoke(app, ["appliance", "build", "--out", "/proc/no/such/dir"])
    assert result.exit_code == 1
    assert "cannot create the appliance directory" in result.output
    assert "--out" in result.output
