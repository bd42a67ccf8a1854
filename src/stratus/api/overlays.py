"""Overlay routes under /vnets/{ref}/overlay: enable, show and disable a network's tunnel
hub; add and remove peers.

Private keys appear in one answer only: the configuration of a peer, in the answer to
the request that added it. The routes are async: the engine's overlay service runs the
store and the hub's commands in worker threads itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from stratus.api.deps import EngineDep, host_ref
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.schemas import NAME_PATTERN
from stratus.api.views import JsonResponse
from stratus.engine.overlays import OverlayDetail
from stratus.model.overlay import MAX_PEER_NAME, OverlayPeer

__all__ = ["overlay_view", "peer_view", "router"]

router = APIRouter(prefix="/vnets", tags=["overlays"], responses=ERROR_RESPONSES)

VnetRef = Annotated[str, Path(pattern=NAME_PATTERN, description="network id or name")]
PeerName = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="peer name")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OverlayIn(_Strict):
    """Where peers reach the hub, and what runs it."""

    endpoint: str = Field(
        min_length=3, max_length=270, description="HOST:PORT the peers dial (the hub's address)"
    )
    kind: Literal["wireguard", "openvpn"] = "wireguard"
    host: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="the Stratus host that runs the hub (default: this machine)",
    )
    listen_port: int | None = Field(
        default=None, ge=1, le=65535, description="UDP port of the hub (default: the endpoint's)"
    )


class PeerIn(_Strict):
    """A remote machine, or a whole site (gateway mode) when `site_subnet` is given."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_PEER_NAME)
    site_subnet: str | None = Field(
        default=None, min_length=1, max_length=18, description="the site's subnet, e.g. 10.2.0.0/24"
    )


class PeerStatusOut(BaseModel):
    endpoint: str | None = Field(description="where the peer's packets last came from")
    latest_handshake: datetime | None
    rx_bytes: int
    tx_bytes: int


class PeerOut(BaseModel):
    name: str
    kind: Literal["vm", "site"]
    vm_id: int | None
    nic_index: int | None
    address: str = Field(description="a machine's tunnel address, or a site's subnet")
    allowed_ips: str = Field(description="what the hub routes to the peer")
    public_key: str | None = Field(description="WireGuard public key (none for OpenVPN)")
    created: datetime
    status: PeerStatusOut | None = Field(description="none until the peer connected")


class HubOut(BaseModel):
    up: bool
    listen_port: int | None
    detail: str = Field(description="why the hub is down, when it is")


class OverlayOut(BaseModel):
    network: str
    vnet_id: int
    kind: Literal["wireguard", "openvpn"]
    endpoint: str
    listen_port: int
    host: str | None = Field(description="the Stratus host running the hub; none: the front-end")
    hub_address: str = Field(description="the hub's address in the network (a held lease)")
    public_key: str | None = Field(description="the hub's WireGuard public key")
    subnet: str
    created: datetime
    hub: HubOut
    peers: list[PeerOut]


class PeerCreatedOut(BaseModel):
    peer: PeerOut
    format: Literal["wg-quick", "openvpn"]
    config: str = Field(description="the peer's whole configuration: shown once, keep it secret")


def peer_view(peer: OverlayPeer, detail: OverlayDetail | None = None) -> dict[str, Any]:
    """A peer without its secret; its live state when `detail` has it."""
    status = None
    if detail is not None:
        live = detail.status.peers.get(detail.status_keys.get(peer.id, ""))
        if live is not None:
            status = {
                "endpoint": live.endpoint,
                "latest_handshake": live.latest_handshake,
                "rx_bytes": live.rx_bytes,
                "tx_bytes": live.tx_bytes,
            }
    wireguard = not peer.public.startswith("-----")
    return {
        "name": peer.name,
        "kind": peer.kind.value,
        "vm_id": peer.vm_id,
        "nic_index": peer.nic_index,
        "address": peer.address,
        "allowed_ips": peer.allowed_ips,
        "public_key": peer.public if wireguard else None,
        "created": peer.created,
        "status": status,
    }


def overlay_view(detail: OverlayDetail) -> dict[str, Any]:
    """An overlay, its hub's state and its peers (`OverlayOut`)."""
    overlay = detail.overlay
    return {
        "network": overlay.network,
        "vnet_id": overlay.vnet_id,
        "kind": overlay.kind.value,
        "endpoint": overlay.endpoint,
        "listen_port": overlay.listen_port,
        "host": overlay.host,
        "hub_address": overlay.hub_ip,
        "public_key": overlay.hub_public if overlay.kind.value == "wireguard" else None,
        "subnet": detail.subnet,
        "created": overlay.created,
        "hub": {
            "up": detail.status.up,
            "listen_port": detail.status.listen_port,
            "detail": detail.status.detail,
        },
        "peers": [peer_view(peer, detail) for peer in detail.peers],
    }


_HUB_ERRORS: dict[int | str, dict[str, Any]] = {
    502: {"description": "The hub's host refused or failed the change"},
    504: {"description": "The hub's host did not answer in time"},
}


@router.post(
    "/{ref}/overlay",
    status_code=201,
    response_model=OverlayOut,
    responses=_HUB_ERRORS,
    summary="Enable a network's overlay",
)
async def enable_overlay(engine: EngineDep, ref: VnetRef, body: OverlayIn) -> Response:
    """Start a tunnel hub for a bridge network, so remote VMs and sites can join it."""
    detail = await engine.overlays.enable(
        host_ref(ref),
        endpoint=body.endpoint,
        kind=body.kind,
        host=body.host,
        listen_port=body.listen_port,
    )
    return JsonResponse(overlay_view(detail), status_code=201)


@router.get("/{ref}/overlay", response_model=OverlayOut, summary="Show a network's overlay")
async def show_overlay(engine: EngineDep, ref: VnetRef) -> Response:
    """The hub, its peers and their latest handshakes and transfer (never a private key)."""
    return JsonResponse(overlay_view(await engine.overlays.show(host_ref(ref))))


@router.delete(
    "/{ref}/overlay", status_code=204, responses=_HUB_ERRORS, summary="Disable an overlay"
)
async def disable_overlay(engine: EngineDep, ref: VnetRef) -> Response:
    """Stop the hub and forget its hand-added peers; 409 while VMs are peers."""
    await engine.overlays.disable(host_ref(ref))
    return Response(status_code=204)


@router.post(
    "/{ref}/overlay/peers",
    status_code=201,
    response_model=PeerCreatedOut,
    responses=_HUB_ERRORS,
    summary="Add a peer to an overlay",
)
async def add_peer(engine: EngineDep, ref: VnetRef, body: PeerIn) -> Response:
    """A remote machine (it gets a held address) or a site; the answer holds its
    configuration, private key included, and is the only place it is ever shown."""
    created = await engine.overlays.add_peer(host_ref(ref), body.name, site_subnet=body.site_subnet)
    view = {"peer": peer_view(created.peer), "format": created.format, "config": created.config}
    return JsonResponse(view, status_code=201, headers={"Cache-Control": "no-store"})


@router.delete(
    "/{ref}/overlay/peers/{name}",
    status_code=204,
    responses=_HUB_ERRORS,
    summary="Remove a peer from an overlay",
)
async def remove_peer(engine: EngineDep, ref: VnetRef, name: PeerName) -> Response:
    """Take a hand-added peer off the hub and give its address back (409 for a VM's)."""
    await engine.overlays.remove_peer(host_ref(ref), name)
    return Response(status_code=204)
