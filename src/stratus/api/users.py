"""EC2 users and their access keys (admin token, like every /api/v1 route).

A key's secret is in the answer of `POST /users/{name}/keys` only; it is stored sealed
and no route shows it again. The EC2 API itself (/ec2) authenticates with these keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from stratus.api.errors import ERROR_RESPONSES
from stratus.api.views import JsonResponse
from stratus.ec2api.users import UserService
from stratus.store.users import AccessKey, Quota, User

__all__ = ["router"]

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)

UserName = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]{0,63}$", description="user name")
]
KeyId = Annotated[str, Path(pattern=r"^AKIA[A-Z0-9]{16}$", description="access key id")]


#: bounds of a quota: far beyond any real pool, and within what the store keeps
MAX_QUOTA_VMS = 10_000_000
MAX_QUOTA_CPU = 10_000_000.0
MAX_QUOTA_MEMORY = 2**42  # MB (4 EiB)


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vms: int | None = Field(
        default=None, ge=0, le=MAX_QUOTA_VMS, description="instances not terminated"
    )
    cpu: float | None = Field(
        default=None, ge=0, le=MAX_QUOTA_CPU, allow_inf_nan=False, description="their CPUs in all"
    )
    memory: int | None = Field(
        default=None, ge=0, le=MAX_QUOTA_MEMORY, description="their memory in all (MB)"
    )


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+=,-]{0,63}$")
    quota: QuotaIn | None = None


class QuotaOut(BaseModel):
    vms: int | None
    cpu: float | None
    memory: int | None


class UserOut(BaseModel):
    id: int
    name: str
    owner_id: str = Field(description="the 12-digit account id EC2 answers show")
    quota: QuotaOut
    created: datetime
    access_keys: list[str] = Field(description="access key ids (never their secrets)")


class UserList(BaseModel):
    items: list[UserOut]


class KeyOut(BaseModel):
    access_key_id: str
    user: str
    created: datetime


class KeyList(BaseModel):
    items: list[KeyOut]


class NewKeyOut(KeyOut):
    secret_access_key: str = Field(description="shown once, never again")


def _users(request: Request) -> UserService:
    service: UserService = request.app.state.users
    return service


def _user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "owner_id": f"{user.id:012d}",
        "quota": {"vms": user.quota.vms, "cpu": user.quota.cpu, "memory": user.quota.memory},
        "created": user.created,
        "access_keys": list(user.access_keys),
    }


def _key_view(key: AccessKey) -> dict[str, Any]:
    return {"access_key_id": key.access_key_id, "user": key.user_name, "created": key.created}


@router.post("/users", status_code=201, response_model=UserOut, summary="Create an EC2 user")
async def create_user(request: Request, body: UserIn) -> Response:
    """A user of the EC2 API, with an optional quota on their instances."""
    quota = Quota(**body.quota.model_dump()) if body.quota else Quota()
    user = await anyio.to_thread.run_sync(_users(request).create_user, body.name, quota)
    return JsonResponse(_user_view(user), status_code=201)


@router.get("/users", response_model=UserList, summary="List EC2 users")
async def list_users(request: Request) -> Response:
    users = await anyio.to_thread.run_sync(_users(request).users)
    return JsonResponse({"items": [_user_view(user) for user in users]})


@router.get("/users/{name}", response_model=UserOut, summary="Show an EC2 user")
async def show_user(request: Request, name: UserName) -> Response:
    user = await anyio.to_thread.run_sync(_users(request).user, name)
    return JsonResponse(_user_view(user))


@router.delete("/users/{name}", status_code=204, summary="Delete an EC2 user")
async def delete_user(request: Request, name: UserName) -> Response:
    """Delete the user, its keys, key pairs, groups and addresses (409 while it has
    instances that are not terminated)."""
    await anyio.to_thread.run_sync(_users(request).delete_user, name)
    return Response(status_code=204)


@router.post(
    "/users/{name}/keys",
    status_code=201,
    response_model=NewKeyOut,
    summary="Create an access key (its secret is shown once)",
)
async def create_key(request: Request, name: UserName) -> Response:
    key = await anyio.to_thread.run_sync(_users(request).create_key, name)
    return JsonResponse(
        {
            "access_key_id": key.access_key_id,
            "user": key.user_name,
            "created": key.created,
            "secret_access_key": key.secret_access_key,
        },
        status_code=201,
    )


@router.get("/users/{name}/keys", response_model=KeyList, summary="List a user's access keys")
async def list_keys(request: Request, name: UserName) -> Response:
    keys = await anyio.to_thread.run_sync(_users(request).keys, name)
    return JsonResponse({"items": [_key_view(key) for key in keys]})


@router.delete("/access-keys/{key_id}", status_code=204, summary="Delete an access key")
async def delete_key(request: Request, key_id: KeyId) -> Response:
    """The key stops working at once on this server (within 30 s on others)."""
    await anyio.to_thread.run_sync(_users(request).delete_key, key_id)
    return Response(status_code=204)
