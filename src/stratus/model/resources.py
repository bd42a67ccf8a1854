"""What a VM template asks for beyond CPU and memory: images, networks, a kernel, files.

Pure: the engine resolves these names against the image and network tables when the VM is
submitted (so a missing image or network, or a network with no free lease, is refused at
once and nothing is created) and again when it is deployed.

The image uses of a VM are numbered: disks by their position (0, 1, ...), the kernel and
initrd of the OS section as KERNEL_USE and INITRD_USE, and CONTEXT FILES from FILES_USE
downwards, so one (image, VM, index) row records each use.
"""

from __future__ import annotations

from dataclasses import dataclass

from stratus.model.errors import InvalidInput
from stratus.model.template import VmSpec

__all__ = [
    "FILES_USE",
    "INITRD_USE",
    "KERNEL_USE",
    "DiskRequest",
    "NicRequest",
    "ResourceRequests",
    "placement_requirement",
    "resource_requests",
]

KERNEL_USE = -1
INITRD_USE = -2
FILES_USE = -10  # FILES_USE - i for the i-th file
CONTAINER_FORMATS = frozenset({"tar", "dir"})
MAX_DISKS = 16
MAX_NICS = 8


@dataclass(frozen=True)
class DiskRequest:
    index: int
    image: str  # image name


@dataclass(frozen=True)
class NicRequest:
    index: int
    network: str  # virtual network name
    address: str | None  # a wanted IP or MAC (NIC = [ IP = ... ] / [ MAC = ... ])


@dataclass(frozen=True)
class ResourceRequests:
    disks: tuple[DiskRequest, ...] = ()
    nics: tuple[NicRequest, ...] = ()
    kernel: str | None = None  # OS = [ KERNEL = "image" ]: a KERNEL image
    initrd: str | None = None  # OS = [ INITRD = "image" ]: a RAMDISK image
    cmdline: str = ""  # OS = [ KERNEL_CMD = "..." ]
    files: tuple[str, ...] = ()  # CONTEXT = [ FILES = "a b" ]: CONTEXT images
    cloud: bool = False  # the template also has EC2 / PUBLIC_CLOUD sections (hybrid)

    @property
    def empty(self) -> bool:
        return not (self.disks or self.nics or self.kernel or self.initrd or self.files)

    def image_uses(self) -> list[tuple[str, int]]:
        """(image name, use index) of every image the VM uses."""
        uses = [(disk.image, disk.index) for disk in self.disks]
        if self.kernel:
            uses.append((self.kernel, KERNEL_USE))
        if self.initrd:
            uses.append((self.initrd, INITRD_USE))
        uses.extend((name, FILES_USE - i) for i, name in enumerate(self.files))
        return uses

    def image_names(self) -> list[str]:
        return sorted({name for name, _ in self.image_uses()})

    def network_names(self) -> list[str]:
        return sorted({nic.network for nic in self.nics})


def resource_requests(spec: VmSpec) -> ResourceRequests:
    """The images and networks a template names; InvalidInput naming a malformed section."""
    if len(spec.disks) > MAX_DISKS or len(spec.nics) > MAX_NICS:
        raise InvalidInput(f"a VM may have at most {MAX_DISKS} DISKs and {MAX_NICS} NICs")
    disks = []
    for i, disk in enumerate(spec.disks):
        image = str(disk.get("IMAGE", "")).strip()
        if not image and disk.get("SOURCE"):
            continue  # a legacy DISK = [ SOURCE = "/path" ] (the source's appendix B): kept
            # in the template as written, no registered image to resolve
        if not image:
            raise InvalidInput(
                f'DISK {i} names no IMAGE: write DISK = [ IMAGE = "name" ] '
                "(see `stratus image list`)"
            )
        disks.append(DiskRequest(i, image))
    nics = []
    for i, nic in enumerate(spec.nics):
        network = str(nic.get("NETWORK", "")).strip()
        if not network and nic.get("BRIDGE"):
            continue  # a legacy NIC = [ BRIDGE = "br0" ]: no virtual network, no lease
        if not network:
            raise InvalidInput(
                f'NIC {i} names no NETWORK: write NIC = [ NETWORK = "name" ] '
                "(see `stratus vnet list`)"
            )
        wanted = str(nic.get("IP", "") or nic.get("MAC", "")).strip() or None
        nics.append(NicRequest(i, network, wanted))
    os_section = spec.os or {}
    files_text = str((spec.context or {}).get("FILES", ""))
    return ResourceRequests(
        disks=tuple(disks),
        nics=tuple(nics),
        kernel=_image_name(os_section.get("KERNEL")),
        initrd=_image_name(os_section.get("INITRD")),
        cmdline=str(os_section.get("KERNEL_CMD", "")).strip(),
        files=tuple(files_text.split()),
        cloud=bool(spec.providers),
    )


def _image_name(value: object) -> str | None:
    """An OS section's KERNEL/INITRD as an image name; a path ("/vmlinuz", the legacy
    form of the source's appendix B) names no registered image."""
    text = str(value or "").strip()
    return text if text and not text.startswith("/") else None


def placement_requirement(
    disk_formats: list[str], nic_drivers: list[str], *, cloud: bool = False
) -> str:
    """The hypervisor a VM needs, as a requirement expression ("" when any will do).

    Root filesystems (tar, dir) run as containers; disk images and QEMU user networking
    need QEMU. A VM asking for both is refused, naming the clash. A hybrid template
    (`cloud`: it has EC2 or PUBLIC_CLOUD sections) may also go to a public cloud.
    """
    requirement = _local_requirement(disk_formats, nic_drivers)
    if requirement and cloud:
        return f'{requirement} | PUBLIC_CLOUD = "YES"'
    return requirement


def _local_requirement(disk_formats: list[str], nic_drivers: list[str]) -> str:
    container = any(fmt in CONTAINER_FORMATS for fmt in disk_formats)
    vm_disk = any(fmt not in CONTAINER_FORMATS for fmt in disk_formats)
    if container and (vm_disk or "user" in nic_drivers):
        why = "a disk image" if vm_disk else "a QEMU user network"
        raise InvalidInput(
            f"the template mixes a container root filesystem with {why}: containers (lxc) "
            "need root filesystem images and bridge networks; VMs (qemu) need disk images"
        )
    if container:
        return 'HYPERVISOR = "lxc"'
    if vm_disk or "user" in nic_drivers:
        return 'HYPERVISOR = "qemu"'
    return ""
