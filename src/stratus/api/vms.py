"""VM routes: submit, list, show, and one route for every life-cycle operation.

Pages are read in the StoreReader's threads, one VM on the event loop (see StoreReader
for why); every change goes through the engine.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response

from stratus.api.deps import (
    RECENT_EVENTS,
    After,
    EngineDep,
    Limit,
    ReaderDep,
    StoreDep,
    VmId,
    host_ref,
)
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.images import image_view
from stratus.api.schemas import (
    NAME_PATTERN,
    DiskSaveAsIn,
    ImageOut,
    OperationIn,
    SubmitIn,
    SubmitOut,
    VmDetail,
    VmLogOut,
    VmOut,
    VmPage,
)
from stratus.api.views import JsonResponse, build_items, page_view, vm_detail_view, vm_view
from stratus.model.lifecycle import Operation, VmState
from stratus.store import Store

__all__ = ["router"]

router = APIRouter(prefix="/vms", tags=["vms"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=SubmitOut, summary="Submit a VM template")
async def submit_vms(engine: EngineDep, body: SubmitIn) -> Response:
    """Parse and validate the template, then create `count` VMs (PENDING, or HOLD)."""
    result = await engine.submit(body.template, fmt=body.format, hold=body.hold, count=body.count)
    return JsonResponse(
        {"vms": [vm_view(vm) for vm in result.vms], "warnings": result.warnings}, status_code=201
    )


@router.get("", response_model=VmPage, summary="List VMs, a page at a time")
async def list_vms(
    reader: ReaderDep,
    state: Annotated[VmState | None, Query(description="only VMs in this state")] = None,
    host: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="only VMs on this host (name or id)")
    ] = None,
    limit: Limit = 1000,
    after: After = None,
) -> Response:
    """VMs in id order; pass the answer's `next` as `after` to get the following page."""
    return await reader.run(_vm_page, state, host, limit, after or 0)


def _vm_page(
    store: Store, state: VmState | None, host: str | None, limit: int, after: int
) -> Response:
    host_id = store.get_host(host_ref(host)).id if host is not None else None
    vms = store.list_vms(
        state=state, host_id=host_id, limit=limit, after_id=after, with_template=False
    )
    return JsonResponse(page_view(build_items(vms, vm_view), limit))


@router.get("/{vm_id}", response_model=VmDetail, summary="Show a VM")
async def show_vm(store: StoreDep, vm_id: VmId) -> Response:
    """A VM with its template, placement history, recent events and allowed operations."""
    # A point read (one transaction, three indexed queries) runs on the loop: see StoreReader.
    vm, history, recent = store.vm_detail(vm_id, recent_events=RECENT_EVENTS)
    return JsonResponse(vm_detail_view(vm, history, recent))


@router.get("/{vm_id}/log", response_model=VmLogOut, summary="The tail of a VM's console log")
async def vm_log(
    engine: EngineDep,
    vm_id: VmId,
    max_bytes: Annotated[int, Query(ge=1, le=4 * 1024 * 1024, alias="bytes")] = 64 * 1024,
) -> Response:
    """The serial console of a QEMU VM, or the console log of a container, from its host."""
    data = await engine.console_log(vm_id, max_bytes)
    return JsonResponse({"vm_id": vm_id, "log": data.decode(errors="replace")})


@router.post(
    "/{vm_id}/disk-saveas",
    status_code=201,
    response_model=ImageOut,
    summary="Save a VM's disk as a new image",
)
async def disk_saveas(engine: EngineDep, vm_id: VmId, body: DiskSaveAsIn) -> Response:
    """Copy a disk of a powered-off (or stopped, undeployed) VM into a new image, which
    imports like any other (LOCKED, then READY)."""
    image = await engine.disk_saveas(vm_id, body.disk, body.name)
    return JsonResponse(image_view(image), status_code=201)


@router.post(
    "/{vm_id}/{operation}",
    status_code=202,
    response_model=VmOut,
    summary="Request a life-cycle operation",
)
async def operate_vm(
    engine: EngineDep,
    vm_id: VmId,
    operation: Operation,
    body: Annotated[OperationIn | None, Body()] = None,
) -> Response:
    """Accept the operation (409 with the state and the allowed operations if it is illegal).

    The engine carries it out in the background: follow the VM's state to see it finish.
    """
    args = body or OperationIn()
    vm = await engine.operate(
        vm_id, operation, host=args.host, hard=args.hard, live=args.live, recover=args.mode
    )
    return JsonResponse(vm_view(vm), status_code=202)
