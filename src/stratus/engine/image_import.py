"""One image import from start to end, run in a worker thread: fetch, check, convert, record.

The image is LOCKED from registration to the end of `run_import`, which leaves it READY
(its file in `<datastore>/<image id>/`) or ERROR with the reason and nothing on disk.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stratus.drivers.imagefetch import (
    Fetched,
    TransferCancelled,
    TransferLimits,
    copy_file,
    copy_tree,
    download,
    sha256_file,
)
from stratus.drivers.imagefmt import (
    DISK_FORMATS,
    ConversionCancelled,
    ImageFacts,
    check_image,
    convert_image,
    inspect_image,
)
from stratus.model.errors import InvalidInput, StratusError
from stratus.model.records import Image, ImageType
from stratus.store import Store

__all__ = ["ImportJob", "ImportLimits", "image_directory", "remove_directory", "run_import"]

log = logging.getLogger(__name__)

_INCOMING = ".incoming"  # the transfer's output, until checked
_CONVERTED = ".converted"
_TAR_SUFFIX = {"gzip": ".gz", "xz": ".xz", "bzip2": ".bz2"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class ImportLimits:
    """Bounds of every import (the defaults suit a front-end with a local datastore)."""

    max_size: int = 256 * 1024**3  # bytes of one image, as copied or downloaded
    transfer_timeout: float = 6 * 3600.0  # a whole copy or download
    connect_timeout: float = 10.0  # downloads: to connect
    read_timeout: float = 60.0  # downloads: between two reads
    inspect_timeout: float = 60.0  # qemu-img info, the archive check
    convert_timeout: float = 3 * 3600.0  # qemu-img convert
    progress_interval: float = 0.5  # seconds between two progress writes


@dataclass
class ImportJob:
    """An import in progress: what to fetch where, and how to stop it."""

    image_id: int
    image_type: ImageType
    source: str  # a resolved path, or the URL (which may hold credentials: never shown)
    shown: str  # the source as messages show it (no credentials)
    is_url: bool
    convert_to: str | None
    directory: Path  # <datastore>/<image id>
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = "import cancelled"
    expected_checksum: str | None = None  # "sha256:<hex>" the fetched content must have

    def stop(self, reason: str) -> None:
        """Ask the import to stop at its next block; the image goes to ERROR with `reason`."""
        self.cancel_reason = reason
        self.cancel.set()


def image_directory(datastore: Path, image_id: int) -> Path:
    return datastore / str(image_id)


def remove_directory(directory: Path) -> None:
    """Remove an image's directory and all in it; a failure is logged, not raised."""
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s (remove it by hand)", directory, exc)


def _size_text(size: int) -> str:
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}{unit}"
    return f"{size}B"


class _Reporter:
    """Writes the import's progress and phase to the image, at most every `interval` s."""

    def __init__(self, store: Store, image_id: int, interval: float) -> None:
        self.store = store
        self.image_id = image_id
        self.interval = interval
        self.last = time.monotonic()

    def phase(self, reason: str, progress: float) -> None:
        try:
            self.store.set_image_progress(self.image_id, progress, reason)
        except Exception as exc:  # progress is advice: the import goes on without it
            log.warning("image %d: cannot record progress: %s", self.image_id, exc)
        self.last = time.monotonic()

    def transfer(self, done: int, total: int | None) -> None:
        if time.monotonic() - self.last < self.interval:
            return
        if total:
            self.phase(f"copying: {_size_text(done)} of {_size_text(total)}", done / total)
        else:
            self.phase(f"copying: {_size_text(done)}", 0.0)


def _check_free_space(job: ImportJob, datastore: Path) -> None:
    """Refuse a local source that cannot fit (sparse files count their allocated blocks)."""
    if job.is_url:
        return  # unknown before the download: a full disk fails it with ENOSPC
    source = Path(job.source)
    if source.is_dir():
        needed = sum(
            os.lstat(os.path.join(root, name)).st_blocks * 512
            for root, _dirs, files in os.walk(source)
            for name in files
        )
    else:
        needed = source.stat().st_blocks * 512
    free = shutil.disk_usage(datastore).free
    if needed > free:
        raise InvalidInput(
            f"{job.shown} needs {_size_text(needed)} but the image datastore {datastore}"
            f" has {_size_text(free)} free",
            hint="free space there (delete unused images), then register it again",
        )


def _fetch(
    job: ImportJob,
    dst: Path,
    limits: ImportLimits,
    reporter: _Reporter,
    transport: httpx.BaseTransport | None,
) -> Fetched:
    transfer = TransferLimits(
        max_size=limits.max_size,
        timeout=limits.transfer_timeout,
        connect_timeout=limits.connect_timeout,
        read_timeout=limits.read_timeout,
    )
    progress, cancel = reporter.transfer, job.cancel
    if job.is_url:
        return download(
            job.source, dst, limits=transfer, progress=progress, cancel=cancel, transport=transport
        )
    source = Path(job.source)
    copy = copy_tree if source.is_dir() else copy_file
    return copy(source, dst, limits=transfer, progress=progress, cancel=cancel)


def _file_name(job: ImportJob, facts: ImageFacts) -> str:
    """The image's file name in its directory: says what it is at a glance."""
    if facts.format in DISK_FORMATS:
        return f"disk.{facts.format}"
    if facts.format == "tar":
        return "rootfs.tar" + _TAR_SUFFIX.get(facts.detail, "")
    if job.image_type is ImageType.CONTEXT:  # the context CD-ROM may keep the file's name
        name = _SAFE_NAME.sub("_", job.shown.rstrip("/").rsplit("/", 1)[-1].split("?")[0])
        return name if name.strip("._") else "file"
    return {"dir": "rootfs", "iso": "cdrom.iso", "kernel": "vmlinuz", "ramdisk": "initrd.img"}[
        facts.format
    ]


def _convert(
    job: ImportJob, incoming: Path, facts: ImageFacts, limits: ImportLimits, reporter: _Reporter
) -> tuple[Path, ImageFacts, str]:
    """qemu-img convert to the asked format: the new file, its facts and checksum."""
    assert job.convert_to is not None
    if facts.format not in DISK_FORMATS:
        raise InvalidInput(
            f"{job.shown} is a {facts.format} root filesystem: only disk images convert"
            f" to {job.convert_to}",
            hint="register it without --format",
        )
    reporter.phase(f"converting {facts.format} to {job.convert_to}", 1.0)
    converted = incoming.with_name(_CONVERTED)
    convert_image(
        incoming,
        converted,
        facts.format,
        job.convert_to,
        timeout=limits.convert_timeout,
        cancel=job.cancel,
    )
    incoming.unlink()
    result = inspect_image(converted, limits.inspect_timeout)
    reporter.phase(f"computing the checksum of the {job.convert_to} image", 1.0)
    checksum = sha256_file(converted, job.cancel)
    return converted, result, checksum


def run_import(
    store: Store,
    job: ImportJob,
    datastore: Path,
    limits: ImportLimits,
    transport: httpx.BaseTransport | None = None,
) -> Image | None:
    """Import one image; the READY image, or None when it ended in ERROR (or vanished)."""
    reporter = _Reporter(store, job.image_id, limits.progress_interval)
    try:
        if job.cancel.is_set():
            raise TransferCancelled(job.shown)
        remove_directory(job.directory)  # a leftover of an interrupted import
        job.directory.mkdir(parents=True)
        _check_free_space(job, datastore)
        reporter.phase(f"copying from {job.shown}", 0.0)
        incoming = job.directory / _INCOMING
        fetched = _fetch(job, incoming, limits, reporter, transport)
        if job.expected_checksum and fetched.checksum != job.expected_checksum:
            raise InvalidInput(
                f"{job.shown} has checksum {fetched.checksum}, not the expected"
                f" {job.expected_checksum}",
                hint="the file changed or was damaged on the way: register it again",
            )
        reporter.phase("checking the image's content", 1.0)
        facts = check_image(
            incoming, job.image_type, label=job.shown, timeout=limits.inspect_timeout
        )
        stored, checksum = incoming, fetched.checksum
        if job.convert_to is not None and job.convert_to != facts.format:
            stored, facts, checksum = _convert(job, incoming, facts, limits, reporter)
        final = job.directory / _file_name(job, facts)
        stored.rename(final)
        actual = facts.actual_size if final.is_dir() else final.stat().st_blocks * 512
        return store.finish_image_import(
            job.image_id,
            fmt=facts.format,
            size=facts.virtual_size if facts.virtual_size else fetched.size,
            actual_size=actual,
            checksum=checksum,
            path=str(final),
            reason=f"imported from {job.shown}",
        )
    except (TransferCancelled, ConversionCancelled):
        reason = job.cancel_reason
    except StratusError as exc:
        reason = str(exc)
    except OSError as exc:
        reason = f"the import failed: {exc}"
    except Exception as exc:  # the outermost catch of an import: record it on the image
        log.exception("image %d: import failed unexpectedly", job.image_id)
        reason = f"the import failed unexpectedly ({type(exc).__name__}: {exc}); see the daemon log"
    remove_directory(job.directory)
    log.info("image %d: import failed: %s", job.image_id, reason)
    try:
        store.fail_image_import(job.image_id, reason)
    except Exception:  # the next start-up marks it ERROR anyway
        log.exception("image %d: cannot record the failed import", job.image_id)
    return None
