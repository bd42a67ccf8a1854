"""What differs between the overlay kinds: keys, the hub on its host, a peer's
configuration, and how a VM brings its tunnel up. `engine/overlays.py` picks one by the
overlay's kind and does the rest (store, leases, sealing, locking) the same way for both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from stratus.drivers import overlay as wg_hub
from stratus.drivers import overlay_openvpn as ovpn_hub
from stratus.drivers.access import HostAccess
from stratus.drivers.netdev import gateway_cidr
from stratus.model.overlay import (
    GuestTunnel,
    HubPeer,
    Overlay,
    OverlayKind,
    OverlayPeer,
    PeerKind,
    generate_keypair,
    render_hub_config,
    render_peer_config,
    wireguard_tunnel,
)
from stratus.model.overlay_openvpn import (
    Certificate,
    issue_certificate,
    new_ca,
    openvpn_tunnel,
    peer_ccd,
    render_client_config,
    render_server_config,
    split_pem,
)
from stratus.model.records import Vnet

__all__ = ["HubContext", "OverlayBackend", "backend_for"]

Secrets = Mapping[str, str]


@dataclass(frozen=True)
class HubContext:
    """One hub as a backend needs it: its record, its network, its peers, its keys."""

    overlay: Overlay
    vnet: Vnet
    subnet: ipaddress.IPv4Network
    peers: Sequence[OverlayPeer]
    secrets: Secrets = field(repr=False)  # the hub's opened private key(s)

    @property
    def bridge(self) -> str:
        assert self.vnet.bridge is not None  # checked when the overlay was enabled
        return self.vnet.bridge

    @property
    def hub_cidr(self) -> str:
        return f"{self.overlay.hub_ip}/{self.subnet.prefixlen}"

    @property
    def gateway_cidr(self) -> str | None:
        return gateway_cidr(self.vnet.spec.gateway, self.vnet.spec.network_mask)

    def peer_cidr(self, peer: OverlayPeer) -> str | None:
        """A machine's tunnel address with the network's prefix; None for a site."""
        return None if peer.kind is PeerKind.SITE else f"{peer.address}/{self.subnet.prefixlen}"


class OverlayBackend(Protocol):
    """One overlay kind."""

    kind: OverlayKind

    def hub_keys(self, network: str) -> tuple[str, dict[str, str]]:
        """A new hub's public part and its secrets (to be sealed)."""
        ...

    def peer_keys(self, ctx: HubContext, name: str) -> tuple[str, dict[str, str]]:
        """A new peer's public part and its secrets (to be sealed)."""
        ...

    async def up(self, access: HostAccess, ctx: HubContext) -> str:
        """Bring the hub to `ctx` (idempotent); how it runs, e.g. "wireguard-go"."""
        ...

    async def down(self, access: HostAccess, ctx: HubContext) -> None:
        """Stop the hub; a hub already gone is success."""
        ...

    async def status(self, access: HostAccess, ctx: HubContext) -> wg_hub.HubStatus:
        """The hub's state and its peers' (keyed by `status_key`)."""
        ...

    def status_key(self, peer: OverlayPeer) -> str:
        """How `status` names a peer."""
        ...

    def peer_config(self, ctx: HubContext, peer: OverlayPeer, secrets: Secrets) -> str:
        """The peer's whole configuration, private key included."""
        ...

    def guest_tunnel(self, config: str, position: int) -> GuestTunnel:
        """How a VM gets the configuration of its `position`-th overlay NIC."""
        ...


class WireGuardBackend:
    """WireGuard: one interface per hub, the kernel's or wireguard-go."""

    kind = OverlayKind.WIREGUARD

    def ifname(self, ctx: HubContext) -> str:
        return wg_hub.hub_ifname("swg", ctx.overlay.vnet_id, ctx.vnet.netns)

    def hub_keys(self, network: str) -> tuple[str, dict[str, str]]:
        keys = generate_keypair()
        return keys.public, {"private_key": keys.private}

    def peer_keys(self, ctx: HubContext, name: str) -> tuple[str, dict[str, str]]:
        return self.hub_keys(name)

    def _spec(self, ctx: HubContext) -> wg_hub.HubSpec:
        peers = [HubPeer(peer.public, (peer.allowed_ips,)) for peer in ctx.peers]
        config = render_hub_config(ctx.secrets["private_key"], ctx.overlay.listen_port, peers)
        return wg_hub.HubSpec(
            ifname=self.ifname(ctx),
            netns=ctx.vnet.netns,
            bridge=ctx.bridge,
            gateway_cidr=ctx.gateway_cidr,
            hub_cidr=ctx.hub_cidr,
            config=config,
            routes=tuple(peer.allowed_ips for peer in ctx.peers),
        )

    async def up(self, access: HostAccess, ctx: HubContext) -> str:
        return await wg_hub.hub_up(access, self._spec(ctx))

    async def down(self, access: HostAccess, ctx: HubContext) -> None:
        await wg_hub.hub_down(access, self.ifname(ctx), ctx.vnet.netns, ctx.bridge, ctx.hub_cidr)

    async def status(self, access: HostAccess, ctx: HubContext) -> wg_hub.HubStatus:
        return await wg_hub.hub_status(access, self.ifname(ctx), ctx.vnet.netns)

    def status_key(self, peer: OverlayPeer) -> str:
        return peer.public

    def peer_config(self, ctx: HubContext, peer: OverlayPeer, secrets: Secrets) -> str:
        comment = _comment(ctx, peer, "wg-quick up <this file>")
        return render_peer_config(
            private_key=secrets["private_key"],
            address=ctx.peer_cidr(peer),
            hub_public=ctx.overlay.hub_public,
            endpoint=ctx.overlay.endpoint,
            allowed_ips=[str(ctx.subnet)],
            comment=comment,
        )

    def guest_tunnel(self, config: str, position: int) -> GuestTunnel:
        return wireguard_tunnel(config, position)


def _comment(ctx: HubContext, peer: OverlayPeer, how: str) -> str:
    what = (
        f"site {peer.address} (gateway mode: forward it to the tunnel)"
        if peer.kind is PeerKind.SITE
        else f"address {peer.address}"
    )
    return (
        f"Stratus overlay of network {ctx.overlay.network} ({ctx.subnet}): peer "
        f"{peer.name}, {what}\nbring it up with: {how}"
    )


class OpenVpnBackend:
    """OpenVPN in TLS mode: a CA per network, one server per hub (model/overlay_openvpn.py)."""

    kind = OverlayKind.OPENVPN

    def dev(self, ctx: HubContext) -> str:
        return wg_hub.hub_ifname("sov", ctx.overlay.vnet_id, ctx.vnet.netns)

    def hub_keys(self, network: str) -> tuple[str, dict[str, str]]:
        ca = new_ca(network)
        server = issue_certificate(ca, f"stratus-hub-{network}", server=True)
        return ca.cert + server.cert, {"ca_key": ca.key, "server_key": server.key}

    def _ca_and_server(self, ctx: HubContext) -> tuple[Certificate, Certificate]:
        ca_cert, server_cert = split_pem(ctx.overlay.hub_public)
        return (
            Certificate(ca_cert, ctx.secrets["ca_key"]),
            Certificate(server_cert, ctx.secrets["server_key"]),
        )

    def peer_keys(self, ctx: HubContext, name: str) -> tuple[str, dict[str, str]]:
        ca, _ = self._ca_and_server(ctx)
        client = issue_certificate(ca, name, server=False)
        return client.cert, {"key": client.key}

    def _spec(self, ctx: HubContext) -> ovpn_hub.OpenVpnHubSpec:
        ca, server = self._ca_and_server(ctx)
        dev = self.dev(ctx)
        config = render_server_config(
            dev=dev,
            listen_port=ctx.overlay.listen_port,
            hub_ip=ctx.overlay.hub_ip,
            subnet=ctx.subnet,
            ca_cert=ca.cert,
            server=server,
            run_dir=ovpn_hub.run_dir(dev),
        )
        ccd = {peer.name: peer_ccd(peer.address, ctx.subnet) for peer in ctx.peers}
        return ovpn_hub.OpenVpnHubSpec(
            dev=dev,
            netns=ctx.vnet.netns,
            bridge=ctx.bridge,
            gateway_cidr=ctx.gateway_cidr,
            hub_cidr=ctx.hub_cidr,
            config=config,
            ccd=ccd,
            routes=tuple(peer.allowed_ips for peer in ctx.peers),
        )

    async def up(self, access: HostAccess, ctx: HubContext) -> str:
        return await ovpn_hub.openvpn_up(access, self._spec(ctx))

    async def down(self, access: HostAccess, ctx: HubContext) -> None:
        await ovpn_hub.openvpn_down(access, self.dev(ctx), ctx.vnet.netns, ctx.bridge, ctx.hub_cidr)

    async def status(self, access: HostAccess, ctx: HubContext) -> wg_hub.HubStatus:
        status = await ovpn_hub.openvpn_status(access, self.dev(ctx))
        return replace(status, listen_port=ctx.overlay.listen_port) if status.up else status

    def status_key(self, peer: OverlayPeer) -> str:
        return peer.name

    def peer_config(self, ctx: HubContext, peer: OverlayPeer, secrets: Secrets) -> str:
        ca, _ = self._ca_and_server(ctx)
        return render_client_config(
            endpoint=ctx.overlay.endpoint,
            ca_cert=ca.cert,
            client=Certificate(peer.public, secrets["key"]),
            comment=_comment(ctx, peer, "openvpn --config <this file>"),
        )

    def guest_tunnel(self, config: str, position: int) -> GuestTunnel:
        return openvpn_tunnel(config, position)


_BACKENDS: dict[OverlayKind, OverlayBackend] = {
    OverlayKind.WIREGUARD: WireGuardBackend(),
    OverlayKind.OPENVPN: OpenVpnBackend(),
}


def backend_for(kind: OverlayKind) -> OverlayBackend:
    """The backend of an overlay kind."""
    return _BACKENDS[kind]
