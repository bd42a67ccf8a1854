"""Image routes: register (imported in the background), list, show, enable/disable, delete."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from stratus.api.deps import RECENT_EVENTS, After, EngineDep, Limit, ReaderDep, StoreDep, host_ref
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.schemas import (
    NAME_PATTERN,
    ImageDetail,
    ImageIn,
    ImageOperation,
    ImageOut,
    ImagePage,
)
from stratus.api.views import JsonResponse, build_items, page_view, state_change_view
from stratus.engine.images import ImageOp
from stratus.model.records import Event, Image, ImageState
from stratus.store import Store

__all__ = ["image_detail_view", "image_view", "router"]

router = APIRouter(prefix="/images", tags=["images"], responses=ERROR_RESPONSES)

ImageRef = Annotated[str, Path(pattern=NAME_PATTERN, description="image id or name")]


def image_view(image: Image) -> dict[str, Any]:
    """The public fields of an image (`ImageOut`)."""
    return {
        "id": image.id,
        "name": image.name,
        "type": image.type.value,
        "state": image.state.value,
        "persistent": image.persistent,
        "prestage": image.prestage,
        "format": image.format,
        "size": image.size,
        "actual_size": image.actual_size,
        "checksum": image.checksum,
        "path": image.path,
        "source": image.source,
        "datastore": image.datastore,
        "progress": image.progress,
        "reason": image.reason,
        "description": image.description,
        "vms": list(image.vms),
        "created": image.created,
        "updated": image.updated,
        "version": image.version,
    }


def image_detail_view(image: Image, events: Iterable[Event]) -> dict[str, Any]:
    """An image with its recent state changes (`ImageDetail`)."""
    return image_view(image) | {"events": [state_change_view(event) for event in events]}


@router.post("", status_code=201, response_model=ImageOut, summary="Register an image")
async def register_image(engine: EngineDep, body: ImageIn) -> Response:
    """Store the image LOCKED and import it in the background; poll it until READY or ERROR.

    `path` is read on the daemon's machine; `url` is downloaded by the daemon.
    """
    image = await engine.images.register(
        body.name,
        path=body.path,
        url=body.url,
        image_type=body.type,
        persistent=body.persistent,
        fmt=body.format,
        description=body.description,
    )
    return JsonResponse(image_view(image), status_code=201)


@router.get("", response_model=ImagePage, summary="List images, a page at a time")
async def list_images(
    reader: ReaderDep,
    state: Annotated[ImageState | None, Query(description="only images in this state")] = None,
    limit: Limit = 1000,
    after: After = None,
) -> Response:
    """Images in id order, with their state, format, size and users."""
    return await reader.run(_image_page, state, limit, after or 0)


def _image_page(store: Store, state: ImageState | None, limit: int, after: int) -> Response:
    images = store.list_images(state=state, limit=limit, after_id=after)
    return JsonResponse(page_view(build_items(images, image_view), limit))


@router.get("/{ref}", response_model=ImageDetail, summary="Show an image")
async def show_image(store: StoreDep, ref: ImageRef) -> Response:
    """An image (by id or name) with the VMs using it and its recent events."""
    image, events = store.image_detail(host_ref(ref), recent_events=RECENT_EVENTS)
    return JsonResponse(image_detail_view(image, events))


@router.post("/{ref}/{operation}", response_model=ImageOut, summary="Enable, disable, prestage...")
async def operate_image(engine: EngineDep, ref: ImageRef, operation: ImageOperation) -> Response:
    """enable: usable by new VMs again; disable: kept, but no new VM may use it;
    prestage: copied to every partner zone ahead of need; on-demand: only when needed."""
    op: ImageOp = operation.value
    image = await engine.images.operate(host_ref(ref), op)
    if operation is ImageOperation.PRESTAGE:
        engine.stager.wake()
    return JsonResponse(image_view(image))


@router.delete("/{ref}", status_code=204, summary="Delete an image")
async def delete_image(engine: EngineDep, ref: ImageRef) -> Response:
    """Delete an image and its file (409 naming the VMs while any uses it)."""
    await engine.images.delete(host_ref(ref))
    return Response(status_code=204)
