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
from stratus.model.records import Event, HistoryRecord, Host, HostState, Vm
from stratus.model.resources import ResourceRequests
from stratus.store import changes as changes_mod
from stratus.store import db, events, hosts, tokens
from stratus.store import vms as vms_mod
from stratus.store.changes import VmChange
from stratus.store.tables import vms as vms_table
from stratus.store.vms import NewVm

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
    ) -> Host:
        """Change the given fields if the version matches (Conflict otherwise); None keeps one."""
        fields = {
            "state": state,
            "reason": reason,
            "monitoring": monitoring,
            "last_monitored": last_monitored,
            "cpu": cpu,
            "memory": memory,
            "labels": labels,
            "options": options,
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
            from stratus.store.resources import insert_vms_with_resources

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
