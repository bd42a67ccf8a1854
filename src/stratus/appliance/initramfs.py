"""The appliance's initramfs: static busybox, the kernel modules it needs, and /init.

Debian's cloud kernel builds virtio, isofs and the ACPI button as modules, so a small
initramfs loads them before mounting the root disk. The module chains (dependencies
first) come from `depmod -b` + `modprobe --show-depends` on the unpacked kernel package.
The archive is written here as a gzip'd newc cpio, so the entries are owned by root and
/dev/console exists without needing root or mknod on the build machine.
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

from stratus.appliance.tools import find_tool, run
from stratus.model.errors import DriverError

__all__ = ["INITRD_MODULES", "NewcArchive", "build_initrd", "module_chain"]

#: what the appliance needs from the kernel beyond what is built in: virtio PCI, disk and
#: NIC, the ISO 9660 context CD-ROM, and the ACPI power button seen through evdev
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "isofs", "button", "evdev")

_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000
_S_IFCHR = 0o020000


class NewcArchive:
    """An in-memory cpio archive in the "newc" format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._inode = 0

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._add(name, _S_IFDIR | mode, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._add(name, _S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._add(name, _S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._add(name, _S_IFCHR | mode, b"", rdev=(major, minor))

    def to_bytes(self) -> bytes:
        """The archive with its trailer."""
        trailer = self._entry("TRAILER!!!", 0, b"", (0, 0), inode=0)
        return b"".join([*self._chunks, trailer])

    def _add(self, name: str, mode: int, data: bytes, rdev: tuple[int, int] = (0, 0)) -> None:
        self._inode += 1
        self._chunks.append(self._entry(name.lstrip("/"), mode, data, rdev, self._inode))

    @staticmethod
    def _entry(name: str, mode: int, data: bytes, rdev: tuple[int, int], inode: int) -> bytes:
        encoded = name.encode() + b"\0"
        nlink = 2 if mode & _S_IFDIR == _S_IFDIR else 1
        fields = (inode, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        return _pad4(header + encoded) + _pad4(data)


def module_chain(kernel_root: Path, kernel_version: str, names: tuple[str, ...]) -> list[Path]:
    """The .ko files to load, dependencies first, for `names` (built-in ones left out)."""
    find_tool("depmod", "kmod")
    run(["depmod", "-b", kernel_root, kernel_version], timeout=120)
    chain: list[Path] = []
    for name in names:
        shown = run(
            ["modprobe", "-d", kernel_root, "-S", kernel_version, "--show-depends", name],
            timeout=60,
        )
        for line in shown.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod" and Path(words[1]) not in chain:
                chain.append(Path(words[1]))
    return chain


def build_initrd(
    *,
    busybox: Path,
    applets: list[str],
    modules: list[Path],
    init_script: bytes,
) -> bytes:
    """The gzip'd initramfs: /bin/busybox with applet links, /lib/modules, /init."""
    archive = NewcArchive()
    for directory in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)
    archive.char_device("dev/null", 1, 3, mode=0o666)
    archive.file("bin/busybox", busybox.read_bytes(), mode=0o755)
    for applet in applets:
        if applet != "busybox":
            archive.symlink(f"bin/{applet}", "busybox")
    order = []
    for module in modules:
        name = _plain_module_name(module)
        archive.file(f"lib/modules/{name}", _plain_module(module))
        order.append(name)
    archive.file("lib/modules/load-order", "".join(f"{n}\n" for n in order).encode())
    archive.file("init", init_script, mode=0o755)
    return gzip.compress(archive.to_bytes(), compresslevel=9, mtime=0)


def _plain_module_name(module: Path) -> str:
    name = module.name
    for suffix in (".xz", ".gz"):
        name = name.removesuffix(suffix)
    return name


def _plain_module(module: Path) -> bytes:
    """The module uncompressed: busybox insmod may not read compressed ones."""
    data = module.read_bytes()
    if module.name.endswith(".ko"):
        return data
    if module.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if module.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    raise DriverError(
        f"cannot unpack the kernel module {module.name}",
        hint="the appliance handles .ko, .ko.xz and .ko.gz modules",
    )


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)
