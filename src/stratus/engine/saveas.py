"""`vm disk-saveas`: copy a VM's disk (flattened) back to the front-end as a new image.

Only while the disk is at rest (POWEROFF, STOPPED, UNDEPLOYED), so the copy is consistent.
The copy lands in a private temporary folder, is registered like any image (the import
checks, checksums and stores it), and the folder is removed once the import ends.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from stratus.engine.drivers import DriverSet, with_deadline
from stratus.engine.images import ImageService
from stratus.engine.runner import DbRunner
from stratus.model.errors import Conflict, InvalidInput
from stratus.model.lifecycle import VmState
from stratus.model.records import Image, ImageType

__all__ = ["save_disk_as"]

_AT_REST = (VmState.POWEROFF, VmState.STOPPED, VmState.UNDEPLOYED)
_IMPORT_WAIT = 3600.0
_CLEANUPS: set[asyncio.Task[None]] = set()  # referenced until done (asyncio keeps weak refs)


async def save_disk_as(
    db: DbRunner,
    drivers: DriverSet,
    images: ImageService,
    vm_id: int,
    disk: int,
    name: str,
    timeout: float,
) -> Image:
    """Save disk `disk` of a VM as image `name` (LOCKED while it imports)."""
    vm = await db.call(db.store.get_vm, vm_id)
    if vm.state not in _AT_REST:
        allowed = ", ".join(state.value for state in _AT_REST)
        raise Conflict(
            f"VM {vm_id} is {vm.state}: its disks are in use",
            hint=f"power it off first (`stratus vm poweroff {vm_id}`); saveas works in {allowed}",
        )
    disks = vm.template.get("DISK")
    count = len(disks) if isinstance(disks, list) else (1 if disks else 0)
    if not 0 <= disk < count:
        raise InvalidInput(f"VM {vm_id} has no DISK {disk} (it has {count})")
    host_id = vm.host_id
    if host_id is None:  # stopped or undeployed: the disks stay where it last ran
        history = await db.call(db.store.history, vm_id)
        host_id = history[-1].host_id if history else None
    if host_id is None:
        raise Conflict(f"VM {vm_id} never ran: it has no disk to save")
    host = await db.call(db.store.get_host, host_id)
    folder = Path(tempfile.mkdtemp(prefix=f"stratus-saveas-{vm_id}-"))
    try:
        dest = folder / f"disk.{disk}.qcow2"
        call = drivers.get(host.driver).save_disk(drivers.host_info(host), vm_id, disk, str(dest))
        await with_deadline(call, timeout, "saving the disk")
        image = await images.register(
            name,
            path=str(dest),
            image_type=ImageType.OS,
            description=f"disk {disk} of VM {vm_id} ({vm.name})",
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    async def remove_when_imported() -> None:
        try:
            await images.wait(image.id, _IMPORT_WAIT)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    task = asyncio.get_running_loop().create_task(remove_when_imported())
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    return image
