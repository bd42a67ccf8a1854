"""The appliance's root filesystem: a busybox tree, as an ext4 qcow2 disk and a tarball.

One directory tree serves both: `mke2fs -d` writes it into an ext4 image (label
stratus-root) that `qemu-img` turns into appliance.qcow2 for VMs, and the same tree packed
as rootfs.tar.gz (every entry owned by root) is what LXC containers start from.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from stratus.appliance.tools import find_tool, run

__all__ = ["DISK_LABEL", "DISK_SIZE_MB", "make_disk", "make_tarball", "populate_rootfs"]

DISK_LABEL = "stratus-root"
#: the root disk's virtual size; qcow2 stores only the few MB in use
DISK_SIZE_MB = 128

_DIRECTORIES = {
    "bin": 0o755,
    "sbin": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "lib": 0o755,
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "run": 0o755,
    "tmp": 0o1777,
    "root": 0o700,
    "home": 0o755,
    "mnt/context": 0o755,
    "var/log": 0o755,
    "etc": 0o755,
}


def populate_rootfs(root: Path, *, busybox: Path, applet_paths: list[str], files: Path) -> None:
    """Fill `root`: busybox and its applet links, then the files/rootfs tree on top.

    applet_paths are busybox's `--list-full` entries (bin/sh, sbin/init, usr/bin/awk...).
    Scripts (files starting with #!) become executable; everything else is 0644.
    """
    for name, mode in _DIRECTORIES.items():
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    (root / "var/run").symlink_to("../run")
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    for applet in applet_paths:
        link = root / applet
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    for source in sorted(files.rglob("*")):
        target = root / source.relative_to(files)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
            continue
        data = source.read_bytes()
        target.write_bytes(data)
        target.chmod(0o755 if data.startswith(b"#!") else 0o644)


def make_disk(root: Path, raw: Path, qcow2: Path) -> None:
    """Write `root` into an ext4 image, then convert it to qcow2."""
    find_tool("mke2fs", "e2fsprogs")
    find_tool("qemu-img", "qemu-utils")
    raw.unlink(missing_ok=True)
    run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            DISK_LABEL,
            "-E",
            "root_owner=0:0",
            "-d",
            root,
            raw,
            f"{DISK_SIZE_MB}M",
        ],
        timeout=120,
    )
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], timeout=300)
    raw.unlink()


def make_tarball(root: Path, dest: Path) -> None:
    """Pack `root` as a gzip'd tar whose entries are all owned by root (uid and gid 0)."""

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=owned_by_root)
