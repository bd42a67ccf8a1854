"""Overlay networks: the hub of a virtual network, its hand-added peers, and the peers of
VMs placed outside the site (on hosts labelled PUBLIC_CLOUD=YES).

The store holds the truth (keys sealed with the engine's SecretBox); the hub on its host
is brought to it by `_sync`, which reads the overlay and its peers, renders the hub's
configuration and applies it, under a lock per network so two changes never apply an
older view over a newer one. Every change (enable, peer add or remove, a VM deploying on
an overlay network or ending) syncs; a sync is idempotent, so a hub that a host reboot
lost comes back with the next one.

Hub commands run through a `HostAccess` in a worker thread (`asyncio.run` there): the
deploy hook is called from the dispatcher's store thread, and the API's calls share the
same path and lock.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection

from stratus.drivers.access import AccessPool, HostAccess, LocalAccess
from stratus.drivers.overlay import HubStatus
from stratus.engine.drivers import host_info
from stratus.engine.loop import Tasks
from stratus.engine.overlay_kinds import HubContext, OverlayBackend, backend_for
from stratus.engine.secrets import SecretBox
from stratus.model.errors import DriverTimeout, InvalidInput, NotFound, StratusError
from stratus.model.lifecycle import VmState
from stratus.model.overlay import (
    GuestTunnel,
    Overlay,
    OverlayKind,
    OverlayPeer,
    PeerKind,
    check_peer_name,
    network_subnet,
    parse_endpoint,
    parse_site_subnet,
)
from stratus.model.records import Lease, Vm, Vnet
from stratus.store import Store
from stratus.store import db as store_db
from stratus.store import overlays as rows
from stratus.store.vnets import find_vnet

__all__ = ["OverlayDetail", "OverlayService", "PeerCreated"]

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
_VM_PEER = re.compile(r"vm-[0-9]+-nic[0-9]+")
_HUB_TIMEOUT = 60.0  # a whole sync: bridge, interface, configuration, routes


@dataclass(frozen=True)
class OverlayDetail:
    """An overlay with its network's subnet, its peers and what its host reports."""

    overlay: Overlay
    subnet: str
    peers: list[OverlayPeer]
    status: HubStatus
    status_keys: dict[int, str]  # peer id -> its key in status.peers


@dataclass(frozen=True)
class PeerCreated:
    """A new peer and its configuration (shown once: it holds the private key)."""

    peer: OverlayPeer
    config: str
    format: str  # "wg-quick" or "openvpn"


class OverlayService:
    """Enable, show and disable a network's overlay; add and remove peers; the deploy and
    end hooks that give VMs outside the site their tunnels."""

    def __init__(self, store: Store, secrets: SecretBox) -> None:
        self.store = store
        self.secrets = secrets
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._tasks = Tasks()

    # -- store helpers -------------------------------------------------------------------
    def _write(
        self, fn: Callable[Concatenate[Connection, datetime, P], T], *a: P.args, **k: P.kwargs
    ) -> T:
        with store_db.write(self.store.engine) as conn:
            return fn(conn, datetime.now(UTC), *a, **k)

    def _read(self, fn: Callable[Concatenate[Connection, P], T], *a: P.args, **k: P.kwargs) -> T:
        with store_db.read(self.store.engine) as conn:
            return fn(conn, *a, **k)

    def _lock(self, vnet_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(vnet_id, threading.Lock())

    def _open(self, sealed: str, owner: str) -> dict[str, str]:
        return self.secrets.open(sealed, owner)

    def _context(self, conn: Connection, ref: int | str) -> HubContext:
        overlay = rows.find_overlay(conn, ref)
        vnet = find_vnet(conn, overlay.vnet_id)
        return HubContext(
            overlay=overlay,
            vnet=vnet,
            subnet=_subnet(vnet),
            peers=rows.select_peers(conn, overlay.vnet_id),
            secrets=self._open(overlay.sealed_secret, f"the overlay hub of network {vnet.name}"),
        )

    # -- the hub on its host (blocking: call in a worker thread) ---------------------------
    def _on_hub(
        self, ctx: HubContext, action: Callable[[OverlayBackend, Any, HubContext], Any]
    ) -> Any:
        """Run `action(backend, access, ctx)` against the hub's host, on a loop of this thread."""
        backend = backend_for(ctx.overlay.kind)
        host = host_info(self.store.get_host(ctx.overlay.host)) if ctx.overlay.host else None

        async def run() -> Any:
            pool = AccessPool()
            try:
                access: HostAccess = await pool.get(host) if host else LocalAccess()
                return await asyncio.wait_for(action(backend, access, ctx), _HUB_TIMEOUT)
            except TimeoutError as exc:
                raise DriverTimeout(
                    f"the overlay hub of network {ctx.overlay.network} did not finish within "
                    f"{_HUB_TIMEOUT:g} s"
                ) from exc
            finally:
                await pool.close()

        return asyncio.run(run())

    def _sync(self, vnet_id: int) -> str | None:
        """Bring the hub to what the store says; None when the overlay is gone."""
        with self._lock(vnet_id):
            try:
                ctx = self._read(self._context, vnet_id)
            except NotFound:  # disabled (or the network deleted) meanwhile
                return None
            how: str = self._on_hub(ctx, lambda backend, access, c: backend.up(access, c))
            return how

    # -- the explicit path (API, CLI) ----------------------------------------------------
    async def enable(
        self,
        ref: int | str,
        *,
        endpoint: str,
        kind: str = OverlayKind.WIREGUARD.value,
        host: str | None = None,
        listen_port: int | None = None,
    ) -> OverlayDetail:
        """Give a bridge network a hub at `endpoint`, run by `host` (default: this machine)."""
        parsed = parse_endpoint(endpoint)
        overlay_kind = _kind(kind)
        port = listen_port if listen_port is not None else parsed.port
        if not 1 <= port <= 65535:
            raise InvalidInput(f"listen port {port} is not 1-65535")
        vnet = await asyncio.to_thread(self.store.get_vnet, ref)
        _check_bridge_network(vnet)
        if host is not None:
            await asyncio.to_thread(self.store.get_host, host)  # NotFound names it
        public, secret = backend_for(overlay_kind).hub_keys(vnet.name)
        await asyncio.to_thread(
            self._write,
            rows.insert_overlay,
            vnet.id,
            kind=overlay_kind,
            endpoint=str(parsed),
            listen_port=port,
            host=host,
            hub_public=public,
            hub_secret=self.secrets.seal(secret),
        )
        try:
            await asyncio.to_thread(self._sync, vnet.id)
        except BaseException:  # not up: undo it, so enabling again starts clean
            await asyncio.to_thread(self._undo_enable, vnet.id)
            raise
        log.info("overlay of network %s enabled at %s", vnet.name, parsed)
        return await self.show(vnet.id)

    def _undo_enable(self, vnet_id: int) -> None:
        """Stop whatever part of a hub started (best effort) and forget it."""
        ctx = self._read(self._context, vnet_id)
        try:
            self._on_hub(ctx, lambda backend, access, c: backend.down(access, c))
        except StratusError as exc:
            log.warning("overlay of network %s: cleaning up after a failed enable: %s",
                        ctx.vnet.name, exc)  # fmt: skip
        self._write_plain(rows.remove_overlay, vnet_id)

    def _write_plain(
        self, fn: Callable[Concatenate[Connection, P], T], *a: P.args, **k: P.kwargs
    ) -> T:
        with store_db.write(self.store.engine) as conn:
            return fn(conn, *a, **k)

    async def show(self, ref: int | str) -> OverlayDetail:
        """The overlay, its peers (never their keys) and the hub's live state."""
        ctx = await asyncio.to_thread(self._read, self._context, ref)
        backend = backend_for(ctx.overlay.kind)
        try:
            status: HubStatus = await asyncio.to_thread(
                self._on_hub, ctx, lambda b, access, c: b.status(access, c)
            )
        except StratusError as exc:
            status = HubStatus(up=False, detail=str(exc))
        return OverlayDetail(
            overlay=ctx.overlay,
            subnet=str(ctx.subnet),
            peers=list(ctx.peers),
            status=status,
            status_keys={peer.id: backend.status_key(peer) for peer in ctx.peers},
        )

    async def disable(self, ref: int | str) -> Overlay:
        """Stop the hub and forget it and its hand-added peers (Conflict while VMs use it)."""
        overlay: Overlay = await asyncio.to_thread(self._disable, ref)
        log.info("overlay of network %s disabled", overlay.network)
        return overlay

    def _disable(self, ref: int | str) -> Overlay:
        vnet_id = self._read(rows.find_overlay, ref).vnet_id
        with self._lock(vnet_id):
            ctx = self._read(self._context, vnet_id)
            self._write_plain(_prune_network, vnet_id)  # VMs that ended hold it no more
            overlay, _ = self._write_plain(rows.remove_overlay, vnet_id)
            self._on_hub(ctx, lambda backend, access, c: backend.down(access, c))
        return overlay

    async def add_peer(
        self, ref: int | str, name: str, *, site_subnet: str | None = None
    ) -> PeerCreated:
        """Add a remote machine (a held address) or, with `site_subnet`, a whole site."""
        check_peer_name(name)
        if _VM_PEER.fullmatch(name):
            raise InvalidInput(
                f"peer names like {name!r} are kept for VMs", hint="choose another name"
            )
        ctx = await asyncio.to_thread(self._read, self._context, ref)
        address = None
        if site_subnet is not None:
            if ctx.overlay.kind is not OverlayKind.WIREGUARD:
                raise InvalidInput(
                    "gateway mode (--site-subnet) is built for wireguard overlays only",
                    hint=f"network {ctx.vnet.name} has an {ctx.overlay.kind} overlay: add "
                    "single machines, or re-enable it with --kind wireguard",
                )
            if not ctx.vnet.spec.gateway:
                raise InvalidInput(
                    f"network {ctx.vnet.name} has no GATEWAY: local instances reach a site's "
                    "subnet through the gateway on the bridge",
                    hint="give the network a GATEWAY, or add single machines instead",
                )
            sites = [ipaddress.IPv4Network(p.address) for p in ctx.peers if p.kind is PeerKind.SITE]
            address = str(parse_site_subnet(site_subnet, ctx.subnet, sites))
        backend = backend_for(ctx.overlay.kind)
        public, secret = backend.peer_keys(ctx, name)
        peer = await asyncio.to_thread(
            self._write,
            rows.insert_peer,
            ctx.overlay,
            name=name,
            kind=PeerKind.SITE if address else PeerKind.VM,
            address=address,
            public=public,
            secret=self.secrets.seal(secret),
        )
        try:
            await asyncio.to_thread(self._sync, ctx.overlay.vnet_id)
        except BaseException:
            await asyncio.to_thread(self._write_plain, rows.remove_peer, ctx.overlay.vnet_id, name)
            raise
        log.info("overlay of network %s: peer %s added", ctx.vnet.name, name)
        config = backend.peer_config(ctx, peer, secret)
        return PeerCreated(peer, config, _format(ctx.overlay.kind))

    async def remove_peer(self, ref: int | str, name: str) -> OverlayPeer:
        """Remove a hand-added peer from the hub and give its address back."""
        peer = await asyncio.to_thread(self._write_plain, rows.remove_peer, ref, name)
        await asyncio.to_thread(self._sync, peer.vnet_id)
        log.info("overlay peer %s of network %s removed", name, ref)
        return peer

    # -- VMs outside the site (called by engine/resources.py and the dispatcher) -----------
    def deploy_tunnels(self, vm: Vm, leases: Sequence[Lease]) -> list[GuestTunnel]:
        """The tunnels of a VM about to deploy: on a PUBLIC_CLOUD=YES host, one per NIC on
        an overlay network (its lease is its tunnel address; keys made once), added to the
        hub before this returns. Elsewhere none, and peers it had are removed."""
        vnet_ids = {lease.vnet_id for lease in leases}
        if not vnet_ids:
            return []
        overlays = self._read(rows.overlays_by_vnet, vnet_ids)
        host_id = vm.target_host_id if vm.state is VmState.MIGRATING else vm.host_id
        remote = False
        if overlays and host_id is not None:
            labels = self.store.get_host(host_id).labels
            remote = labels.get("PUBLIC_CLOUD", "").strip().upper() == "YES"
        wanted = [lease for lease in leases if remote and lease.vnet_id in overlays and lease.ip]
        if not wanted and not overlays:
            return []
        peers, gone = self._write(self._vm_peers, vm, wanted, overlays)
        for vnet_id in sorted({p.vnet_id for p in [*peers, *gone]}):
            self._sync(vnet_id)
        tunnels = []
        for position, peer in enumerate(peers):
            ctx = self._read(self._context, peer.vnet_id)
            secret = self._open(peer.sealed_secret, f"overlay peer {peer.name}")
            config = backend_for(ctx.overlay.kind).peer_config(ctx, peer, secret)
            tunnels.append(backend_for(ctx.overlay.kind).guest_tunnel(config, position))
        return tunnels

    def _vm_peers(
        self,
        conn: Connection,
        now: datetime,
        vm: Vm,
        wanted: Sequence[Lease],
        overlays: dict[int, Overlay],
    ) -> tuple[list[OverlayPeer], list[OverlayPeer]]:
        """The VM's peers for `wanted` leases (made when missing), and the peers removed:
        the VM's others and those of ended VMs on these networks."""
        have: dict[tuple[int, int | None, str | None], OverlayPeer] = {
            (p.vnet_id, p.nic_index, p.address): p for p in rows.vm_peers(conn, vm.id)
        }
        peers = []
        for lease in wanted:
            peer = have.get((lease.vnet_id, lease.nic_index, lease.ip))
            if peer is None:
                overlay = overlays[lease.vnet_id]
                ctx = self._context(conn, overlay.vnet_id)
                public, secret = backend_for(overlay.kind).peer_keys(
                    ctx, f"vm-{vm.id}-nic{lease.nic_index or 0}"
                )
                peer = rows.insert_peer(
                    conn,
                    now,
                    overlay,
                    name=f"vm-{vm.id}-nic{lease.nic_index or 0}",
                    kind=PeerKind.VM,
                    address=lease.ip,
                    public=public,
                    secret=self.secrets.seal(secret),
                    vm_id=vm.id,
                    nic_index=lease.nic_index,
                )
            peers.append(peer)
        gone = rows.prune_vm_peers(conn, vm_id=vm.id, keep=[p.id for p in peers])
        for vnet_id in overlays:
            gone += rows.prune_vm_peers(conn, vnet_id=vnet_id)
        return peers, gone

    def after_step(self, vm: Vm) -> None:
        """A VM with NICs ended: take its peers off their hubs (in the background)."""
        if vm.state is VmState.DONE and "NIC" in vm.template:
            self._tasks.spawn(self._vm_ended(vm.id), name=f"overlay-end-{vm.id}")

    async def _vm_ended(self, vm_id: int) -> None:
        try:
            if not await asyncio.to_thread(self._read, rows.vm_peers, vm_id):
                return  # the common case: a read, no write
            gone = await asyncio.to_thread(self._write_plain, _prune_vm, vm_id)
            for vnet_id in sorted({peer.vnet_id for peer in gone}):
                await asyncio.to_thread(self._sync, vnet_id)
        except StratusError as exc:  # the next sync of that hub drops them
            log.warning("could not take VM %d off its overlay hubs: %s", vm_id, exc)

    async def stop(self) -> None:
        await self._tasks.cancel()


def _prune_vm(conn: Connection, vm_id: int) -> list[OverlayPeer]:
    return rows.prune_vm_peers(conn, vm_id=vm_id)


def _prune_network(conn: Connection, vnet_id: int) -> list[OverlayPeer]:
    return rows.prune_vm_peers(conn, vnet_id=vnet_id)


def _kind(kind: str) -> OverlayKind:
    try:
        return OverlayKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in OverlayKind)
        raise InvalidInput(
            f"overlay kind {kind!r} is not known", hint=f"use one of {known}"
        ) from None


def _format(kind: OverlayKind) -> str:
    return "wg-quick" if kind is OverlayKind.WIREGUARD else "openvpn"


def _subnet(vnet: Vnet) -> ipaddress.IPv4Network:
    return network_subnet(vnet.name, vnet.spec.network_address, vnet.spec.network_mask)


def _check_bridge_network(vnet: Vnet) -> None:
    if vnet.driver != "bridge" or not vnet.bridge:
        raise InvalidInput(
            f"network {vnet.name} is a {vnet.driver} network: an overlay joins remote peers "
            "to a bridge",
            hint="enable it on a network with BRIDGE (and NETNS)",
        )
    _subnet(vnet)
