"""What an image file is: real qemu-img on real files, and the content checks per type."""

from __future__ import annotations

import lzma
import os
import threading
import time
from pathlib import Path

import pytest

from stratus.drivers.imagefmt import (
    ConversionCancelled,
    check_conversion,
    check_image,
    convert_image,
    inspect_image,
)
from stratus.model.errors import DriverTimeout, InvalidInput
from stratus.model.records import ImageType
from tests.imagefiles import (
    MB,
    cpio_bytes,
    gzip_bytes,
    make_bzimage,
    make_iso,
    make_mbr_disk,
    make_qcow2,
    make_rootfs_dir,
    make_rootfs_tar,
)

OS, DATABLOCK, CDROM = ImageType.OS, ImageType.DATABLOCK, ImageType.CDROM
KERNEL, RAMDISK, CONTEXT = ImageType.KERNEL, ImageType.RAMDISK, ImageType.CONTEXT


def _check(path: Path, image_type: ImageType) -> str:
    return check_image(path, image_type, label=path.name, timeout=30).format


def _refusal(path: Path, image_type: ImageType) -> str:
    with pytest.raises(InvalidInput) as caught:
        check_image(path, image_type, label=path.name, timeout=30)
    return caught.value.message


def test_qemu_img_info_reports_format_and_virtual_size(tmp_path: Path) -> None:
    facts = inspect_image(make_qcow2(tmp_path / "a.qcow2", "64M"), timeout=30)
    assert (facts.format, facts.virtual_size, facts.backing_file) == ("qcow2", 64 * MB, None)
    assert 0 < facts.actual_size < MB


def test_a_qcow2_is_an_os_disk_or_a_datablock(tmp_path: Path) -> None:
    disk = make_qcow2(tmp_path / "a.qcow2")
    assert _check(disk, OS) == _check(disk, DATABLOCK) == "qcow2"


def test_a_qcow2_with_a_backing_file_is_refused_naming_it(tmp_path: Path) -> None:
    make_qcow2(tmp_path / "base.qcow2")
    overlay = make_qcow2(tmp_path / "over.qcow2", "64M", "-b", "base.qcow2", "-F", "qcow2")
    message = _refusal(overlay, OS)
    assert "backing file (base.qcow2)" in message and "any file on the front-end" in message


def test_a_qcow2_with_an_external_data_file_is_refused(tmp_path: Path) -> None:
    data_file = tmp_path / "data.raw"
    disk = make_qcow2(tmp_path / "d.qcow2", "1M", "-o", f"data_file={data_file}")
    assert str(data_file) in _refusal(disk, DATABLOCK)


def test_a_vmdk_descriptor_pointing_at_another_file_is_refused(tmp_path: Path) -> None:
    descriptor = tmp_path / "evil.vmdk"
    descriptor.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 8 FLAT "/etc/hostname" 0\n'
    )
    assert "/etc/hostname" in _refusal(descriptor, OS)


def test_a_raw_disk_with_an_mbr_is_an_os_disk(tmp_path: Path) -> None:
    assert _check(make_mbr_disk(tmp_path / "disk.img"), OS) == "raw"


def test_a_raw_disk_with_an_ext4_superblock_is_an_os_disk(tmp_path: Path) -> None:
    data = bytearray(4 * MB)
    data[1080:1082] = b"\x53\xef"
    (tmp_path / "fs.img").write_bytes(bytes(data))
    assert _check(tmp_path / "fs.img", OS) == "raw"


def test_a_text_file_claimed_as_an_os_disk_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a disk\n" * 100)
    assert _refusal(notes, OS) == (
        "notes.txt is not a disk image: qemu-img sees raw data with no partition table"
        " or filesystem"
    )


def test_a_raw_datablock_must_be_whole_sectors(tmp_path: Path) -> None:
    (tmp_path / "odd.img").write_bytes(bytes(1000))
    (tmp_path / "even.img").write_bytes(bytes(1024))
    assert "512-byte sectors" in _refusal(tmp_path / "odd.img", DATABLOCK)
    assert _check(tmp_path / "even.img", DATABLOCK) == "raw"


def test_an_iso_is_a_cdrom_and_a_qcow2_is_not(tmp_path: Path) -> None:
    assert _check(make_iso(tmp_path / "a.iso"), CDROM) == "iso"
    assert "not an ISO9660 image" in _refusal(make_qcow2(tmp_path / "a.qcow2"), CDROM)


def test_a_kernel_needs_the_bzimage_header(tmp_path: Path) -> None:
    assert _check(make_bzimage(tmp_path / "vmlinuz"), KERNEL) == "kernel"
    assert "HdrS" in _refusal(make_mbr_disk(tmp_path / "disk.img"), KERNEL)


def test_a_ramdisk_is_a_cpio_archive_maybe_compressed(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(cpio_bytes())
    (tmp_path / "gz").write_bytes(gzip_bytes(cpio_bytes()))
    (tmp_path / "xz").write_bytes(lzma.compress(cpio_bytes()))
    (tmp_path / "gz-text").write_bytes(gzip_bytes(b"hello world\n"))
    assert {_check(tmp_path / name, RAMDISK) for name in ("plain", "gz", "xz")} == {"ramdisk"}
    assert "not a cpio archive" in _refusal(tmp_path / "gz-text", RAMDISK)
    assert "not an initrd" in _refusal(make_iso(tmp_path / "a.iso"), RAMDISK)


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:xz"])
def test_a_root_filesystem_tarball_is_an_os_image_for_containers(tmp_path: Path, mode: str) -> None:
    assert _check(make_rootfs_tar(tmp_path / "rootfs.tar", mode), OS) == "tar"


def test_a_tarball_without_bin_sbin_or_etc_is_not_a_root_filesystem(tmp_path: Path) -> None:
    archive = make_rootfs_tar(tmp_path / "photos.tar.gz", top="photos")
    assert "not a root filesystem" in _refusal(archive, OS)


def test_a_root_filesystem_directory_is_an_os_image_and_nothing_else(tmp_path: Path) -> None:
    rootfs = make_rootfs_dir(tmp_path / "rootfs")
    assert _check(rootfs, OS) == "dir"
    assert "is a directory" in _refusal(rootfs, DATABLOCK)
    (tmp_path / "empty").mkdir()
    assert "no bin/, sbin/ or etc/" in _refusal(tmp_path / "empty", OS)


def test_a_context_file_is_any_small_regular_file(tmp_path: Path) -> None:
    (tmp_path / "init.sh").write_text("#!/bin/sh\necho hi\n")
    with (tmp_path / "big").open("wb") as big:
        big.truncate(11 * MB)
    assert _check(tmp_path / "init.sh", CONTEXT) == "file"
    assert "at most" in _refusal(tmp_path / "big", CONTEXT)


def test_format_requests_that_make_no_sense_for_the_type_are_refused() -> None:
    check_conversion(OS, "raw")
    check_conversion(DATABLOCK, "qcow2")
    check_conversion(KERNEL, None)
    with pytest.raises(InvalidInput, match="KERNEL image is kept as it is"):
        check_conversion(KERNEL, "raw")
    with pytest.raises(InvalidInput, match="disk format"):
        check_conversion(OS, "tar")


def test_convert_turns_a_qcow2_into_a_sparse_raw_disk_of_the_same_size(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    convert_image(make_qcow2(tmp_path / "a.qcow2", "64M"), raw, "qcow2", "raw", timeout=60)
    facts = inspect_image(raw, timeout=30)
    assert (facts.format, facts.virtual_size) == ("raw", 64 * MB)
    assert raw.stat().st_blocks * 512 < MB  # holes, not 64 MB of zeros


def test_a_stuck_conversion_is_killed_when_cancelled_or_late(tmp_path: Path) -> None:
    stuck = tmp_path / "fifo"
    os.mkfifo(stuck)  # qemu-img waits forever for a writer
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(ConversionCancelled):
        convert_image(stuck, tmp_path / "a.qcow2", "raw", "qcow2", timeout=30, cancel=cancel)
    started = time.monotonic()
    with pytest.raises(DriverTimeout, match=r"longer than 0\.5 s"):
        convert_image(stuck, tmp_path / "b.qcow2", "raw", "qcow2", timeout=0.5)
    assert time.monotonic() - started < 5
