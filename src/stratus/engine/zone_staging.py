"""Pre-staging: images marked `prestage` are copied to every partner zone ahead of need.

The trade-off of the source documents (section 2.4): an image copied on demand costs
nothing until a VM bursts, then delays that VM by the transfer; a pre-staged one is ready
in every zone, at the price of the copies. `stratus image prestage|on-demand` chooses
per image. A zone is a host labelled ZONE; the copy is the driver's `stage_image`, the
same import (signed link, checksum verified) that an on-demand deploy does, so an image
staged ahead is the one a later deploy finds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from stratus.drivers.base import DiskSpec
from stratus.engine.drivers import DriverSet, with_deadline
from stratus.engine.image_links import ImageLinks
from stratus.engine.loop import Tasks, run_loop
from stratus.engine.runner import DbRunner
from stratus.model.errors import StratusError
from stratus.model.records import Host, HostState, Image, ImageState

__all__ = ["ZoneStager"]

log = logging.getLogger(__name__)
_READY = (ImageState.READY, ImageState.USED)
_PAGE = 1000


class ZoneStager:
    def __init__(
        self,
        db: DbRunner,
        drivers: DriverSet,
        links: ImageLinks,
        public_url: str | None,
        *,
        interval: float = 30.0,
        timeout: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._drivers = drivers
        self._links = links
        self._public_url = public_url
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._tasks = Tasks()
        #: (zone host id, image id, checksum) -> the zone's image id, once staged
        self.staged: dict[tuple[int, int, str], str] = {}
        self._running: set[tuple[int, int, str]] = set()
        self._retry_after: dict[tuple[int, int, str], float] = {}

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        try:
            await run_loop("zone staging", self.cycle, self._wakeup, self._interval)
        finally:
            await self._tasks.cancel()

    async def cycle(self) -> int:
        """Start a copy for every (zone, pre-staged image) not staged yet; how many."""
        if not self._public_url:
            return 0
        hosts = await self._db.call(self._db.store.all_hosts)
        zones = [h for h in hosts if "ZONE" in h.labels and h.state is HostState.MONITORED]
        if not zones:
            return 0
        started = 0
        for image in await self._prestaged():
            for zone in zones:
                key = (zone.id, image.id, image.checksum)
                if key in self.staged or key in self._running:
                    continue
                if self._retry_after.get(key, 0.0) > self._clock():
                    continue
                self._running.add(key)
                self._tasks.spawn(self._stage(zone, image, key), name=f"stage-{image.id}")
                started += 1
        return started

    async def _prestaged(self) -> list[Image]:
        found: list[Image] = []
        after = 0
        while True:
            page = await self._db.call(self._db.store.list_images, limit=_PAGE, after_id=after)
            found += [i for i in page if i.prestage and i.state in _READY and i.checksum]
            if len(page) < _PAGE:
                return found
            after = page[-1].id

    async def _stage(self, zone: Host, image: Image, key: tuple[int, int, str]) -> None:
        assert self._public_url is not None  # cycle() checked it
        disk = DiskSpec(
            index=0,
            image_id=image.id,
            image=image.name,
            source=image.path,
            format=image.format,
            type=image.type.value,
            persistent=False,
            checksum=image.checksum,
            url=self._links.url_for(self._public_url, image.id),
        )
        try:
            driver = self._drivers.get(zone.driver)
            call = driver.stage_image(self._drivers.host_info(zone), disk)
            self.staged[key] = await with_deadline(call, self._timeout, "stage image")
            log.info("image %s staged in zone %s", image.name, zone.name)
        except StratusError as exc:
            self._retry_after[key] = self._clock() + 4 * self._interval
            log.warning("staging image %s in zone %s failed: %s", image.name, zone.name, exc)
        finally:
            self._running.discard(key)
