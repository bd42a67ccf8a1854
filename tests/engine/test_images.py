"""ImageService: real imports (files, qemu-img, a loopback HTTP server) into a real datastore."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stratus.engine.images import INTERRUPTED, SHUT_DOWN, ImageService, ImportLimits
from stratus.model.errors import Conflict, InvalidInput
from stratus.model.records import Image, ImageState, ImageType
from stratus.store import Store
from tests.imagefiles import (  # noqa: F401 (file_server is a fixture)
    MB,
    FileServer,
    file_server,
    make_mbr_disk,
    make_qcow2,
    make_rootfs_dir,
    make_rootfs_tar,
)
from tests.store.helpers import new_vm

pytestmark = pytest.mark.anyio

LIMITS = ImportLimits(inspect_timeout=30, convert_timeout=60, progress_interval=0.05)


@pytest.fixture
async def images(sqlite_store: Store, tmp_path: Path) -> AsyncIterator[ImageService]:
    service = ImageService(sqlite_store, tmp_path / "data", limits=LIMITS)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def _imported(images: ImageService, image: Image, timeout: float = 20) -> Image:
    """The image once its import ended (READY or ERROR)."""
    await images.wait(image.id, timeout)
    return images.store.get_image(image.id)


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _slow_body(server: FileServer, size: int = 2 * MB) -> str:
    """A URL that takes about a second to download."""
    chunk = 64 * 1024
    return server.serve("/slow.img", bytes(size), chunk=chunk, delay=chunk / size)


async def test_a_qcow2_from_a_path_becomes_ready_with_its_checksum(
    images: ImageService, tmp_path: Path
) -> None:
    source = make_qcow2(tmp_path / "debian.qcow2", "64M")
    image = await images.register("debian", path=str(source), description="Debian 12")
    assert (image.state, image.source, image.progress) == (ImageState.LOCKED, str(source), 0.0)
    ready = await _imported(images, image)
    stored = images.datastore / str(image.id) / "disk.qcow2"
    assert (ready.state, ready.format, ready.size, ready.path) == (
        ImageState.READY,
        "qcow2",
        64 * MB,
        str(stored),
    )
    assert ready.checksum == _sha256(source) == _sha256(stored)
    assert ready.description == "Debian 12"
    assert stored.read_bytes() == source.read_bytes()


async def test_a_raw_disk_with_a_partition_table_becomes_ready_as_raw(
    images: ImageService, tmp_path: Path
) -> None:
    image = await images.register("mbr", path=str(make_mbr_disk(tmp_path / "disk.img")))
    ready = await _imported(images, image)
    assert (ready.state, ready.format, ready.size) == (ImageState.READY, "raw", MB)


async def test_an_image_from_a_url_becomes_ready_and_its_source_hides_credentials(
    images: ImageService,
    tmp_path: Path,
    file_server: FileServer,  # noqa: F811
) -> None:
    disk = make_qcow2(tmp_path / "a.qcow2", "16M")
    url = file_server.serve("/images/a.qcow2", disk.read_bytes())
    with_credentials = url.replace("http://", "http://bob:secret@")
    image = await images.register("remote", url=with_credentials, image_type=ImageType.DATABLOCK)
    assert "secret" not in image.source
    ready = await _imported(images, image)
    assert (ready.state, ready.format, ready.checksum) == (
        ImageState.READY,
        "qcow2",
        _sha256(disk),
    )
    assert "secret" not in ready.source + ready.reason


async def test_progress_shows_while_a_slow_download_is_locked(
    images: ImageService,
    file_server: FileServer,  # noqa: F811
) -> None:
    url = _slow_body(file_server)
    image = await images.register("slow", url=url, image_type=ImageType.DATABLOCK)
    seen: set[float] = set()
    deadline = time.monotonic() + 20
    while (current := images.store.get_image(image.id)).state is ImageState.LOCKED:
        seen.add(current.progress)
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.02)
    assert current.state is ImageState.READY
    partial = sorted(p for p in seen if 0 < p < 1)
    assert partial, f"no progress between 0 and 1 was seen: {sorted(seen)}"


async def test_a_big_sparse_disk_is_copied_sparse(images: ImageService, tmp_path: Path) -> None:
    source = make_mbr_disk(tmp_path / "big.img")
    with source.open("r+b") as file:
        file.truncate(300 * MB)
    ready = await _imported(images, await images.register("big", path=str(source)), timeout=60)
    assert (ready.state, ready.size) == (ImageState.READY, 300 * MB)
    assert ready.actual_size < 4 * MB  # holes stay holes in the datastore
    assert Path(ready.path).stat().st_blocks * 512 == ready.actual_size


async def test_a_text_file_claimed_as_an_os_disk_fails_and_leaves_nothing(
    images: ImageService, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n" * 1000)
    failed = await _imported(images, await images.register("notes", path=str(notes)))
    assert failed.state is ImageState.ERROR
    assert failed.reason.startswith(
        f"{notes} is not a disk image: qemu-img sees raw data with no partition table"
    )
    assert not (images.datastore / str(failed.id)).exists()
    events = images.store.events(object_type="image", object_id=failed.id)
    assert [(e.to_state, e.reason) for e in events][-1] == ("ERROR", failed.reason)


async def test_a_qcow2_is_converted_to_raw_on_request(images: ImageService, tmp_path: Path) -> None:
    source = make_qcow2(tmp_path / "a.qcow2", "32M")
    image = await images.register("flat", path=str(source), fmt="raw")
    ready = await _imported(images, image)
    stored = Path(ready.path)
    assert (ready.state, ready.format, ready.size, stored.name) == (
        ImageState.READY,
        "raw",
        32 * MB,
        "disk.raw",
    )
    assert ready.checksum == _sha256(stored) != _sha256(source)
    assert sorted(p.name for p in stored.parent.iterdir()) == ["disk.raw"]


async def test_a_qcow2_claimed_as_a_cdrom_fails_naming_the_mismatch(
    images: ImageService, tmp_path: Path
) -> None:
    source = make_qcow2(tmp_path / "a.qcow2")
    image = await images.register("cd", path=str(source), image_type=ImageType.CDROM)
    failed = await _imported(images, image)
    assert failed.state is ImageState.ERROR
    assert "is not an ISO9660 image" in failed.reason


async def test_bad_requests_are_refused_at_once_and_create_nothing(
    images: ImageService, tmp_path: Path
) -> None:
    disk = str(make_qcow2(tmp_path / "a.qcow2"))
    refused = {
        "KERNEL image is kept as it is": {
            "path": disk,
            "image_type": ImageType.KERNEL,
            "fmt": "raw",
        },
        "is relative": {"path": "a.qcow2"},
        "not both": {"path": disk, "url": "http://127.0.0.1/a"},
        "needs a source": {},
        "cannot be persistent": {"path": disk, "image_type": ImageType.CDROM, "persistent": True},
        "not an http or https URL": {"url": "ftp://127.0.0.1/a.qcow2"},
        "data dir": {"path": str(tmp_path)},  # it holds the data dir
    }
    for message, request in refused.items():
        with pytest.raises(InvalidInput, match=message):
            await images.register("x", **request)  # type: ignore[arg-type]
    assert images.store.list_images() == []


async def test_root_filesystems_import_as_tar_or_dir_for_containers(
    images: ImageService, tmp_path: Path
) -> None:
    tarball = make_rootfs_tar(tmp_path / "alpine.tar.xz", "w:xz")
    rootfs = make_rootfs_dir(tmp_path / "rootfs")
    tar_image = await _imported(images, await images.register("alpine", path=str(tarball)))
    dir_image = await _imported(images, await images.register("tree", path=str(rootfs)))
    assert (tar_image.state, tar_image.format, Path(tar_image.path).name) == (
        ImageState.READY,
        "tar",
        "rootfs.tar.xz",
    )
    assert (dir_image.state, dir_image.format) == (ImageState.READY, "dir")
    copied = Path(dir_image.path)
    assert (copied / "etc" / "hostname").read_text() == "container\n"
    assert (copied / "bin").is_symlink()


async def test_start_fails_imports_a_crash_left_locked_and_removes_their_files(
    sqlite_store: Store, tmp_path: Path
) -> None:
    service = ImageService(sqlite_store, tmp_path / "data", limits=LIMITS)
    left = sqlite_store.add_image(
        "half", ImageType.OS, persistent=False, source="/srv/x", datastore="images"
    )
    partial = service.datastore / str(left.id)
    partial.mkdir(parents=True)
    (partial / ".incoming").write_bytes(b"half a disk")
    await service.start()
    try:
        failed = sqlite_store.get_image(left.id)
        assert (failed.state, failed.reason) == (ImageState.ERROR, INTERRUPTED)
        assert not partial.exists()
    finally:
        await service.stop()


async def test_stop_interrupts_an_import_and_cleans_up(
    sqlite_store: Store,
    tmp_path: Path,
    file_server: FileServer,  # noqa: F811
) -> None:
    service = ImageService(sqlite_store, tmp_path / "data", limits=LIMITS)
    await service.start()
    image = await service.register("slow", url=_slow_body(file_server))
    await asyncio.sleep(0.2)
    await service.stop()
    stopped = sqlite_store.get_image(image.id)
    assert (stopped.state, stopped.reason) == (ImageState.ERROR, SHUT_DOWN)
    assert not (service.datastore / str(image.id)).exists()


async def test_deleting_an_importing_image_stops_the_import(
    images: ImageService,
    file_server: FileServer,  # noqa: F811
) -> None:
    image = await images.register("slow", url=_slow_body(file_server))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await images.delete("slow")
    assert time.monotonic() - started < 2
    assert images.store.list_images() == [] and images.importing == []
    assert not (images.datastore / str(image.id)).exists()


async def test_an_image_in_use_cannot_be_deleted_until_its_vm_releases_it(
    images: ImageService, tmp_path: Path
) -> None:
    ready = await _imported(
        images, await images.register("debian", path=str(make_qcow2(tmp_path / "a.qcow2")))
    )
    [vm] = images.store.create_vms([new_vm("web")])
    images.store.record_image_uses(vm.id, [(ready.id, 0)])
    with pytest.raises(Conflict, match=rf"image 'debian' is used by VM {vm.id} \(web\)"):
        await images.delete("debian")
    assert Path(ready.path).exists()
    images.store.release_image_uses(vm.id)
    await images.delete(ready.id)
    assert not Path(ready.path).parent.exists()


async def test_disable_keeps_an_image_from_new_vms_and_enable_restores_it(
    images: ImageService, tmp_path: Path
) -> None:
    image = await images.register("debian", path=str(make_qcow2(tmp_path / "a.qcow2")))
    await _imported(images, image)
    assert (await images.operate("debian", "disable")).state is ImageState.DISABLED
    [vm] = images.store.create_vms([new_vm("web")])
    with pytest.raises(Conflict, match="is disabled"):
        images.store.record_image_uses(vm.id, [(image.id, 0)])
    assert (await images.operate(image.id, "enable")).state is ImageState.READY
