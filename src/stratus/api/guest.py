"""Routes a guest calls from inside its VM: authenticated by the VM's own token, not an
API token (a guest holds only its TOKEN from the context CD-ROM)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from stratus.api.deps import EngineDep, VmId
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.schemas import VmOut
from stratus.api.views import JsonResponse, vm_view
from stratus.model.errors import AuthError

__all__ = ["router"]

router = APIRouter(tags=["guest"], responses=ERROR_RESPONSES)


@router.post("/vms/{vm_id}/ready", response_model=VmOut, summary="A guest reports that it booted")
async def guest_ready(
    engine: EngineDep,
    vm_id: VmId,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Called by the guest's context script with `Authorization: Bearer <its TOKEN>`."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "a guest must present its VM's TOKEN",
            hint="send `Authorization: Bearer <TOKEN>` with the TOKEN from the context CD-ROM",
        )
    vm = await engine.guest_ready(vm_id, token.strip())
    return JsonResponse(vm_view(vm))
