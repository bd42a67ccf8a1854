"""The engine facade: what the API calls to change things, and the loops it runs.

Reads go straight to the store (`engine.store`); every change goes through here so that
it is checked against the life-cycle and wakes the loop that acts on it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stratus.drivers.cloud_errors import OFFERING_CODES
from stratus.engine.batcher import ChangeBatcher
from stratus.engine.config import EngineConfig
from stratus.engine.cooldowns import Cooldowns
from stratus.engine.dispatch import Dispatcher
from stratus.engine.drivers import DriverSet
from stratus.engine.guest import read_console, report_ready
from stratus.engine.hostcache import HostCache
from stratus.engine.image_links import ImageLinks
from stratus.engine.images import ImageService
from stratus.engine.metadata import MetadataService
from stratus.engine.monitor import Monitor
from stratus.engine.networks import NetworkService
from stratus.engine.operations import build_vms, check_driver, host_change, operation_change
from stratus.engine.overlays import OverlayService
from stratus.engine.resources import ResourceResolver
from stratus.engine.runner import DbRunner
from stratus.engine.saveas import save_disk_as
from stratus.engine.scheduling import SchedulerLoop
from stratus.engine.zone_staging import ZoneStager
from stratus.model.credentials import check_no_secret_options, check_secrets
from stratus.model.errors import Conflict, InvalidInput
from stratus.model.lifecycle import Operation, RecoverMode, VmState
from stratus.model.records import MAX_HOST_CPU, MAX_HOST_MEMORY, Host, Image, Vm
from stratus.store import Store

__all__ = ["Engine", "HostOp", "SubmitResult"]

log = logging.getLogger(__name__)
HostOp = Literal["enable", "disable", "offline"]
_RETRIES = 5  # conditional writes retried after a concurrent change


@dataclass(frozen=True)
class SubmitResult:
    vms: list[Vm]
    warnings: list[str]


class Engine:
    """Wires store, drivers and loops; `start()` runs the loops on the current event loop."""

    def __init__(
        self,
        store: Store,
        *,
        config: EngineConfig | None = None,
        data_dir: Path,
        drivers: DriverSet | None = None,
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        self.data_dir = data_dir
        self.drivers = drivers or DriverSet(data_dir)
        self.db = DbRunner(store)
        self.images = ImageService(store, data_dir)
        self.networks = NetworkService(store)
        self.cooldowns = Cooldowns(self.config.failover_cooldown)
        self.overlays = OverlayService(store, self.drivers.secrets)
        self.image_links = ImageLinks(data_dir)
        self.resources = ResourceResolver(
            store,
            data_dir,
            self.config.api_port,
            self.config.guest_url,
            overlays=self.overlays,
            links=self.image_links,
            public_url=self.config.public_url,
        )
        self.metadata = MetadataService(self.db, data_dir, self.config.availability_zone)
        self.stager = ZoneStager(self.db, self.drivers, self.image_links, self.config.public_url)
        self._tasks: list[asyncio.Task[None]] = []
        self._batcher: ChangeBatcher | None = None
        self.dispatcher: Dispatcher | None = None
        self.scheduler: SchedulerLoop | None = None
        self.monitor: Monitor | None = None

    # -- lifecycle of the engine itself ------------------------------------------------
    async def start(self) -> None:
        await self.images.start()  # imports a crash interrupted end in ERROR
        await self.metadata.start()  # the instance metadata service (169.254.169.254)
        batcher = ChangeBatcher(self.db, self.config.batch_window)
        hosts = HostCache(self.db, max_age=min(self.config.monitor_interval, 5.0))
        dispatcher = Dispatcher(
            self.db,
            batcher,
            self.drivers,
            self.config,
            hosts,
            on_change=self._after_step,
            resolver=self.resources,
            before_boot=self.metadata.before_boot,
        )
        scheduler = SchedulerLoop(
            self.db,
            batcher,
            self.drivers,
            self.config,
            dispatcher.wake,
            cooldowns=self.cooldowns,
        )
        monitor = Monitor(
            self.db, batcher, self.drivers, self.config, hosts, dispatcher.busy, scheduler.wake
        )
        batcher.start()
        self._batcher, self.dispatcher, self.scheduler, self.monitor = (
            batcher,
            dispatcher,
            scheduler,
            monitor,
        )
        for name, loop in (
            ("dispatcher", dispatcher.run),
            ("scheduler", scheduler.run),
            ("monitor", monitor.run),
            ("zone staging", self.stager.run),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=name))
        log.info("engine started")

    def _after_step(self, vm: Vm) -> None:
        """A VM a cloud refused went back to PENDING: cool that host down (or only the
        instance type, when the refusal concerns it), and place the VM again. A VM that
        ended leaves its overlay hubs."""
        self.overlays.after_step(vm)
        failover = vm.info.get("failover")
        if vm.state is VmState.PENDING and isinstance(failover, dict):
            code, offering = str(failover["reason"]), failover.get("offering")
            only = str(offering) if offering and code in OFFERING_CODES else None
            self.cooldowns.add(int(failover["host_id"]), only, code)
            if self.scheduler:
                self.scheduler.wake()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.dispatcher:
            await self.dispatcher.stop()
        if self.monitor:
            await self.monitor.stop()
        if self._batcher:
            await self._batcher.stop()
        await self.images.stop()
        await self.overlays.stop()
        await self.metadata.stop()
        await self.drivers.close()
        self.db.close()
        log.info("engine stopped")

    def _wake_all(self) -> None:
        for loop in (self.scheduler, self.dispatcher):
            if loop is not None:
                loop.wake()

    # -- VMs -------------------------------------------------------------------------------
    async def submit(
        self, text: str, *, fmt: str = "auto", hold: bool = False, count: int = 1
    ) -> SubmitResult:
        """Parse and validate a template, store `count` VMs as PENDING (or HOLD)."""
        submission = build_vms(text, fmt=fmt, hold=hold, count=count)
        vms = await self.db.call(self.store.create_vms, submission.vms, submission.requests)
        if self.scheduler and not hold:
            self.scheduler.wake()
        return SubmitResult(vms=vms, warnings=submission.warnings)

    async def operate(
        self,
        vm_id: int,
        operation: Operation,
        *,
        host: str | None = None,
        hard: bool = False,
        live: bool = False,
        recover: RecoverMode | None = None,
    ) -> Vm:
        """Accept an operation (IllegalOperation/409 if the state forbids it) and return the VM."""
        for _ in range(_RETRIES):
            vm = await self.db.call(self.store.get_vm, vm_id)
            change = await operation_change(
                self.db,
                self.drivers,
                vm,
                operation,
                host=host,
                hard=hard,
                live=live,
                recover=recover,
            )
            result = (await self.db.call(self.store.apply, [change]))[0]
            if isinstance(result, Conflict):
                continue  # the engine moved it meanwhile: check again on the fresh record
            self._wake_all()
            return result
        raise Conflict(f"VM {vm_id} keeps changing", hint="wait a moment and try again")

    async def guest_ready(self, vm_id: int, token: str) -> Vm:
        """A guest's context script reports that it booted (checked with its VM token)."""
        return await report_ready(self.db, self.resources.tokens, vm_id, token)

    async def console_log(self, vm_id: int, max_bytes: int) -> bytes:
        """The tail of a VM's console log, read from its host."""
        timeout = self.config.timeouts.operation
        return await read_console(self.db, self.drivers, vm_id, max_bytes, timeout)

    async def disk_saveas(self, vm_id: int, disk: int, name: str) -> Image:
        """Save a powered-off VM's disk as a new image (LOCKED while it imports)."""
        timeout = self.config.timeouts.migrate
        return await save_disk_as(self.db, self.drivers, self.images, vm_id, disk, name, timeout)

    # -- hosts -----------------------------------------------------------------------------
    async def add_host(
        self,
        name: str,
        driver: str,
        *,
        cpu: float | None,
        memory: int | None,
        labels: dict[str, str],
        options: dict[str, Any],
        secrets: dict[str, str] | None = None,
    ) -> Host:
        """Add a host; `secrets` (its credentials) are sealed before they reach the store.

        A cloud driver derives the capacity (when not given) and labels from the options
        (`Driver.host_defaults`); the labels given win over derived ones.
        """
        check_driver(driver)
        check_no_secret_options(options)
        sealed = self.drivers.secrets.seal(check_secrets(secrets or {}))
        labels = {k.upper(): str(v) for k, v in labels.items()}
        defaults = self.drivers.get(driver).host_defaults(options)
        if defaults is not None:
            cpu = defaults.cpu if cpu is None else cpu
            memory = defaults.memory if memory is None else memory
            labels = {**defaults.labels, **labels}
        if cpu is None or memory is None:
            raise InvalidInput(
                f"a {driver} host needs its capacity", hint="give --cpu and --memory"
            )
        if not (0 < cpu <= MAX_HOST_CPU and 0 < memory <= MAX_HOST_MEMORY):
            raise InvalidInput(
                f"a host's capacity must be 0-{MAX_HOST_CPU:g} CPUs and 1-{MAX_HOST_MEMORY} MB,"
                f" not {cpu:g} CPUs and {memory} MB",
                hint="give a smaller --capacity (instances per type) or --cpu/--memory",
            )
        reserved = sorted({"cpu", "memory"} & {k.lower() for k in options})
        if reserved:
            raise InvalidInput(
                f"option {reserved[0]!r} is the host's capacity",
                hint="give the capacity with --cpu and --memory, not as an option",
            )
        options = {**options, "cpu": cpu, "memory": memory}  # what the dummy host reports
        host = await self.db.call(
            self.store.add_host, name, driver, cpu, memory, labels, options, sealed
        )
        if self.monitor:
            self.monitor.wake(host.id)
        return host

    async def set_host_secrets(self, ref: int | str, secrets: dict[str, str]) -> Host:
        """Replace a host's credentials (an empty dict removes them) and probe it with them."""
        sealed = self.drivers.secrets.seal(check_secrets(secrets))
        for _ in range(_RETRIES):
            host = await self.db.call(self.store.get_host, ref)
            try:
                updated = await self.db.call(
                    self.store.update_host, host.id, host.version, sealed_secrets=sealed
                )
            except Conflict:
                continue
            if self.monitor:
                self.monitor.wake(host.id)
            return updated
        raise Conflict(f"host {ref} keeps changing", hint="wait a moment and try again")

    async def host_operation(self, ref: int | str, op: HostOp) -> Host:
        for _ in range(_RETRIES):
            host = await self.db.call(self.store.get_host, ref)
            state, reason = host_change(host, op)
            try:
                updated = await self.db.call(
                    self.store.update_host, host.id, host.version, state=state, reason=reason
                )
            except Conflict:
                continue
            if self.monitor:
                self.monitor.wake(host.id)
            self._wake_all()
            return updated
        raise Conflict(f"host {ref} keeps changing", hint="wait a moment and try again")

    async def delete_host(self, ref: int | str) -> None:
        host = await self.db.call(self.store.get_host, ref)
        await self.db.call(self.store.delete_host, host.id)
