"""Image downloads, for partner zones importing an image of this one, and for admins.

Authenticated by a signed link's signature (engine/image_links.py), so a partner only
ever holds links to the images its VMs need; without one, by an API token as every
other route.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials

from stratus.api.auth import bearer, require_token
from stratus.api.deps import EngineDep
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.schemas import NAME_PATTERN
from stratus.model.errors import AuthError, Conflict
from stratus.model.records import ImageState

__all__ = ["router"]

router = APIRouter(tags=["images"], responses=ERROR_RESPONSES)

_SERVABLE = (ImageState.READY, ImageState.USED)


@router.get(
    "/images/{ref}/download",
    response_class=FileResponse,
    summary="Download an image's file (signed link or API token)",
)
async def download_image(
    request: Request,
    engine: EngineDep,
    ref: Annotated[str, Path(pattern=NAME_PATTERN, description="image id or name")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    expires: Annotated[int | None, Query(ge=0)] = None,
    signature: Annotated[
        str | None, Query(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    ] = None,
) -> FileResponse:
    """The image's stored file (a disk, kernel or root filesystem archive), as imported."""
    if expires is not None and signature is not None:
        if not ref.isdigit():
            raise AuthError("a signed link names its image by id", hint="use the link as given")
        engine.image_links.verify(int(ref), expires, signature)
    else:
        await require_token(request, credentials)
    key: int | str = int(ref) if ref.isdigit() else ref
    image = await anyio.to_thread.run_sync(engine.store.get_image, key)
    path = FilePath(image.path)
    if image.state not in _SERVABLE or not await anyio.to_thread.run_sync(path.is_file):
        raise Conflict(
            f"image {image.name} is {image.state}, not a READY file: it cannot be downloaded",
            hint="wait for its import to finish; directory images are not served",
        )
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{image.name}.{image.format or 'img'}",
        headers={"X-Stratus-Checksum": image.checksum},
    )
