"""Images: register (imported in the background), enable/disable, delete; crash recovery.

`register` checks the request, stores the image LOCKED and returns it at once; the import
(`engine/image_import.py`) runs in a worker thread, watched by an asyncio task on the
engine's loop. Reads go straight to the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import httpx

from stratus.drivers.imagefetch import check_source_path, check_url, public_url
from stratus.drivers.imagefmt import check_conversion
from stratus.engine.image_import import (
    ImportJob,
    ImportLimits,
    image_directory,
    remove_directory,
    run_import,
)
from stratus.model.errors import InvalidInput
from stratus.model.records import Image, ImageType
from stratus.store import Store

__all__ = ["INTERRUPTED", "ImageOp", "ImageService", "ImportLimits"]

log = logging.getLogger(__name__)

ImageOp = Literal["enable", "disable", "prestage", "on-demand"]
DATASTORE = "images"  # the image datastore's name: <data dir>/datastores/images
INTERRUPTED = "import interrupted by a restart; delete it and register again"
SHUT_DOWN = "import interrupted by a shutdown of the daemon; delete it and register again"
_STOP_WAIT = 30.0  # seconds stop() waits for imports to notice they must stop
_PERSISTENT_TYPES = (ImageType.OS, ImageType.DATABLOCK)
_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")


class ImageService:
    """Registers images and runs their imports (at most `workers` at once)."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        *,
        limits: ImportLimits | None = None,
        workers: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self.data_dir = data_dir
        self.datastore = data_dir / "datastores" / DATASTORE
        self.limits = limits or ImportLimits()
        self._workers = workers
        self._transport = transport  # tests: an httpx transport instead of the network
        self._pool: ThreadPoolExecutor | None = None
        self._imports: dict[int, tuple[ImportJob, asyncio.Task[Image | None]]] = {}

    # -- life-cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Fail the imports a crash left LOCKED (removing their files); call before serving."""
        failed = await asyncio.to_thread(
            self.store.fail_interrupted_imports, INTERRUPTED, exclude=set(self._imports)
        )
        for image in failed:
            await asyncio.to_thread(remove_directory, image_directory(self.datastore, image.id))
            log.warning("image %d (%s): %s", image.id, image.name, INTERRUPTED)

    async def stop(self) -> None:
        """Stop every import (its image goes to ERROR, its files are removed) and wait."""
        for job, _task in self._imports.values():
            job.stop(SHUT_DOWN)
        tasks = [task for _job, task in self._imports.values()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=_STOP_WAIT)
            if pending:
                log.warning("%d image imports did not stop in %g s", len(pending), _STOP_WAIT)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    @property
    def importing(self) -> list[int]:
        """Ids of the images this service is importing now."""
        return sorted(self._imports)

    # -- requests --------------------------------------------------------------------------
    async def register(
        self,
        name: str,
        *,
        path: str | None = None,
        url: str | None = None,
        image_type: ImageType = ImageType.OS,
        persistent: bool = False,
        fmt: str | None = None,
        description: str = "",
        checksum: str | None = None,
    ) -> Image:
        """Store a LOCKED image and start importing it; InvalidInput for a bad request.

        `checksum` ("sha256:<hex>"): the content must have it, else the import fails.
        """
        check_conversion(image_type, fmt)
        if checksum is not None and not _CHECKSUM.fullmatch(checksum):
            raise InvalidInput(
                f"checksum {checksum!r} is not sha256:<64 hex digits>",
                hint="e.g. sha256:$(sha256sum FILE | cut -c1-64)",
            )
        usage = "stratus image register NAME --path /absolute/path | --url https://..."
        if path is not None and url is not None:
            raise InvalidInput("give the image's path or its URL, not both", hint=usage)
        if path is None and url is None:
            raise InvalidInput(
                "an image needs a source: a path on the daemon's machine or a URL", hint=usage
            )
        if persistent and image_type not in _PERSISTENT_TYPES:
            raise InvalidInput(
                f"a {image_type.value} image cannot be persistent: only OS and DATABLOCK"
                " disks are written to"
            )
        if path is not None:
            resolved = await asyncio.to_thread(
                check_source_path,
                path,
                allow_directory=image_type is ImageType.OS,
                forbidden=[self.data_dir],
            )
            source = shown = str(resolved)
        else:
            assert url is not None
            source, shown = check_url(url), public_url(url)
        image = await asyncio.to_thread(
            self.store.add_image,
            name,
            image_type,
            persistent=persistent,
            source=shown,
            datastore=DATASTORE,
            description=description,
            reason="waiting for an import slot",
        )
        job = ImportJob(
            image_id=image.id,
            image_type=image_type,
            source=source,
            shown=shown,
            is_url=url is not None,
            convert_to=fmt,
            directory=image_directory(self.datastore, image.id),
            expected_checksum=checksum,
        )
        self._launch(job)
        return image

    def _launch(self, job: ImportJob) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="image-import")
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self._pool, run_import, self.store, job, self.datastore, self.limits, self._transport
        )
        task = asyncio.create_task(self._watch(job.image_id, work), name=f"image-{job.image_id}")
        self._imports[job.image_id] = (job, task)

    async def _watch(self, image_id: int, work: asyncio.Future[Image | None]) -> Image | None:
        try:
            image = await work
            if image is not None:
                log.info("image %d (%s) imported: %s", image.id, image.name, image.format)
            return image
        finally:
            self._imports.pop(image_id, None)

    async def operate(self, ref: int | str, op: ImageOp) -> Image:
        """enable (DISABLED -> READY) or disable (READY -> DISABLED: no new VM may use it);
        prestage / on-demand: copy it to partner zones ahead of need, or when a VM needs it."""
        if op in ("prestage", "on-demand"):
            return await asyncio.to_thread(self.store.set_image_prestage, ref, op == "prestage")
        if op not in ("enable", "disable"):
            raise InvalidInput(
                f"unknown image operation {op!r}", hint="use enable, disable, prestage or on-demand"
            )
        return await asyncio.to_thread(self.store.set_image_enabled, ref, op == "enable")

    async def delete(self, ref: int | str) -> Image:
        """Delete an image and its files; an import in progress is stopped first.

        Conflict while VMs use it (naming them).
        """
        image = await asyncio.to_thread(self.store.get_image, ref)
        running = self._imports.get(image.id)
        if running is not None:
            job, task = running
            job.stop("deleted while importing")
            await asyncio.wait([task], timeout=_STOP_WAIT)
        removed = await asyncio.to_thread(self.store.delete_image, image.id)
        await asyncio.to_thread(remove_directory, image_directory(self.datastore, removed.id))
        return removed

    async def wait(self, image_id: int, timeout: float) -> None:
        """Wait until this service's import of an image ends (at once if there is none)."""
        running = self._imports.get(image_id)
        if running is not None:
            await asyncio.wait([running[1]], timeout=timeout)
