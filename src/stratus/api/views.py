"""Records -> plain JSON-ready dicts, and the orjson response that sends them.

Routes build dicts here instead of validating pydantic models: listing 20,000 VMs must
take a fraction of a second. `schemas.py` describes the same shapes for the OpenAPI
document, and a test checks that both agree.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
from fastapi.responses import JSONResponse

from stratus.model.credentials import looks_secret
from stratus.model.lifecycle import allowed_operations
from stratus.model.records import Event, HistoryRecord, Host, Vm

__all__ = [
    "JsonResponse",
    "build_items",
    "event_view",
    "host_detail_view",
    "host_view",
    "mask_secrets",
    "page_view",
    "state_change_view",
    "vm_detail_view",
    "vm_view",
]

_ORJSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
MASK = "***"
_Record = TypeVar("_Record")


class JsonResponse(JSONResponse):
    """A JSON response serialised by orjson (datetimes as RFC 3339 UTC)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_ORJSON_OPTIONS)


def vm_view(vm: Vm) -> dict[str, Any]:
    """The public fields of a VM (`VmOut`)."""
    return {
        "id": vm.id,
        "name": vm.name,
        "state": vm.state.value,
        "action": vm.action.value if vm.action is not None else None,
        "failed_state": vm.failed_state.value if vm.failed_state is not None else None,
        "reason": vm.reason,
        "host": vm.host_name,
        "host_id": vm.host_id,
        "cpu": vm.cpu,
        "vcpu": vm.vcpu,
        "memory": vm.memory,
        "user_priority": vm.user_priority,
        "requirements": vm.requirements,
        "rank": vm.rank,
        "deploy_id": vm.deploy_id,
        "info": vm.info,
        "resched": vm.resched,
        "created": vm.created,
        "updated": vm.updated,
        "version": vm.version,
    }


def state_change_view(event: Event) -> dict[str, Any]:
    """One event as shown inside a VM or host (`StateChangeOut`)."""
    return {
        "from": event.from_state,
        "to": event.to_state,
        "reason": event.reason,
        "time": event.time,
    }


def event_view(event: Event) -> dict[str, Any]:
    """One event of the event log (`EventOut`)."""
    return {"id": event.id, "object_type": event.object_type, "object_id": event.object_id} | (
        state_change_view(event)
    )


def history_view(record: HistoryRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "host": record.host_name,
        "start": record.start,
        "end": record.end,
        "reason": record.reason,
        "end_reason": record.end_reason,
    }


def vm_detail_view(
    vm: Vm, history: Iterable[HistoryRecord], events: Iterable[Event]
) -> dict[str, Any]:
    """A VM with its template, placements, recent events and allowed operations."""
    return vm_view(vm) | {
        "template": vm.template,
        "history": [history_view(record) for record in history],
        "events": [state_change_view(event) for event in events],
        "allowed_operations": allowed_operations(vm.state),
    }


def mask_secrets(options: dict[str, Any]) -> dict[str, Any]:
    """Replace the value of every option whose key looks like a credential (such options
    are refused since credentials are sealed apart; this guards hosts added before)."""
    return {key: MASK if looks_secret(key) else value for key, value in options.items()}


def host_view(host: Host) -> dict[str, Any]:
    """The public fields of a host (`HostOut`), with secret-looking options masked."""
    usage = host.usage
    return {
        "id": host.id,
        "name": host.name,
        "driver": host.driver,
        "state": host.state.value,
        "reason": host.reason,
        "cpu": host.cpu,
        "memory": host.memory,
        "used_cpu": usage.cpu,
        "used_memory": usage.memory,
        "free_cpu": host.cpu - usage.cpu,
        "free_memory": host.memory - usage.memory,
        "vms": usage.vms,
        "labels": host.labels,
        "options": mask_secrets(host.options),
        "credentials": "stored" if host.has_secrets else None,
        "monitoring": host.monitoring,
        #: instances on the host that Stratus did not make (or no longer owns)
        "orphans": list(host.monitoring.get("ORPHANS") or []),
        "last_monitored": host.last_monitored,
        "created": host.created,
        "version": host.version,
    }


def host_detail_view(host: Host, vms: Iterable[Vm], events: Iterable[Event]) -> dict[str, Any]:
    """A host with the VMs placed on it (`vms` is the list here) and its recent events."""
    return host_view(host) | {
        "vms": [{"id": vm.id, "name": vm.name, "state": vm.state.value} for vm in vms],
        "events": [state_change_view(event) for event in events],
    }


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Building 20,000 dicts otherwise triggers full collections that cost 4x the work.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_items(
    records: Sequence[_Record], view: Callable[[_Record], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The views of a page of records, built without pauses for garbage collection."""
    with _gc_paused():
        return [view(record) for record in records]


def page_view(items: Sequence[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A page of a listing; `next` is the last id when the page is full (more may follow)."""
    return {"items": items, "next": items[-1]["id"] if items and len(items) >= limit else None}
