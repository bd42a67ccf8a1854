"""Overlay networks: remote VMs and sites joined to a virtual network through a tunnel hub.

Pure: WireGuard keys, the hub's configuration (`wg setconf` format), a peer's (wg-quick
format), the checks of endpoints, subnets and peer names, the stored records, and how a
peer configuration reaches a VM through its context. The engine stores and seals the keys
(engine/overlays.py), drivers/overlay.py applies the hub's configuration on its host, and
model/overlay_openvpn.py holds the OpenVPN equivalents.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from stratus.model.context import ContextFiles
from stratus.model.errors import InvalidInput

__all__ = [
    "DEFAULT_PORTS",
    "KEEPALIVE",
    "MAX_PEER_NAME",
    "Endpoint",
    "GuestTunnel",
    "HubPeer",
    "KeyPair",
    "Overlay",
    "OverlayKind",
    "OverlayPeer",
    "PeerKind",
    "check_peer_name",
    "generate_keypair",
    "network_subnet",
    "parse_endpoint",
    "parse_site_subnet",
    "public_key",
    "render_hub_config",
    "render_peer_config",
    "wireguard_tunnel",
    "with_tunnels",
]

KEEPALIVE = 25  # seconds: keeps NAT mappings open so the hub can reach a peer behind one
MAX_PEER_NAME = 64
_PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MIN_SITE_PREFIX = 8  # a wider "site" would take most of the Internet through the hub


class OverlayKind(StrEnum):
    WIREGUARD = "wireguard"
    OPENVPN = "openvpn"


DEFAULT_PORTS = {OverlayKind.WIREGUARD: 51820, OverlayKind.OPENVPN: 1194}


class PeerKind(StrEnum):
    VM = "vm"  # one machine: a Stratus VM (vm_id set) or any machine added by hand
    SITE = "site"  # a gateway with a whole subnet behind it


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlay:
    """A network's tunnel hub as the store keeps it; the secret stays sealed."""

    vnet_id: int
    network: str  # the network's name
    kind: OverlayKind
    endpoint: str  # HOST:PORT the peers dial (the hub's public address)
    listen_port: int  # the UDP port the hub listens on (the endpoint's unless NAT differs)
    host: str | None  # the Stratus host that runs the hub; None: this machine
    hub_ip: str  # the hub's own address: a lease held in the network
    hub_public: str  # WireGuard: the public key; OpenVPN: CA and server certificates (PEM)
    created: datetime
    sealed_secret: str = field(default="", repr=False)  # the hub's private key(s), sealed


@dataclass(frozen=True)
class OverlayPeer:
    """One remote machine or site of an overlay; the secret stays sealed."""

    id: int
    vnet_id: int
    name: str
    kind: PeerKind
    vm_id: int | None  # the VM whose NIC lease is the address (None: added by hand)
    nic_index: int | None
    address: str  # a machine's lease IP, or a site's subnet (CIDR)
    public: str  # WireGuard public key, or the OpenVPN client certificate (PEM)
    created: datetime
    sealed_secret: str = field(default="", repr=False)

    @property
    def allowed_ips(self) -> str:
        """What the hub routes to this peer: its /32, or its site's subnet."""
        return self.address if "/" in self.address else f"{self.address}/32"


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where peers reach the hub: a DNS name or an IP address, and a UDP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """HOST:PORT, [IPV6]:PORT or NAME:PORT; InvalidInput saying what is wrong otherwise."""
    hint = "write HOST:PORT, e.g. 203.0.113.7:51820, vpn.example.org:51820 or [2001:db8::1]:51820"
    raw = text.strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([^:\[\]\s]+):([0-9]{1,5})", raw)
    if match is None:
        raise InvalidInput(f"overlay endpoint {text!r} is not HOST:PORT", hint=hint)
    host = match[1] or match[3]
    port = int(match[2] or match[4])
    if not 1 <= port <= 65535:
        raise InvalidInput(f"overlay endpoint {text!r}: port {port} is not 1-65535", hint=hint)
    if match[1] is not None:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidInput(
                f"overlay endpoint {text!r}: {host} is not an IPv6 address"
            ) from None
        _check_reachable(address, text)
        return Endpoint(str(address), port)
    if re.fullmatch(r"[0-9.]+", host):
        try:
            address4 = ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidInput(
                f"overlay endpoint {text!r}: {host} is not an IPv4 address", hint=hint
            ) from None
        _check_reachable(address4, text)
        return Endpoint(str(address4), port)
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidInput(f"overlay endpoint {text!r}: {host!r} is not a host name", hint=hint)
    return Endpoint(host.rstrip(".").lower(), port)


def _check_reachable(address: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> None:
    if address.is_unspecified or address.is_multicast:
        raise InvalidInput(
            f"overlay endpoint {text!r}: {address} cannot be dialled",
            hint="give the hub's public address, the one remote peers can reach",
        )


def network_subnet(network: str, address: str | None, mask: str | None) -> ipaddress.IPv4Network:
    """The network's IPv4 subnet (what the tunnel carries); InvalidInput when it has none."""
    if not address or not mask:
        raise InvalidInput(
            f"network {network} has no NETWORK_ADDRESS and NETWORK_MASK: an overlay routes "
            "that subnet",
            hint="create the network with NETWORK_ADDRESS and NETWORK_MASK",
        )
    try:
        return ipaddress.IPv4Network(f"{address}/{mask}", strict=False)
    except ValueError as exc:
        raise InvalidInput(f"network {network}: {address}/{mask} is not a subnet ({exc})") from exc


def parse_site_subnet(
    text: str, vnet_subnet: ipaddress.IPv4Network, taken: Sequence[ipaddress.IPv4Network] = ()
) -> ipaddress.IPv4Network:
    """A remote site's subnet (CIDR): not the network's own, no other site's, not too wide."""
    try:
        subnet = ipaddress.IPv4Network(text.strip(), strict=True)
    except ValueError as exc:
        hint = "write an IPv4 subnet with its prefix length, e.g. 10.20.0.0/24"
        if "host bits" in str(exc):
            loose = ipaddress.IPv4Network(text.strip(), strict=False)
            hint = f"a subnet starts at its network address: write {loose}"
        raise InvalidInput(f"site subnet {text!r} is not an IPv4 subnet", hint=hint) from None
    if subnet.prefixlen < _MIN_SITE_PREFIX:
        raise InvalidInput(
            f"site subnet {subnet} is wider than /{_MIN_SITE_PREFIX}",
            hint="give the subnet behind the site's gateway, e.g. 10.20.0.0/24",
        )
    if subnet.overlaps(vnet_subnet):
        raise InvalidInput(
            f"site subnet {subnet} overlaps the network's own subnet {vnet_subnet}",
            hint="a site brings another subnet; single machines join without --site-subnet",
        )
    for other in taken:
        if subnet.overlaps(other):
            raise InvalidInput(
                f"site subnet {subnet} overlaps {other}, which another site of this overlay has",
                hint="each site needs a subnet of its own",
            )
    return subnet


def check_peer_name(name: str) -> str:
    """A peer's name: letters, digits, '_', '.', '-' (it names files on the hub's host)."""
    if not _PEER_NAME.fullmatch(name):
        raise InvalidInput(
            f"peer name {name!r} is not valid",
            hint=f"use 1-{MAX_PEER_NAME} letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
        )
    return name


# --- WireGuard keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """A WireGuard key pair in base64, as `wg genkey | wg pubkey` writes them."""

    private: str = field(repr=False)
    public: str


def generate_keypair() -> KeyPair:
    """A fresh X25519 key pair (the private key clamped, as `wg genkey` makes it)."""
    raw = bytearray(X25519PrivateKey.generate().private_bytes_raw())
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    private = base64.b64encode(bytes(raw)).decode("ascii")
    return KeyPair(private, public_key(private))


def public_key(private: str) -> str:
    """The public key of a base64 private key, as `wg pubkey` prints it."""
    try:
        raw = base64.b64decode(private, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput("a WireGuard private key is 32 bytes in base64 (44 characters)")
    key = X25519PrivateKey.from_private_bytes(raw).public_key()
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


# --- configurations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HubPeer:
    """A peer as the hub sees it: its public key and the addresses routed to it."""

    public_key: str
    allowed_ips: tuple[str, ...]


def render_hub_config(private_key: str, listen_port: int, peers: Sequence[HubPeer]) -> str:
    """The hub's configuration in `wg setconf` / `wg syncconf` format (no wg-quick keys)."""
    lines = ["[Interface]", f"PrivateKey = {private_key}", f"ListenPort = {listen_port}"]
    for peer in peers:
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
    return "\n".join(lines) + "\n"


def render_peer_config(
    *,
    private_key: str,
    address: str | None,
    hub_public: str,
    endpoint: Endpoint | str,
    allowed_ips: Sequence[str],
    comment: str = "",
) -> str:
    """A peer's configuration in wg-quick format (`wg-quick up FILE` brings it up).

    `address` is the peer's tunnel address with the network's prefix (192.168.150.7/24);
    None for a site's gateway, which routes its subnet and needs no address of its own.
    """
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += ["[Interface]", f"PrivateKey = {private_key}"]
    if address:
        lines.append(f"Address = {address}")
    lines += [
        "",
        "[Peer]",
        f"PublicKey = {hub_public}",
        f"Endpoint = {endpoint}",
        f"AllowedIPs = {', '.join(allowed_ips)}",
        f"PersistentKeepalive = {KEEPALIVE}",
    ]
    return "\n".join(lines) + "\n"


# --- handing a configuration to a VM -------------------------------------------------------


@dataclass(frozen=True)
class GuestTunnel:
    """A peer configuration as a VM receives it: a context variable, a file, a command."""

    variable: str  # the context.sh variable holding the configuration in base64
    path: str  # where cloud-init writes it in the guest
    content: str = field(repr=False)  # holds the peer's private key
    command: tuple[str, ...]  # the runcmd entry that brings the tunnel up


def wireguard_tunnel(content: str, index: int = 0) -> GuestTunnel:
    """The first overlay NIC's tunnel is `stratus` (WG_CONFIG_BASE64), the next ones
    `stratus<n>` (WG<n>_CONFIG_BASE64), n being the NIC index."""
    name = "stratus" if index == 0 else f"stratus{index}"
    variable = "WG_CONFIG_BASE64" if index == 0 else f"WG{index}_CONFIG_BASE64"
    return GuestTunnel(variable, f"/etc/wireguard/{name}.conf", content, ("wg-quick", "up", name))


def with_tunnels(files: ContextFiles, tunnels: Sequence[GuestTunnel]) -> ContextFiles:
    """The context with each tunnel's variable in context.sh, and cloud-init writing its
    file (mode 0600) and bringing it up before any start script runs."""
    if not tunnels:
        return files
    variables = dict(files.variables)
    user_data = dict(files.user_data)
    entries = list(_sequence(user_data.get("write_files")))
    commands = list(_sequence(user_data.get("runcmd")))
    for tunnel in tunnels:
        encoded = base64.b64encode(tunnel.content.encode()).decode("ascii")
        if tunnel.variable in variables:
            raise InvalidInput(
                f"CONTEXT key {tunnel.variable} is written by Stratus for the VM's overlay network",
                hint="remove it, or give your value another name",
            )
        variables[tunnel.variable] = encoded
        entries.insert(0, {"path": tunnel.path, "permissions": "0600", "encoding": "b64",
                           "content": encoded})  # fmt: skip
    commands[:0] = [list(tunnel.command) for tunnel in tunnels]
    user_data["write_files"] = entries
    user_data["runcmd"] = commands
    return replace(files, variables=variables, user_data=user_data)


def _sequence(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []
