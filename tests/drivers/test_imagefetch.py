"""Copying and downloading images: sparse, hashed, bounded, cancellable; paths and URLs checked."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from stratus.drivers.imagefetch import (
    TransferCancelled,
    TransferLimits,
    check_source_path,
    check_url,
    copy_file,
    copy_tree,
    download,
    public_url,
)
from stratus.model.errors import DriverError, InvalidInput
from tests.imagefiles import MB, FileServer, file_server, make_rootfs_dir  # noqa: F401

LIMITS = TransferLimits(max_size=64 * MB, timeout=30, connect_timeout=5, read_timeout=5)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _nothing(done: int, total: int | None) -> None:
    pass


def test_a_copy_is_hashed_and_stays_sparse(tmp_path: Path) -> None:
    src = tmp_path / "sparse.img"
    with src.open("wb") as file:
        file.write(b"boot")
        file.seek(40 * MB)
        file.write(b"end")
    seen: list[tuple[int, int | None]] = []
    fetched = copy_file(
        src,
        tmp_path / "copy",
        limits=LIMITS,
        progress=lambda d, t: seen.append((d, t)),
        cancel=threading.Event(),
    )
    copy = tmp_path / "copy"
    assert copy.read_bytes() == src.read_bytes()
    assert fetched.checksum == _sha(src.read_bytes())
    assert fetched.size == copy.stat().st_size == 40 * MB + 3
    assert copy.stat().st_blocks * 512 < 3 * MB  # the 39 MB hole stayed a hole
    assert seen[-1] == (40 * MB + 3, 40 * MB + 3)


def test_a_copy_over_the_size_limit_stops(tmp_path: Path) -> None:
    src = tmp_path / "big"
    with src.open("wb") as file:
        file.truncate(65 * MB)
    with pytest.raises(InvalidInput, match="larger than 64M"):
        copy_file(src, tmp_path / "c", limits=LIMITS, progress=_nothing, cancel=threading.Event())


def test_a_cancelled_copy_stops(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 3 * MB)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TransferCancelled):
        copy_file(tmp_path / "a", tmp_path / "b", limits=LIMITS, progress=_nothing, cancel=cancel)


def test_a_tree_copy_keeps_links_and_its_checksum_is_stable(tmp_path: Path) -> None:
    rootfs = make_rootfs_dir(tmp_path / "rootfs")
    os.mkfifo(rootfs / "etc" / "initctl")
    first = copy_tree(
        rootfs, tmp_path / "one", limits=LIMITS, progress=_nothing, cancel=threading.Event()
    )
    second = copy_tree(
        rootfs, tmp_path / "two", limits=LIMITS, progress=_nothing, cancel=threading.Event()
    )
    assert first == second
    assert os.readlink(tmp_path / "one" / "bin") == "usr/bin"
    assert (tmp_path / "one" / "etc" / "hostname").read_text() == "container\n"
    assert (tmp_path / "one" / "etc" / "initctl").is_fifo()
    (rootfs / "etc" / "hostname").write_text("changed\n")
    third = copy_tree(
        rootfs, tmp_path / "three", limits=LIMITS, progress=_nothing, cancel=threading.Event()
    )
    assert third.checksum != first.checksum


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_tree_copy_never_copies_device_nodes(tmp_path: Path) -> None:
    rootfs = make_rootfs_dir(tmp_path / "rootfs")
    (rootfs / "dev").mkdir()
    os.mknod(rootfs / "dev" / "sda", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    copy_tree(rootfs, tmp_path / "copy", limits=LIMITS, progress=_nothing, cancel=threading.Event())
    assert (tmp_path / "copy" / "dev").is_dir()
    assert not os.path.lexists(tmp_path / "copy" / "dev" / "sda")


def test_source_paths_must_be_absolute_existing_regular_files(tmp_path: Path) -> None:
    (tmp_path / "disk.img").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo")
    assert check_source_path(str(tmp_path / "disk.img"), allow_directory=False).is_absolute()
    cases = {
        "disk.img": "is relative",
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "fifo"): "device, FIFO or socket",
        str(tmp_path): "is a directory",
        "/dev/null": "kernel pseudo-file",
        "/proc/self/status": "kernel pseudo-file",
    }
    for path, why in cases.items():
        with pytest.raises(InvalidInput, match=why):
            check_source_path(path, allow_directory=False)
    assert check_source_path(str(tmp_path), allow_directory=True) == tmp_path.resolve()


def test_the_daemons_data_dir_can_neither_be_nor_hold_an_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text("secret")
    for path in (data / "admin.token", data, tmp_path, Path("/")):
        with pytest.raises(InvalidInput, match="data dir"):
            check_source_path(str(path), allow_directory=True, forbidden=[data])


def test_only_http_and_https_urls_are_accepted() -> None:
    assert check_url("https://example.org/a.qcow2") == "https://example.org/a.qcow2"
    for url in ("ftp://example.org/a", "file:///etc/passwd", "http:///nohost", "example.org/a"):
        with pytest.raises(InvalidInput, match="not an http or https URL"):
            check_url(url)


def test_credentials_never_show_in_a_public_url() -> None:
    assert public_url("https://bob:pw@example.org:8443/a") == "https://***@example.org:8443/a"
    assert public_url("https://example.org/a?x=1") == "https://example.org/a?x=1"


def test_a_download_is_hashed_and_follows_http_redirects(
    tmp_path: Path,
    file_server: FileServer,  # noqa: F811
) -> None:
    body = os.urandom(300_000)
    file_server.serve("/disk.img", body)
    file_server.serve("/old", b"", status=302, headers=(("Location", "/disk.img"),))
    fetched = download(
        file_server.url + "/old",
        tmp_path / "d",
        limits=LIMITS,
        progress=_nothing,
        cancel=threading.Event(),
    )
    assert (tmp_path / "d").read_bytes() == body
    assert fetched.checksum == _sha(body)


def test_a_download_refuses_redirects_to_other_schemes_and_error_answers(
    tmp_path: Path,
    file_server: FileServer,  # noqa: F811
) -> None:
    file_server.serve("/sneaky", b"", status=302, headers=(("Location", "file:///etc/shadow"),))
    with pytest.raises(InvalidInput, match="not an http or https URL"):
        download(
            file_server.url + "/sneaky",
            tmp_path / "a",
            limits=LIMITS,
            progress=_nothing,
            cancel=threading.Event(),
        )
    with pytest.raises(DriverError, match="answered 404"):
        download(
            file_server.url + "/missing",
            tmp_path / "b",
            limits=LIMITS,
            progress=_nothing,
            cancel=threading.Event(),
        )


def test_a_download_over_the_size_limit_stops(
    tmp_path: Path,
    file_server: FileServer,  # noqa: F811
) -> None:
    url = file_server.serve("/big", bytes(2 * MB))
    small = TransferLimits(max_size=MB, timeout=30)
    with pytest.raises(InvalidInput, match="larger than 1M"):
        download(url, tmp_path / "a", limits=small, progress=_nothing, cancel=threading.Event())
