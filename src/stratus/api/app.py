"""The REST API application factory: `create_app(engine)` builds a FastAPI app per engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response

from stratus.api import (
    events,
    guest,
    hosts,
    image_download,
    images,
    overlays,
    users,
    vms,
    vnets,
)
from stratus.api.auth import TokenVerifier, require_token
from stratus.api.deps import StoreReader
from stratus.api.errors import install_error_handlers
from stratus.api.limits import BodyLimit
from stratus.api.schemas import HealthOut
from stratus.api.views import JsonResponse
from stratus.ec2api import Ec2ApiConfig
from stratus.ec2api.app import ec2_routes
from stratus.ec2api.users import UserService
from stratus.engine.core import Engine

__all__ = ["API_PREFIX", "create_app", "stratus_version"]

API_PREFIX = "/api/v1"
#: Largest request body: a 1 MB template takes up to 4 MB as JSON (escapes, UTF-8).
MAX_BODY_BYTES = 8 * 1024 * 1024


@cache
def stratus_version() -> str:
    try:
        return version("stratus")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"


health_router = APIRouter(tags=["health"])


@health_router.get("/health", response_model=HealthOut, summary="Is the daemon up?")
async def health() -> JsonResponse:
    """Answers without authentication, for load balancers and `stratus serve` scripts."""
    return JsonResponse({"status": "ok", "version": stratus_version()})


def create_app(
    engine: Engine,
    *,
    manage_engine: bool = True,
    read_threads: int = 8,
    ec2: Ec2ApiConfig | None = None,
) -> FastAPI:
    """The API over `engine`; with `manage_engine` the app starts and stops the engine.

    `read_threads` bounds the threads that run store reads for requests; `ec2` configures
    the EC2 Query API served at /ec2 (SigV4 with the users' access keys, not the token).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_engine:
            await engine.start()
        try:
            yield
        finally:
            if manage_engine:
                await engine.stop()

    app = FastAPI(
        title="Stratus",
        version=stratus_version(),
        description="Hybrid-cloud virtual infrastructure manager: VMs, hosts and events.",
        # The OpenAPI document is served below, behind the token like every route but health.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        default_response_class=JsonResponse,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.reader = StoreReader(engine.store, read_threads)
    app.state.token_verifier = TokenVerifier()
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.include_router(health_router, prefix=API_PREFIX)
    app.include_router(guest.router, prefix=API_PREFIX)  # before vms: its own token check
    # before images: authenticated by the link's signature (partner zones importing)
    app.include_router(image_download.router, prefix=API_PREFIX)
    authenticated = [Depends(require_token)]

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False, dependencies=authenticated)
    async def openapi_document() -> Response:
        """The OpenAPI document of this API (needs a token, like every route but health)."""
        return JsonResponse(app.openapi())

    for module in (vms, hosts, events, images, vnets, overlays, users):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=authenticated)
    app.state.users = UserService(engine.store, engine.drivers.secrets)
    app.router.routes.extend(ec2_routes(engine, ec2 or Ec2ApiConfig(), app.state.users))
    return app
