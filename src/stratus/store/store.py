"""The Store: one pooled Engine and one transaction per call, over the repository functions.

Synchronous and thread-safe: the engine's loops call it through a thread pool and the API
from FastAPI's, each call taking its own pooled connection.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict
from stratus.model.lifecycle import VmState
from stratus.model.records import (
    Event,
    HistoryRecord,
    Host,
    HostState,
    Image,
    ImageState,
    ImageType,
    Lease,
    Vm,
    Vnet,
)
from stratus.model.resources import ResourceRequests
from stratus.model.vnet import Address, VnetSpec
from stratus.store import changes as changes_mod
from stratus.store import db, events, hosts, tokens
from stratus.store import images as images_mod
from stratus.store import vms as vms_mod
from stratus.store import vnets as vnets_mod
from stratus.store.changes import VmChange
from stratus.store.resources import ImageUse, insert_vms_with_resources, vm_image_uses
from stratus.store.tables import vms as vms_table
from stratus.store.vms import NewVm
from stratus.store.vnets import LeaseRequest

__all__ = ["Clock", "Store", "open_store"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Store:
    """Hosts, VMs, their history and events, and API token hashes, in SQLite or PostgreSQL."""

    def __init__(self, engine: Engine, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.url: str = engine.url.render_as_string(hide_password=True)
        self.dialect: str = engine.dialect.name
        self._clock = clock

    def close(self) -> None:
        """Close every pooled connection; the Store is unusable afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # hosts

    def add_host(
        self,
        name: str,
        driver: str,
        cpu: float,
        memory: int,
        labels: Mapping[str, str],
        options: Mapping[str, Any],
        sealed_secrets: str = "",
    ) -> Host:
        """A new host in state INIT; Conflict when the name is taken."""
        with db.write(self.engine) as conn:
            return hosts.insert_host(
                conn,
                self._clock(),
                name=name,
                driver=driver,
                cpu=cpu,
                memory=memory,
                labels=labels,
                options=options,
                sealed_secrets=sealed_secrets,
            )

    def get_host(self, ref: int | str) -> Host:
        """A host by id or name, with usage; NotFound otherwise."""
        with db.read(self.engine) as conn:
            return hosts.find_host(conn, ref)

    def list_hosts(
        self, *, state: HostState | None = None, limit: int = 1000, after_id: int = 0
    ) -> list[Host]:
        """A page of hosts in id order, with usage."""
        with db.read(self.engine, snapshot=True) as conn:
            return hosts.select_hosts(conn, state=state, limit=limit, after_id=after_id)

    def all_hosts(self) -> list[Host]:
        """Every host with usage, read from one snapshot (the scheduler's view)."""
        with db.read(self.engine, snapshot=True) as conn:
            return hosts.select_all_hosts(conn)

    def update_host(
        self,
        host_id: int,
        expected_version: int,
        *,
        state: HostState | None = None,
        reason: str | None = None,
        monitoring: Mapping[str, Any] | None = None,
        last_monitored: datetime | None = None,
        cpu: float | None = None,
        memory: int | None = None,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        sealed_secrets: str | None = None,
    ) -> Host:
        """Change the given fields if the version matches (Conflict otherwise); None keeps one.

        `sealed_secrets` replaces the sealed credentials ("" removes them).
        """
        fields = {
            "state": state,
            "reason": reason,
            "monitoring": monitoring,
            "last_monitored": last_monitored,
            "cpu": cpu,
            "memory": memory,
            "labels": labels,
            "options": options,
            "secrets": sealed_secrets,
        }
        with db.write(self.engine) as conn:
            return hosts.change_host(conn, self._clock(), host_id, expected_version, fields)

    def delete_host(self, host_id: int) -> None:
        """Delete a host; Conflict while a VM is on it or heading to it."""
        try:
            with db.write(self.engine) as conn:
                hosts.remove_host(conn, self._clock(), host_id)
        except IntegrityError as exc:  # PostgreSQL: a VM was placed on it meanwhile
            raise Conflict(
                f"host {host_id} got a VM while being deleted: migrate or terminate it, then retry"
            ) from exc

    # vms

    def create_vms(
        self, vms: Sequence[NewVm], requests: ResourceRequests | None = None
    ) -> list[Vm]:
        """Create VMs in one transaction, each with its creation event, its image uses and
        its leases; a missing image or network or no free lease creates nothing."""
        with db.write(self.engine) as conn:
            if requests is None or requests.empty:
                return vms_mod.insert_vms(conn, self._clock(), vms)
            return insert_vms_with_resources(conn, self._clock(), vms, requests)

    def get_vm(self, vm_id: int) -> Vm:
        """One VM with host_name; NotFound otherwise."""
        with db.read(self.engine) as conn:
            return vms_mod.find_vm(conn, vm_id)

    def list_vms(
        self,
        *,
        state: VmState | None = None,
        host_id: int | None = None,
        limit: int = 1000,
        after_id: int = 0,
        include_done: bool = True,
        with_template: bool = True,
    ) -> list[Vm]:
        """A page of VMs in id order, with host_name (`with_template=False`: template {})."""
        where = vms_mod.listing_filter(
            state=state, host_id=host_id, after_id=after_id, include_done=include_done
        )
        with db.read(self.engine) as conn:
            return vms_mod.select_vms(conn, where=where, limit=limit, with_template=with_template)

    def count_vms(self, *, state: VmState | None = None) -> int:
        with db.read(self.engine) as conn:
            return vms_mod.count_vms(conn, state)

    def count_by_state(self) -> dict[VmState, int]:
        """Every VM state with its count (0 for the empty ones)."""
        with db.read(self.engine) as conn:
            return vms_mod.count_by_state(conn)

    def pending_vms(self, limit: int = 200_000) -> list[Vm]:
        """The scheduler's queue: PENDING, or RUNNING with resched; by priority desc, then id.

        Without templates (each reads {}): placement needs only the extracted columns.
        """
        order = (vms_table.c.user_priority.desc(), vms_table.c.id)
        with db.read(self.engine) as conn:
            return vms_mod.select_vms(
                conn,
                where=[vms_mod.pending_filter()],
                order_by=order,
                limit=limit,
                with_template=False,
            )

    def vms_with_work(self, *, exclude: Collection[int] = (), limit: int = 5000) -> list[Vm]:
        """VMs in transient states, or RUNNING/UNKNOWN with an action, in id order."""
        with db.read(self.engine) as conn:
            return vms_mod.select_vms(conn, where=vms_mod.work_filter(exclude), limit=limit)

    def vms_on_host(self, host_id: int) -> list[Vm]:
        """VMs on the host or heading to it, not DONE (without templates: each reads {})."""
        with db.read(self.engine) as conn:
            return vms_mod.select_vms(
                conn, where=vms_mod.on_host_filter(host_id), with_template=False
            )

    def placed_info(self, host_ids: Collection[int]) -> list[tuple[int, dict[str, Any]]]:
        """(host id, info) of the VMs holding capacity on these hosts: prices, types."""
        with db.read(self.engine) as conn:
            return vms_mod.placed_info(conn, host_ids)

    def apply(self, changes: Sequence[VmChange]) -> list[Vm | Conflict]:
        """Apply changes in one transaction; per item the new Vm or the Conflict refusing it."""
        if not changes:
            return []
        with db.write(self.engine) as conn:
            return changes_mod.apply_changes(conn, self._clock(), changes)

    def set_vm_reasons(self, reasons: Mapping[int, str]) -> None:
        """Update the scheduler's reason of PENDING VMs that still wait for a host.

        Not a state change: no event, no version bump (a reason is advice, and a user's
        operation must not conflict with the scheduler re-explaining a wait).
        """
        if reasons:
            with db.write(self.engine) as conn:
                vms_mod.set_pending_reasons(conn, reasons)

    def history(self, vm_id: int) -> list[HistoryRecord]:
        """A VM's placements, oldest first."""
        with db.read(self.engine) as conn:
            return changes_mod.read_history(conn, vm_id)

    def events(
        self,
        *,
        object_type: str | None = None,
        object_id: int | None = None,
        limit: int = 100,
        after_id: int = 0,
        newest: bool = False,
    ) -> list[Event]:
        """Events in id order after `after_id`, optionally of one object; `newest`: the last."""
        with db.read(self.engine) as conn:
            return events.read_events(
                conn,
                object_type=object_type,
                object_id=object_id,
                limit=limit,
                after_id=after_id,
                newest=newest,
            )

    def vm_detail(
        self, vm_id: int, *, recent_events: int = 50
    ) -> tuple[Vm, list[HistoryRecord], list[Event]]:
        """A VM, its history and its last events, read in one transaction (`vm show`)."""
        with db.read(self.engine) as conn:
            vm = vms_mod.find_vm(conn, vm_id)
            history = changes_mod.read_history(conn, vm_id)
            recent = events.read_events(
                conn, object_type="vm", object_id=vm_id, limit=recent_events, newest=True
            )
        return vm, history, recent

    # images

    def add_image(
        self,
        name: str,
        image_type: ImageType,
        *,
        persistent: bool,
        source: str,
        datastore: str,
        description: str = "",
        reason: str = "registered",
    ) -> Image:
        """A new image, LOCKED for its import; Conflict when the name is taken."""
        with db.write(self.engine) as conn:
            return images_mod.insert_image(
                conn,
                self._clock(),
                name=name,
                image_type=image_type,
                persistent=persistent,
                source=source,
                datastore=datastore,
                description=description,
                reason=reason,
            )

    def get_image(self, ref: int | str) -> Image:
        """An image by id or name, with the VMs using it; NotFound otherwise."""
        with db.read(self.engine) as conn:
            return images_mod.find_image(conn, ref)

    def list_images(
        self, *, state: ImageState | None = None, limit: int = 1000, after_id: int = 0
    ) -> list[Image]:
        """A page of images in id order (state USED: READY ones that VMs use)."""
        with db.read(self.engine) as conn:
            return images_mod.select_images(conn, state=state, limit=limit, after_id=after_id)

    def image_detail(self, ref: int | str, *, recent_events: int = 50) -> tuple[Image, list[Event]]:
        """An image and its last events, read in one transaction (`image show`)."""
        with db.read(self.engine) as conn:
            image = images_mod.find_image(conn, ref)
            recent = events.read_events(
                conn, object_type="image", object_id=image.id, limit=recent_events, newest=True
            )
        return image, recent

    def images_by_name(self, names: Sequence[str]) -> dict[str, Image]:
        """Images by name; NotFound naming the missing ones."""
        with db.read(self.engine) as conn:
            return images_mod.find_images_by_name(conn, names)

    def image_vms(self, ref: int | str) -> list[int]:
        """Ids of the VMs using an image."""
        with db.read(self.engine) as conn:
            return images_mod.image_users(conn, images_mod.find_image(conn, ref).id)

    def set_image_progress(self, image_id: int, progress: float, reason: str) -> None:
        """How far a LOCKED image's import got (0..1) and what it is doing."""
        with db.write(self.engine) as conn:
            images_mod.set_import_progress(conn, self._clock(), image_id, progress, reason)

    def finish_image_import(
        self,
        image_id: int,
        *,
        fmt: str,
        size: int,
        actual_size: int,
        checksum: str,
        path: str,
        reason: str = "imported",
    ) -> Image:
        """LOCKED -> READY with what the import found."""
        with db.write(self.engine) as conn:
            return images_mod.finish_import(
                conn,
                self._clock(),
                image_id,
                fmt=fmt,
                size=size,
                actual_size=actual_size,
                checksum=checksum,
                path=path,
                reason=reason,
            )

    def fail_image_import(self, image_id: int, reason: str) -> Image | None:
        """LOCKED -> ERROR with the reason (None when it is gone or not LOCKED any more)."""
        with db.write(self.engine) as conn:
            return images_mod.fail_import(conn, self._clock(), image_id, reason)

    def fail_interrupted_imports(
        self, reason: str, *, exclude: Collection[int] = ()
    ) -> list[Image]:
        """Every LOCKED image not being imported (not in `exclude`) -> ERROR."""
        with db.write(self.engine) as conn:
            return images_mod.fail_interrupted_imports(conn, self._clock(), reason, exclude=exclude)

    def set_image_enabled(self, ref: int | str, enabled: bool) -> Image:
        """enable: DISABLED -> READY; disable: READY -> DISABLED (Conflict if LOCKED or ERROR)."""
        with db.write(self.engine) as conn:
            return images_mod.set_image_enabled(conn, self._clock(), ref, enabled)

    def set_image_prestage(self, ref: int | str, prestage: bool) -> Image:
        with db.write(self.engine) as conn:
            return images_mod.set_image_prestage(conn, ref, prestage)

    def delete_image(self, ref: int | str) -> Image:
        """Delete an image's record (Conflict while VMs use it or it imports); returns it."""
        with db.write(self.engine) as conn:
            return images_mod.remove_image(conn, self._clock(), ref)

    def record_image_uses(self, vm_id: int, uses: Sequence[tuple[int, int]]) -> None:
        """A VM uses images: (image_id, disk_index) pairs; refused for unusable images."""
        with db.write(self.engine) as conn:
            images_mod.record_image_uses(conn, vm_id, uses)

    def release_image_uses(self, vm_id: int) -> list[int]:
        """Forget a VM's image uses; the ids of the images it used."""
        with db.write(self.engine) as conn:
            return images_mod.release_image_uses(conn, vm_id)

    # virtual networks

    def create_vnet(self, spec: VnetSpec) -> Vnet:
        """Store a validated network; Conflict when its name is taken."""
        with db.write(self.engine) as conn:
            return vnets_mod.insert_vnet(conn, self._clock(), spec)

    def get_vnet(self, ref: int | str) -> Vnet:
        """A network by id or name, with its used and held counts; NotFound otherwise."""
        with db.read(self.engine) as conn:
            return vnets_mod.find_vnet(conn, ref)

    def list_vnets(self, *, limit: int = 1000, after_id: int = 0) -> list[Vnet]:
        """A page of networks in id order, with their used and held counts."""
        with db.read(self.engine) as conn:
            return vnets_mod.select_vnets(conn, limit=limit, after_id=after_id)

    def vnet_detail(self, ref: int | str) -> tuple[Vnet, list[Lease]]:
        """A network and its used and held addresses, read in one transaction."""
        with db.read(self.engine) as conn:
            vnet = vnets_mod.find_vnet(conn, ref)
            return vnet, vnets_mod.leases_of(conn, vnet.id)

    def delete_vnet(self, ref: int | str) -> Vnet:
        """Delete a network and its holds; Conflict while a VM has a lease on it."""
        try:
            with db.write(self.engine) as conn:
                return vnets_mod.remove_vnet(conn, ref)
        except IntegrityError as exc:  # PostgreSQL: a VM took a lease on it meanwhile
            raise Conflict(
                f"network {ref} leased an address while being deleted: retry once its VMs end"
            ) from exc

    def hold_address(self, ref: int | str, address: str) -> Lease:
        """Keep a free address (IP or MAC) of a network from being leased to VMs."""
        with db.write(self.engine) as conn:
            return vnets_mod.hold_lease(conn, self._clock(), ref, address)

    def release_address(self, ref: int | str, address: str) -> tuple[str, Address]:
        """Make a held address free again (network name, address); Conflict if a VM uses it."""
        with db.write(self.engine) as conn:
            return vnets_mod.release_held(conn, ref, address)

    def allocate_leases(self, vm_id: int, requests: Sequence[LeaseRequest]) -> list[Lease]:
        """Lease addresses to a VM's NICs in a transaction of their own (VM submit takes
        them in its own transaction with `vnets.allocate_leases`)."""
        with db.write(self.engine) as conn:
            return vnets_mod.allocate_leases(conn, self._clock(), vm_id, requests)

    def release_leases(self, vm_id: int) -> int:
        """Free every address a VM has; how many were freed."""
        with db.write(self.engine) as conn:
            return vnets_mod.release_leases(conn, vm_id)

    def vm_leases(self, vm_id: int) -> list[Lease]:
        """A VM's leases by NIC index, with what each NIC is configured with."""
        with db.read(self.engine) as conn:
            return vnets_mod.leases_for_vm(conn, vm_id)

    def vm_deploy_inputs(self, vm_id: int) -> tuple[list[ImageUse], list[Lease]]:
        """A VM's image uses and leases, read together (what its deploy needs)."""
        with db.read(self.engine) as conn:
            return vm_image_uses(conn, vm_id), vnets_mod.leases_for_vm(conn, vm_id)

    # tokens

    def add_token(self, name: str, token_hash: str) -> None:
        """Store a token's hash (never its plaintext); Conflict when name or hash is taken."""
        with db.write(self.engine) as conn:
            tokens.insert_token(conn, self._clock(), name, token_hash)

    def token_exists(self, token_hash: str) -> bool:
        with db.read(self.engine) as conn:
            return tokens.token_exists(conn, token_hash)


def open_store(url: str, *, clock: Clock = utc_now) -> Store:
    """Open (creating and migrating to the newest schema) the database at `url`.

    `url` is a file path or sqlite:///path (SQLite), or postgresql://user@host/db.
    """
    engine = db.create_db_engine(db.database_url(url))
    try:
        db.upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, clock=clock)
