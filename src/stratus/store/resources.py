"""A VM's images and leases, taken with the VM in one transaction and given back when it ends
(store/changes.py, in the transaction that moves it to DONE).

Submitting a VM that names a missing image or network, an image that cannot be used, or a
network with no free address fails as a whole: the transaction rolls back and no VM, image
use or lease is left behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from stratus.model.errors import InvalidInput
from stratus.model.records import Vm
from stratus.model.resources import (
    INITRD_USE,
    KERNEL_USE,
    ResourceRequests,
    placement_requirement,
)
from stratus.store import images as images_mod
from stratus.store import vnets as vnets_mod
from stratus.store.tables import image_uses, images
from stratus.store.vms import NewVm, insert_vms

__all__ = ["ImageUse", "insert_vms_with_resources", "vm_image_uses"]


def insert_vms_with_resources(
    conn: Connection, now: datetime, new: Sequence[NewVm], requests: ResourceRequests
) -> list[Vm]:
    """Insert VMs and take their image uses and leases; any refusal rolls everything back."""
    if requests.empty:
        return insert_vms(conn, now, new)
    images = images_mod.find_images_by_name(conn, requests.image_names())
    networks = {name: vnets_mod.find_vnet(conn, name) for name in requests.network_names()}
    requirement = placement_requirement(
        [images[disk.image].format for disk in requests.disks],
        [networks[nic.network].driver for nic in requests.nics],
        cloud=requests.cloud,
    )
    if requirement:
        new = [
            dataclasses.replace(
                vm,
                requirements=f"({vm.requirements}) & ({requirement})"
                if vm.requirements
                else requirement,
            )
            for vm in new
        ]
    for name, index in requests.image_uses():
        _check_use(name, str(images[name].type), index)
    created = insert_vms(conn, now, new)
    uses = [(images[name].id, index) for name, index in requests.image_uses()]
    wanted = [vnets_mod.LeaseRequest(nic.index, nic.network, nic.address) for nic in requests.nics]
    for vm in created:
        if uses:
            images_mod.record_image_uses(conn, vm.id, uses)
        if wanted:
            vnets_mod.allocate_leases(conn, now, vm.id, wanted)
    return created


@dataclass(frozen=True)
class ImageUse:
    """An image a VM uses, as its deploy needs it."""

    index: int  # disk position, or KERNEL_USE / INITRD_USE / FILES_USE - i
    image_id: int
    name: str
    type: str
    format: str
    path: str
    persistent: bool
    checksum: str = ""  # "sha256:<hex>"


def vm_image_uses(conn: Connection, vm_id: int) -> list[ImageUse]:
    """The images a VM uses, by use index."""
    rows = conn.execute(
        select(
            image_uses.c.disk_index,
            images.c.id,
            images.c.name,
            images.c.type,
            images.c.format,
            images.c.path,
            images.c.persistent,
            images.c.checksum,
        )
        .select_from(image_uses.join(images, image_uses.c.image_id == images.c.id))
        .where(image_uses.c.vm_id == vm_id)
        .order_by(image_uses.c.disk_index)
    )
    return [ImageUse(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows]


def _check_use(name: str, kind: str, index: int) -> None:
    """An image used where its type fits: disks OS/CDROM/DATABLOCK, the kernel a KERNEL..."""
    wanted: tuple[str, ...]
    if index >= 0:
        wanted, where = ("OS", "CDROM", "DATABLOCK"), f"DISK {index}"
    elif index == KERNEL_USE:
        wanted, where = ("KERNEL",), "OS KERNEL"
    elif index == INITRD_USE:
        wanted, where = ("RAMDISK",), "OS INITRD"
    else:
        wanted, where = ("CONTEXT",), "CONTEXT FILES"
    if kind not in wanted:
        raise InvalidInput(
            f"{where} names image {name!r}, a {kind} image",
            hint=f"{where} takes a{'n' if wanted[0][0] in 'AEIOU' else ''} "
            f"{' or '.join(wanted)} image (see `stratus image list`)",
        )
