"""Virtual networks: create from a template, list, show with leases, delete, hold and release.

Each call is one store transaction with nothing for the loops to do afterwards, so the
methods are synchronous: the API runs them in its thread pool. Leases for VMs are taken
in the VM submit transaction (`store/vnets.allocate_leases`) and freed in the one that
ends the VM, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from stratus.model.records import Lease, Vnet
from stratus.model.vnet import Address
from stratus.model.vnet_template import parse_vnet
from stratus.store import Store

__all__ = ["NetworkService", "VnetDetail"]


@dataclass(frozen=True)
class VnetDetail:
    """A network with its used and held addresses (by range and offset)."""

    vnet: Vnet
    leases: list[Lease]


class NetworkService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, text: str, *, fmt: str = "auto") -> tuple[Vnet, list[str]]:
        """Parse, validate and store a network template; the network and the warnings."""
        spec = parse_vnet(text, format=fmt)
        return self.store.create_vnet(spec), list(spec.warnings)

    def list_vnets(self, *, limit: int = 1000, after_id: int = 0) -> list[Vnet]:
        return self.store.list_vnets(limit=limit, after_id=after_id)

    def show(self, ref: int | str) -> VnetDetail:
        vnet, leases = self.store.vnet_detail(ref)
        return VnetDetail(vnet, leases)

    def delete(self, ref: int | str) -> Vnet:
        """Delete a network no VM has a lease on (its held addresses go with it)."""
        return self.store.delete_vnet(ref)

    def hold(self, ref: int | str, address: str) -> Lease:
        """Keep a free address (IP, IPv6 or MAC) from being leased to VMs."""
        return self.store.hold_address(ref, address)

    def release(self, ref: int | str, address: str) -> tuple[str, Address]:
        """Make a held address free again; the network's name and the address."""
        return self.store.release_address(ref, address)
