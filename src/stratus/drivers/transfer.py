"""Disk staging: images onto a host, per-VM disks in the VM directory, and back.

Shared by the QEMU and LXC drivers; everything goes through a `HostAccess`, so a remote
(SSH) host is served like this machine. On this machine a front-end image is used where
it lies; a remote host keeps one copy of each image in `<ds>/.images/<key>/`, pushed once.

A VM's disk `<vm_dir>/disk.<i>` is a qcow2 clone whose backing file is the staged image
(creating it costs the same for 10 MiB as for 10 GiB), or a symlink to the image itself
for persistent disks and CD-ROMs. Nothing that exists is made again: a retried PROLOG, or
a boot from POWEROFF, keeps the VM's writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from shlex import quote as q

from stratus.drivers.access import HostAccess
from stratus.drivers.base import DiskSpec
from stratus.model.errors import DriverError, InvalidInput

__all__ = [
    "DISK_IMAGE_FORMATS",
    "copy_vm_dir",
    "disk_path",
    "file_key",
    "prepare_disks",
    "qemu_format",
    "rebase_clones",
    "remove_vm_dir",
    "save_disk",
    "stage_file",
    "stage_image",
]

#: image formats QEMU opens as disks (tar and dir are container root filesystems)
DISK_IMAGE_FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vdi", "iso")
_STAGE_TIMEOUT = 3600.0  # pushing a large image over SSH
_CONVERT_TIMEOUT = 3600.0
_QUICK = 60.0
_VM_DIR_NAME = re.compile(r"^\d+$")


def disk_path(vm_dir: str, index: int) -> str:
    """Where disk `index` of a VM lives in its VM directory."""
    return f"{vm_dir}/disk.{index}"


def qemu_format(disk: DiskSpec) -> str:
    """The format QEMU opens the image with (a CD-ROM's ISO is raw to QEMU)."""
    if disk.format not in DISK_IMAGE_FORMATS:
        raise InvalidInput(
            f"disk {disk.index} ({disk.image}) is a {disk.format!r} root filesystem, "
            "not a disk image",
            hint="use a raw, qcow2, vmdk, vpc or vdi image with a virtual machine driver",
        )
    return "raw" if disk.format == "iso" else disk.format


def file_key(path: str) -> str:
    """A cache key for a front-end file: it changes when the file does (size, mtime)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DriverError(f"cannot read {path} on the front-end: {exc.strerror}") from exc
    text = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    return "f-" + hashlib.sha256(text.encode()).hexdigest()[:16]


async def stage_image(access: HostAccess, ds: str, disk: DiskSpec) -> str:
    """Where the host reads the disk's image: the front-end path on this machine, else
    a copy in `<ds>/.images/<image_id>/` pushed once."""
    return await _stage(access, ds, disk.source, str(disk.image_id))


async def stage_file(access: HostAccess, ds: str, path: str, key: str | None = None) -> str:
    """Like stage_image for a loose front-end file (kernel, initrd); the key defaults to
    one derived from the file's path, size and modification time."""
    return await _stage(access, ds, path, key or file_key(path))


async def _stage(access: HostAccess, ds: str, source: str, key: str) -> str:
    if access.is_local:
        return source
    folder = f"{ds}/.images/{key}"
    staged = f"{folder}/{os.path.basename(source.rstrip('/'))}"
    if (await access.run(["test", "-e", staged], check=False)).returncode == 0:
        return staged
    partial = f"{folder}/.partial-{uuid.uuid4().hex[:8]}"
    await access.run(["mkdir", "-p", folder], timeout=_QUICK)
    try:
        await access.push(source, partial, timeout=_STAGE_TIMEOUT)
        # mv -T: two pushes racing leave one complete copy, never a folder inside another
        await access.run(["mv", "-T", "-f", partial, staged], timeout=_QUICK)
    finally:
        await access.run(["rm", "-rf", partial], timeout=_QUICK, check=False)
    return staged


async def prepare_disks(
    access: HostAccess, ds: str, vm_dir: str, disks: Sequence[DiskSpec]
) -> list[str]:
    """Make `<vm_dir>/disk.<i>` for each disk (kept when it exists); their paths in order."""
    lines = ["set -e", f"mkdir -p {q(vm_dir)}"]
    paths = []
    for disk in disks:
        fmt = qemu_format(disk)
        image = await stage_image(access, ds, disk)
        path = disk_path(vm_dir, disk.index)
        paths.append(path)
        if disk.persistent or disk.type == "CDROM":
            make = f"ln -s {q(image)} {q(path)}"
        else:  # a copy-on-write clone; made under a temporary name so it is never half-made
            tmp = f"{path}.tmp"
            make = (
                f"qemu-img create -q -f qcow2 -F {fmt} -b {q(image)} {q(tmp)} >/dev/null"
                f" && mv -f {q(tmp)} {q(path)}"
            )
        lines.append(f"if [ ! -e {q(path)} ] && [ ! -L {q(path)} ]; then {make}; fi")
    await access.sh("\n".join(lines), timeout=_QUICK)
    return paths


async def rebase_clones(
    access: HostAccess, ds: str, vm_dir: str, disks: Sequence[DiskSpec]
) -> None:
    """Point each clone at this host's copy of its image (after a VM directory came from
    another host, whose image copies lie elsewhere). The data is the same, so the rebase
    only rewrites the header (-u)."""
    lines = ["set -e"]
    for disk in disks:
        if disk.persistent or disk.type == "CDROM":
            continue
        image = await stage_image(access, ds, disk)
        path = disk_path(vm_dir, disk.index)
        lines.append(f"[ -L {q(path)} ] || qemu-img rebase -u -F {qemu_format(disk)} "
                     f"-b {q(image)} {q(path)}")  # fmt: skip
    if len(lines) > 1:
        await access.sh("\n".join(lines), timeout=_QUICK)


async def remove_vm_dir(access: HostAccess, vm_dir: str) -> None:
    """Delete a VM directory and all in it; nothing there is success."""
    if not _VM_DIR_NAME.match(os.path.basename(vm_dir.rstrip("/"))):
        raise DriverError(f"refusing to delete {vm_dir}: not a VM directory (<datastore>/<id>)")
    await access.run(["rm", "-rf", "--", vm_dir], timeout=_QUICK)


async def copy_vm_dir(
    src_access: HostAccess, src_path: str, dst_access: HostAccess, dst_path: str
) -> None:
    """Copy the regular files of a VM directory (disks, states, context, console) to
    another host, through the front-end when neither end is it. Symlinks are left out:
    they name images on the source, and prepare_disks makes them again on the target."""
    listing = await src_access.run(
        ["find", src_path, "-maxdepth", "1", "-type", "f", "-printf", "%f\\n"], timeout=_QUICK
    )
    names = [n for n in listing.text.splitlines() if n and not n.endswith(".tmp")]
    await dst_access.run(["mkdir", "-p", dst_path], timeout=_QUICK)
    if src_access.is_local:
        same = dst_access.is_local and os.path.realpath(src_path) == os.path.realpath(dst_path)
        for name in [] if same else names:
            await dst_access.push(
                f"{src_path}/{name}", f"{dst_path}/{name}", timeout=_STAGE_TIMEOUT
            )
        return
    with tempfile.TemporaryDirectory(prefix="stratus-move-") as hop:
        for name in names:
            local = os.path.join(hop, name)
            await src_access.pull(f"{src_path}/{name}", local, timeout=_STAGE_TIMEOUT)
            await dst_access.push(local, f"{dst_path}/{name}", timeout=_STAGE_TIMEOUT)
            os.unlink(local)


async def save_disk(access: HostAccess, vm_dir: str, index: int, dest: str) -> None:
    """Copy disk `index` of a VM, flattened to one qcow2 without backing file, to `dest`
    on the front-end (converted on the host, then pulled)."""
    source = disk_path(vm_dir, index)
    if (await access.run(["test", "-e", source], check=False)).returncode != 0:
        raise DriverError(f"the VM has no disk {index} on {access.where} ({source} is missing)")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    flat = dest + ".tmp" if access.is_local else f"{vm_dir}/.save-{index}-{uuid.uuid4().hex[:8]}"
    try:
        await _convert(access, source, flat)
        if access.is_local:
            os.replace(flat, dest)
        else:
            await access.pull(flat, dest, timeout=_STAGE_TIMEOUT)
    finally:
        if access.is_local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(flat)
        else:
            await access.run(["rm", "-f", flat], timeout=_QUICK, check=False)


async def _convert(access: HostAccess, source: str, flat: str) -> None:
    try:
        await access.run(
            ["qemu-img", "convert", "-O", "qcow2", source, flat], timeout=_CONVERT_TIMEOUT
        )
    except DriverError as exc:
        if "lock" in str(exc):
            raise DriverError(
                f"{exc}", hint="the disk is in use by a running VM: power the VM off first"
            ) from exc
        raise
