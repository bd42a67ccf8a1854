"""Host routes: add, list, show, credentials, enable/disable/offline and delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from stratus.api.deps import (
    After,
    EngineDep,
    HostRef,
    Limit,
    ReaderDep,
    host_ref,
    recent_events,
)
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.schemas import CredentialsIn, HostDetail, HostIn, HostOperation, HostOut, HostPage
from stratus.api.views import JsonResponse, build_items, host_detail_view, host_view, page_view
from stratus.model.records import HostState
from stratus.store import Store

__all__ = ["router"]

router = APIRouter(prefix="/hosts", tags=["hosts"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=HostOut, summary="Add a host")
async def add_host(engine: EngineDep, body: HostIn) -> Response:
    """Add a host in state INIT; the monitor probes it and makes it schedulable."""
    host = await engine.add_host(
        body.name,
        body.driver,
        cpu=body.cpu,
        memory=body.memory,
        labels={key.upper(): value for key, value in body.labels.items()},
        options=dict(body.options),
        secrets=dict(body.secrets),
    )
    return JsonResponse(host_view(host), status_code=201)


@router.put("/{ref}/credentials", response_model=HostOut, summary="Replace a host's credentials")
async def set_credentials(engine: EngineDep, ref: HostRef, body: CredentialsIn) -> Response:
    """Store new credentials for the host's driver (encrypted; never shown), {} removes them."""
    host = await engine.set_host_secrets(host_ref(ref), dict(body.secrets))
    return JsonResponse(host_view(host))


@router.get("", response_model=HostPage, summary="List hosts, a page at a time")
async def list_hosts(
    reader: ReaderDep,
    state: Annotated[HostState | None, Query(description="only hosts in this state")] = None,
    limit: Limit = 1000,
    after: After = None,
) -> Response:
    """Hosts in id order, with their allocated and free capacity."""
    return await reader.run(_host_page, state, limit, after or 0)


def _host_page(store: Store, state: HostState | None, limit: int, after: int) -> Response:
    hosts = store.list_hosts(state=state, limit=limit, after_id=after)
    return JsonResponse(page_view(build_items(hosts, host_view), limit))


@router.get("/{ref}", response_model=HostDetail, summary="Show a host")
async def show_host(reader: ReaderDep, ref: HostRef) -> Response:
    """A host (by id or name) with the VMs placed on it and its recent events."""
    # Not a point read: a big host carries hundreds of VMs.
    return await reader.run(_host_detail, host_ref(ref))


def _host_detail(store: Store, ref: int | str) -> Response:
    host = store.get_host(ref)
    vms = store.vms_on_host(host.id)
    return JsonResponse(host_detail_view(host, vms, recent_events(store, "host", host.id)))


@router.post("/{ref}/{operation}", response_model=HostOut, summary="Enable, disable or offline")
async def operate_host(engine: EngineDep, ref: HostRef, operation: HostOperation) -> Response:
    """enable: schedulable again; disable: monitored, takes no new VMs; offline: not monitored."""
    host = await engine.host_operation(host_ref(ref), operation.value)
    return JsonResponse(host_view(host))


@router.delete("/{ref}", status_code=204, summary="Delete a host")
async def delete_host(engine: EngineDep, ref: HostRef) -> Response:
    """Remove a host that no VM occupies (409 otherwise)."""
    await engine.delete_host(host_ref(ref))
    return Response(status_code=204)
