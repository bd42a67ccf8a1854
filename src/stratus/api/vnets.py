"""Virtual network routes: create, list, show (with leases), delete, hold and release.

The routes are plain functions: FastAPI runs them in its thread pool, where the network
service's store transactions belong (see engine/networks.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from stratus.api.deps import After, EngineDep, Limit, host_ref
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.schemas import (
    NAME_PATTERN,
    AddressIn,
    AddressOut,
    VnetCreated,
    VnetDetail,
    VnetIn,
    VnetPage,
)
from stratus.api.views import JsonResponse, build_items, page_view
from stratus.model.records import Lease, Vnet
from stratus.model.vnet import Address

__all__ = ["router", "vnet_view"]

router = APIRouter(prefix="/vnets", tags=["vnets"], responses=ERROR_RESPONSES)

VnetRef = Annotated[str, Path(pattern=NAME_PATTERN, description="network id or name")]


def vnet_view(vnet: Vnet) -> dict[str, Any]:
    """A network's settings, ranges and address counts (`VnetOut`)."""
    spec = vnet.spec
    return {
        "id": vnet.id,
        "name": vnet.name,
        "driver": vnet.driver,
        "bridge": vnet.bridge,
        "netns": vnet.netns,
        "network_address": spec.network_address,
        "network_mask": spec.network_mask,
        "gateway": spec.gateway,
        "dns": spec.dns,
        "mac_prefix": spec.mac_prefix,
        "guest_ports": list(spec.guest_ports),
        "description": spec.description,
        "ranges": [
            {
                "id": ar.id,
                "type": ar.type,
                "size": ar.size,
                "first_mac": ar.mac,
                "last_mac": ar.last_mac,
                "first_ip": ar.ip,
                "last_ip": ar.last_ip,
                "global_prefix": ar.global_prefix,
                "ula_prefix": ar.ula_prefix,
            }
            for ar in spec.ranges
        ],
        "size": vnet.size,
        "used": vnet.used,
        "held": vnet.held,
        "free": vnet.free,
        "created": vnet.created,
        "version": vnet.version,
    }


def _lease_view(lease: Lease) -> dict[str, Any]:
    return {
        "ar": lease.ar_id,
        "offset": lease.offset,
        "mac": lease.mac,
        "ip": lease.ip,
        "ip6": lease.ip6,
        "state": "held" if lease.held else "used",
        "vm_id": lease.vm_id,
        "nic_index": lease.nic_index,
        "created": lease.created,
    }


def _address_view(network: str, address: Address | Lease, state: str) -> dict[str, Any]:
    return {
        "network": network,
        "mac": address.mac,
        "ip": address.ip,
        "ip6": address.ip6,
        "state": state,
    }


@router.post("", status_code=201, response_model=VnetCreated, summary="Create a network")
def create_vnet(engine: EngineDep, body: VnetIn) -> Response:
    """Create a virtual network from a template; 400 names the attribute (and line) at fault."""
    vnet, warnings = engine.networks.create(body.template, fmt=body.format)
    return JsonResponse(vnet_view(vnet) | {"warnings": warnings}, status_code=201)


@router.get("", response_model=VnetPage, summary="List networks, a page at a time")
def list_vnets(engine: EngineDep, limit: Limit = 1000, after: After = None) -> Response:
    """Networks in id order, with how many addresses are used, held and free."""
    vnets = engine.networks.list_vnets(limit=limit, after_id=after or 0)
    return JsonResponse(page_view(build_items(vnets, vnet_view), limit))


@router.get("/{ref}", response_model=VnetDetail, summary="Show a network and its leases")
def show_vnet(engine: EngineDep, ref: VnetRef) -> Response:
    """A network (by id or name) with every used or held address and the VM using it."""
    detail = engine.networks.show(host_ref(ref))
    leases = [_lease_view(lease) for lease in detail.leases]
    return JsonResponse(vnet_view(detail.vnet) | {"leases": leases})


@router.delete("/{ref}", status_code=204, summary="Delete a network")
def delete_vnet(engine: EngineDep, ref: VnetRef) -> Response:
    """Delete a network no VM has a lease on (409 names the VMs); its holds go with it."""
    engine.networks.delete(host_ref(ref))
    return Response(status_code=204)


@router.post("/{ref}/hold", response_model=AddressOut, summary="Hold an address")
def hold_address(engine: EngineDep, ref: VnetRef, body: AddressIn) -> Response:
    """Keep a free address from being leased to VMs (holding it again changes nothing)."""
    lease = engine.networks.hold(host_ref(ref), body.address)
    return JsonResponse(_address_view(lease.network, lease, "held"))


@router.post("/{ref}/release", response_model=AddressOut, summary="Release a held address")
def release_address(engine: EngineDep, ref: VnetRef, body: AddressIn) -> Response:
    """Make a held address free again; 409 when a VM uses it (it is freed when the VM ends)."""
    name, address = engine.networks.release(host_ref(ref), body.address)
    return JsonResponse(_address_view(name, address, "free"))
