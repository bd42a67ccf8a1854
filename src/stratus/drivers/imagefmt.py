"""What an image file really is: `qemu-img info`, magic numbers, and `qemu-img convert`.

An image is refused when its content is not what its type claims (a text file registered
as an OS disk, a qcow2 registered as a CD-ROM), and when it could make the front-end read
other files: a qcow2 with a backing or data file, or a VMDK whose extents live elsewhere,
names any path on the front-end and a VM would read it (OpenStack's OSSA-2024-001).

Blocking code with timeouts; the engine runs it in worker threads.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratus.model.errors import DriverError, DriverTimeout, InvalidInput
from stratus.model.records import ImageType

__all__ = [
    "DISK_FORMATS",
    "FORMATS",
    "MAX_CONTEXT_FILE",
    "ConversionCancelled",
    "ImageFacts",
    "check_conversion",
    "check_image",
    "convert_image",
    "inspect_image",
]

#: Disk formats QEMU runs and `--format` may convert to.
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vdi")
#: The formats an image of each type may end up in.
FORMATS: dict[ImageType, tuple[str, ...]] = {
    ImageType.OS: (*DISK_FORMATS, "tar", "dir"),
    ImageType.DATABLOCK: DISK_FORMATS,
    ImageType.CDROM: ("iso",),
    ImageType.KERNEL: ("kernel",),
    ImageType.RAMDISK: ("ramdisk",),
    ImageType.CONTEXT: ("file",),
}
MAX_CONTEXT_FILE = 10 * 1024 * 1024  # a context CD-ROM carries small files
# Single-file VMDK kinds: the others are descriptors naming extent files elsewhere.
_VMDK_SINGLE_FILE = ("monolithicSparse", "streamOptimized")
# `qemu-img info` on a hostile image can eat memory and CPU: OpenStack's limits
# (nova/image/format_inspector and oslo's QEMU_IMG_LIMITS): 1 GiB of address space, 30 s CPU.
_INFO_LIMITS = ("--as=1073741824", "--cpu=30")
_ROOTFS_DIRS = frozenset({"bin", "sbin", "etc"})
_TAR_MEMBERS = 10_000  # members read looking for bin/, sbin/ or etc/ before giving up


class ConversionCancelled(Exception):
    """`convert_image` was asked to stop; the half-written output is left to the caller."""


@dataclass(frozen=True)
class ImageFacts:
    """What an image file is, as qemu-img and its magic numbers show it."""

    format: str  # one of FORMATS[type]
    virtual_size: int  # bytes the guest sees (a disk), else the file's size
    actual_size: int  # bytes it takes on disk
    backing_file: str | None = None  # qcow2/vmdk/vpc backing file: refused by check_image
    external_files: tuple[str, ...] = ()  # data files, VMDK extents elsewhere: refused too
    detail: str = ""  # the VMDK create type, "corrupt" (qcow2), a tar's compression


def check_conversion(image_type: ImageType, fmt: str | None) -> None:
    """Refuse at once a `--format` that cannot apply to the type (InvalidInput, 400)."""
    if fmt is None:
        return
    if image_type not in (ImageType.OS, ImageType.DATABLOCK):
        raise InvalidInput(
            f"--format converts disk images; a {image_type.value} image is kept as it is",
            hint="register it without --format",
        )
    if fmt not in DISK_FORMATS:
        raise InvalidInput(
            f"cannot convert to {fmt!r}: --format takes a disk format, one of "
            + ", ".join(DISK_FORMATS),
            hint="root filesystems (tar, dir) are detected, not converted to",
        )


def _head(path: Path, size: int = 65_664) -> bytes:
    """The first bytes of a file: enough for every magic number checked here."""
    with path.open("rb") as file:
        return file.read(size)


def _at(data: bytes, offset: int, magic: bytes) -> bool:
    return data[offset : offset + len(magic)] == magic


def _is_iso9660(head: bytes) -> bool:
    return _at(head, 32769, b"CD001")


def _looks_like_disk(head: bytes) -> bool:
    """A partition table or a filesystem a raw disk may start with."""
    return (
        _at(head, 510, b"\x55\xaa")  # MBR, or GPT's protective MBR
        or _at(head, 1080, b"\x53\xef")  # ext2/3/4 superblock magic 0xEF53
        or _is_iso9660(head)
        or _at(head, 0, b"XFSB")
        or _at(head, 65600, b"_BHRfS_M")  # btrfs superblock at 64 KiB
    )


_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
    b"\x02\x21\x4c\x18": "lz4",  # the legacy lz4 frame the kernel's initramfs uses
}


def _compression(head: bytes) -> str | None:
    return next((name for magic, name in _COMPRESSED.items() if head.startswith(magic)), None)


def _is_tar(head: bytes) -> bool:
    return _at(head, 257, b"ustar")


def _is_cpio(head: bytes) -> bool:
    return head[:6] in (b"070701", b"070702", b"070707") or head[:2] in (b"\xc7\x71", b"\x71\xc7")


def _decompressed_head(path: Path, compression: str) -> bytes | None:
    """The first bytes inside a gzip or xz file (None for other compressions, or when broken)."""
    opener: Any = {"gzip": gzip.open, "xz": lzma.open}.get(compression)
    if opener is None:
        return None
    try:
        with opener(path, "rb") as file:
            data: bytes = file.read(512)
            return data
    except (OSError, EOFError, lzma.LZMAError):
        return None


def _file_size(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_blocks * 512


def _facts(path: Path, fmt: str) -> ImageFacts:
    size, actual = _file_size(path)
    return ImageFacts(format=fmt, virtual_size=size, actual_size=actual)


def _run(command: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise DriverError(
            f"{command[0]} is not installed on the front-end",
            hint="install it (Debian: apt-get install qemu-utils)",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise DriverTimeout(f"{what} took longer than {timeout:g} s") from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def inspect_image(path: Path, timeout: float) -> ImageFacts:
    """`qemu-img info` of a file, with its format probed (raw when nothing else matches)."""
    command = ["qemu-img", "info", "--output=json", str(path)]
    if shutil.which("prlimit"):
        command = ["prlimit", *_INFO_LIMITS, "--", *command]
    done = _run(command, timeout, f"qemu-img info of {path}")
    if done.returncode != 0:
        raise InvalidInput(f"qemu-img cannot read the image: {_last_line(done.stderr)}")
    try:
        info = json.loads(done.stdout)
        fmt = str(info["format"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DriverError(f"qemu-img info printed no usable JSON for {path}: {exc}") from exc
    specific = (info.get("format-specific") or {}).get("data") or {}
    external: list[str] = []
    if specific.get("data-file"):
        external.append(str(specific["data-file"]))
    for extent in specific.get("extents") or ():
        name = str(extent.get("filename", ""))
        if name and Path(path.parent, name).resolve() != path.resolve():
            external.append(name)
    detail = str(specific.get("create-type", ""))
    if specific.get("corrupt"):
        detail = "corrupt"
    return ImageFacts(
        format=fmt,
        virtual_size=int(info.get("virtual-size", 0)),
        actual_size=int(info.get("actual-size", 0)),
        backing_file=info.get("backing-filename") or None,
        external_files=tuple(external),
        detail=detail,
    )


def check_image(path: Path, image_type: ImageType, *, label: str, timeout: float) -> ImageFacts:
    """What the image at `path` is, or InvalidInput saying why it is not a `image_type`.

    `label` names the image in messages (its source path or URL).
    """
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        if image_type is not ImageType.OS:
            raise InvalidInput(f"{label} is a directory: only an OS root filesystem can be one")
        return _check_rootfs_dir(path, label)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{label} is not a regular file")
    head = _head(path)
    if image_type is ImageType.CDROM:
        if not _is_iso9660(head):
            raise InvalidInput(
                f"{label} is not an ISO9660 image (no CD001 descriptor at 32769)",
                hint="register disks as OS or DATABLOCK; a CDROM must be an .iso",
            )
        return _facts(path, "iso")
    if image_type is ImageType.KERNEL:
        if not _at(head, 0x202, b"HdrS"):
            raise InvalidInput(
                f"{label} is not a Linux kernel: no bzImage header (HdrS at 0x202)",
                hint="give the vmlinuz file of a kernel package, not an ELF vmlinux",
            )
        return _facts(path, "kernel")
    if image_type is ImageType.RAMDISK:
        return _check_ramdisk(path, head, label)
    if image_type is ImageType.CONTEXT:
        size = info.st_size
        if size > MAX_CONTEXT_FILE:
            raise InvalidInput(
                f"{label} is {size} bytes: a CONTEXT file may have at most {MAX_CONTEXT_FILE}",
                hint="put big files on a DATABLOCK image instead",
            )
        return _facts(path, "file")
    if image_type is ImageType.OS and (_is_tar(head) or _compression(head)):
        return _check_rootfs_tar(path, head, label, timeout)
    return _check_disk(path, head, image_type, label, timeout)


def _check_disk(
    path: Path, head: bytes, image_type: ImageType, label: str, timeout: float
) -> ImageFacts:
    facts = inspect_image(path, timeout)
    if facts.format not in DISK_FORMATS:
        raise InvalidInput(
            f"{label} is a {facts.format} image: disks must be one of " + ", ".join(DISK_FORMATS),
            hint=f"convert it first: qemu-img convert -O qcow2 {label} disk.qcow2",
        )
    flatten = f"flatten it first: qemu-img convert -O {facts.format} {label} flat.{facts.format}"
    if facts.backing_file:
        raise InvalidInput(
            f"{label} is a {facts.format} image with a backing file ({facts.backing_file}):"
            " a backing file could name any file on the front-end",
            hint=flatten,
        )
    if facts.external_files:
        raise InvalidInput(
            f"{label} is a {facts.format} image whose data lives in other files"
            f" ({', '.join(facts.external_files)}), which could be any file on the front-end",
            hint=flatten,
        )
    if facts.format == "vmdk" and facts.detail not in _VMDK_SINGLE_FILE:
        raise InvalidInput(
            f"{label} is a {facts.detail or 'descriptor'} VMDK: only single-file VMDKs"
            f" ({', '.join(_VMDK_SINGLE_FILE)}) are accepted",
            hint="convert it first: qemu-img convert -O qcow2 in.vmdk disk.qcow2",
        )
    if facts.detail == "corrupt":
        raise InvalidInput(
            f"{label} is a {facts.format} image marked corrupt",
            hint=f"repair a copy with `qemu-img check -r all`, then register {label} again",
        )
    if facts.format != "raw":
        return facts
    size, actual = _file_size(path)
    raw = ImageFacts(format="raw", virtual_size=size, actual_size=actual)
    if image_type is ImageType.DATABLOCK:
        if size % 512:
            raise InvalidInput(
                f"{label} is {size} bytes, not a whole number of 512-byte sectors:"
                " a raw disk must be",
                hint="pad or truncate it to a multiple of 512 (truncate -s ...)",
            )
        return raw
    if not _looks_like_disk(head):
        raise InvalidInput(
            f"{label} is not a disk image: qemu-img sees raw data with no partition table"
            " or filesystem",
            hint="register a disk image (qcow2, or raw with a partition table or filesystem);"
            " an empty data disk is a DATABLOCK",
        )
    return raw


def _check_ramdisk(path: Path, head: bytes, label: str) -> ImageFacts:
    if _is_cpio(head):
        return _facts(path, "ramdisk")
    compression = _compression(head)
    if compression is not None:
        inner = _decompressed_head(path, compression)
        if inner is None and compression in ("gzip", "xz"):
            raise InvalidInput(f"{label} is {compression} data that does not decompress")
        if inner is None or _is_cpio(inner):  # zstd, lz4, bzip2: trusted by their magic
            return _facts(path, "ramdisk")
        raise InvalidInput(f"{label} is {compression}-compressed, but not a cpio archive")
    raise InvalidInput(
        f"{label} is not an initrd: neither a cpio archive nor a compressed one",
        hint="build one with `find . | cpio -o -H newc | gzip > initrd.img`",
    )


def _rootfs_hint(label: str) -> str:
    return (
        f"{label} should hold a root filesystem (bin/, sbin/ or etc/ at its top), e.g."
        " `tar -C rootfs -czf rootfs.tar.gz .`"
    )


def _check_rootfs_dir(path: Path, label: str) -> ImageFacts:
    if not any(os.path.lexists(path / name) for name in _ROOTFS_DIRS):
        raise InvalidInput(
            f"{label} is not a root filesystem: it has no bin/, sbin/ or etc/",
            hint=_rootfs_hint(label),
        )
    size = actual = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            size += info.st_size
            actual += info.st_blocks * 512
    return ImageFacts(format="dir", virtual_size=size, actual_size=actual)


def _check_rootfs_tar(path: Path, head: bytes, label: str, timeout: float) -> ImageFacts:
    compression = _compression(head)
    if compression in ("zstd", "lz4"):
        raise InvalidInput(
            f"{label} is {compression}-compressed: root filesystem archives must be tar,"
            " tar.gz, tar.bz2 or tar.xz",
            hint="recompress it: zstd -dc in.tar.zst | xz > rootfs.tar.xz",
        )
    deadline = time.monotonic() + timeout
    try:
        with tarfile.open(path, "r|*") as archive:
            for count, member in enumerate(archive):
                top = member.name.lstrip("/").removeprefix("./").split("/", 1)[0]
                if top in _ROOTFS_DIRS:
                    size, actual = _file_size(path)
                    return ImageFacts("tar", size, actual, detail=compression or "")
                if count >= _TAR_MEMBERS or time.monotonic() > deadline:
                    break
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
        kind = f"{compression} data" if compression else "data"
        raise InvalidInput(
            f"{label} is {kind} but not a readable tar archive: {exc}",
            hint="an OS image is a disk image, or a root filesystem as a tar archive",
        ) from exc
    raise InvalidInput(
        f"{label} is a tar archive without bin/, sbin/ or etc/ at its top: not a root filesystem",
        hint=_rootfs_hint(label),
    )


def convert_image(
    src: Path,
    dst: Path,
    src_format: str,
    fmt: str,
    *,
    timeout: float,
    cancel: threading.Event | None = None,
) -> None:
    """`qemu-img convert -f src_format -O fmt src dst`: killed on timeout or when `cancel` is set.

    The source format is given, never probed: a raw image holding a qcow2 header must stay raw.
    """
    command = ["qemu-img", "convert", "-f", src_format, "-O", fmt, str(src), str(dst)]
    if cancel is not None and cancel.is_set():
        raise ConversionCancelled(f"conversion of {src} to {fmt} cancelled")
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    except FileNotFoundError as exc:
        raise DriverError(
            "qemu-img is not installed on the front-end", hint="apt-get install qemu-utils"
        ) from exc
    deadline = time.monotonic() + timeout
    stderr = ""
    with process:
        while True:
            try:
                _, stderr = process.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    process.kill()
                    process.communicate()
                    raise ConversionCancelled(f"conversion of {src} to {fmt} cancelled") from None
                if time.monotonic() > deadline:
                    process.kill()
                    process.communicate()
                    raise DriverTimeout(
                        f"converting to {fmt} took longer than {timeout:g} s",
                        hint="raise the conversion timeout, or convert it before registering",
                    ) from None
    if process.returncode != 0:
        raise DriverError(f"qemu-img convert to {fmt} failed: {_last_line(stderr)}")
