"""The overlay hub on the host that holds a network's bridge: a WireGuard interface in the
network's namespace, routed to the bridge.

The kernel's wireguard when `ip link add type wireguard` works, else `wireguard-go` started
inside the namespace (it creates a TUN device there and listens on the UDP port there).
Each peer's /32 (or its site's subnet) is routed to the interface, and the bridge answers
ARP for those addresses (`proxy_arp`), so local instances reach remote peers as neighbours
on their own subnet. Everything goes through a `HostAccess` with a timeout; the private
key travels on stdin, never on a command line. Bring-up is idempotent: `hub_up` with the
same spec again changes nothing, and with new peers keeps the sessions of the others
(`wg syncconf`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stratus.drivers.access import HostAccess
from stratus.drivers.netdev import MAX_IFNAME, delete_link, ensure_bridge
from stratus.model.errors import DriverError

__all__ = [
    "HubSpec",
    "HubStatus",
    "PeerStatus",
    "bridge_routing",
    "hub_down",
    "hub_ifname",
    "hub_status",
    "hub_up",
    "in_netns",
    "parse_wg_show",
]

TIMEOUT = 15.0
_MARK = "--stratus--"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def hub_ifname(prefix: str, vnet_id: int, netns: str | None) -> str:
    """The hub's interface: `<prefix><vnet id>` plus a digest of the namespace, e.g.
    swg3-1a2b. wireguard-go's control socket (/var/run/wireguard/<name>.sock) is shared by
    every namespace of a host, so names must differ between namespaces too."""
    tag = hashlib.sha1((netns or "").encode()).hexdigest()
    name = f"{prefix}{vnet_id}-{tag[:4]}"
    if len(name) > MAX_IFNAME:
        name = prefix + hashlib.sha1(f"{vnet_id}-{netns}".encode()).hexdigest()
    return name[:MAX_IFNAME]


def in_netns(netns: str | None) -> str:
    """Shell words that run a command inside the namespace (nothing for the host's own)."""
    return f"ip netns exec {shlex.quote(netns)} " if netns else ""


def _ip(netns: str | None) -> str:
    return f"ip -n {shlex.quote(netns)}" if netns else "ip"


@dataclass(frozen=True)
class HubSpec:
    """What the hub of one network needs on its host."""

    ifname: str
    netns: str | None  # the network's namespace (None: the host's own)
    bridge: str
    gateway_cidr: str | None  # the bridge's gateway address, as the hypervisor drivers set it
    hub_cidr: str  # the hub's lease with the network's prefix, e.g. 192.168.150.2/24
    config: str = field(repr=False)  # `wg setconf` text: holds the private key
    routes: tuple[str, ...] = ()  # each peer's /32 or site subnet


@dataclass(frozen=True)
class PeerStatus:
    """What the hub knows of one peer right now."""

    endpoint: str | None  # where its packets last came from
    latest_handshake: datetime | None
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class HubStatus:
    """The hub as its host reports it; `peers` by public key (WireGuard) or name (OpenVPN)."""

    up: bool
    listen_port: int | None = None
    peers: dict[str, PeerStatus] = field(default_factory=dict)
    detail: str = ""


def _failed(what: str, access: HostAccess, stderr: bytes, hint: str) -> DriverError:
    detail = stderr.decode(errors="replace").strip()[-400:]
    return DriverError(f"{what} on {access.where}: {detail or 'failed'}; {hint}")


async def bridge_routing(
    access: HostAccess,
    *,
    ifname: str,
    netns: str | None,
    bridge: str,
    hub_cidr: str,
    routes: Sequence[str],
) -> None:
    """Route the peers' addresses to the tunnel interface (and only those), give the
    bridge the hub's address, and let the namespace forward and answer ARP for them."""
    ipaddress.IPv4Interface(hub_cidr)  # ValueError here is a programming error
    for name in (ifname, bridge):
        if not _IFNAME.fullmatch(name):  # the bridge's name goes into a /proc path
            raise DriverError(f"{name!r} is not a valid network device name")
    ip, dev, br = _ip(netns), shlex.quote(ifname), shlex.quote(bridge)
    wanted = [str(ipaddress.IPv4Network(route)) for route in routes]
    # `ip route show` prints a /32 without its prefix: match both spellings
    spelled = " ".join(w.removesuffix("/32") if w.endswith("/32") else w for w in wanted)
    sysctl = (
        "echo 1 > /proc/sys/net/ipv4/ip_forward && "
        f"echo 1 > /proc/sys/net/ipv4/conf/{bridge}/proxy_arp"
    )
    script = (
        "set -e\n"
        f"{ip} link set dev {dev} up\n"
        f"{ip} addr replace {shlex.quote(hub_cidr)} dev {br}\n"
        f"{in_netns(netns)}sh -c {shlex.quote(sysctl)}\n"
        + "".join(f"{ip} route replace {shlex.quote(w)} dev {dev}\n" for w in wanted)
        + f"{ip} -4 route show dev {dev} | while read -r dst rest; do\n"
        f'  case " {spelled} " in *" $dst "*) ;; *) {ip} route del "$dst" dev {dev} ;; esac\n'
        "done\n"
    )
    result = await access.sh(script, timeout=TIMEOUT, check=False)
    if result.returncode != 0:
        raise _failed(
            f"could not route the overlay through {ifname}",
            access,
            result.stderr,
            "check that the bridge and the tunnel interface exist in the network's namespace",
        )


async def hub_up(access: HostAccess, spec: HubSpec) -> str:
    """Bring the WireGuard hub up (or bring it to `spec`); "kernel" or "wireguard-go"."""
    await ensure_bridge(access, spec.bridge, spec.netns, spec.gateway_cidr)
    ip, dev = _ip(spec.netns), shlex.quote(spec.ifname)
    # wireguard-go daemonizes; with LOG_LEVEL set its child would keep our pipes open.
    script = (
        f"if {ip} link show dev {dev} >/dev/null 2>&1; then echo existing; exit 0; fi\n"
        f"if {ip} link add dev {dev} type wireguard 2>/dev/null; then echo kernel; exit 0; fi\n"
        "command -v wireguard-go >/dev/null 2>&1 || "
        "{ echo 'no wireguard kernel module and no wireguard-go' >&2; exit 3; }\n"
        f"{in_netns(spec.netns)}env -u LOG_LEVEL -u WG_PROCESS_FOREGROUND wireguard-go {dev}"
        " </dev/null\n"
        "echo wireguard-go\n"
    )
    made = await access.sh(script, timeout=TIMEOUT, check=False)
    if made.returncode != 0:
        raise _failed(
            f"could not create WireGuard interface {spec.ifname}",
            access,
            made.stderr,
            "install wireguard-go (or load the wireguard kernel module) and check /dev/net/tun",
        )
    how = made.text.strip().splitlines()[-1] if made.text.strip() else "existing"
    argv = [*shlex.split(in_netns(spec.netns)), "wg", "syncconf", spec.ifname, "/dev/stdin"]
    synced = await access.run(argv, input=spec.config.encode(), timeout=TIMEOUT, check=False)
    if synced.returncode != 0:
        raise _failed(
            f"could not configure WireGuard interface {spec.ifname}",
            access,
            synced.stderr,
            "install wireguard-tools (wg) on the hub's host",
        )
    await bridge_routing(
        access,
        ifname=spec.ifname,
        netns=spec.netns,
        bridge=spec.bridge,
        hub_cidr=spec.hub_cidr,
        routes=spec.routes,
    )
    return how


async def hub_down(
    access: HostAccess, ifname: str, netns: str | None, bridge: str, hub_cidr: str
) -> None:
    """Delete the interface (wireguard-go exits with it; its routes go too) and the hub's
    address on the bridge; a hub already gone is success."""
    await delete_link(access, ifname, netns)
    guard = f"[ -e /run/netns/{shlex.quote(netns)} ] || exit 0\n" if netns else ""
    ip = _ip(netns)
    script = f"{guard}{ip} addr del {shlex.quote(hub_cidr)} dev {shlex.quote(bridge)} 2>/dev/null\n"
    await access.sh(script + "exit 0\n", timeout=TIMEOUT, check=False)


async def hub_status(access: HostAccess, ifname: str, netns: str | None) -> HubStatus:
    """The hub's listen port and each peer's endpoint, latest handshake and transfer.

    Reads `wg show` one field at a time, never `dump` or `showconf`, which print the key.
    """
    wg = f"{in_netns(netns)}wg show {shlex.quote(ifname)}"
    script = "; ".join(
        f"{wg} {what} && echo {_MARK}"
        for what in ("listen-port", "latest-handshakes", "transfer", "endpoints")
    )
    result = await access.sh(script, timeout=TIMEOUT, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-200:]
        return HubStatus(up=False, detail=detail or "the interface does not exist")
    return parse_wg_show(result.text)


def parse_wg_show(text: str) -> HubStatus:
    """Parse the four `wg show IF <field>` outputs the status script prints in turn."""
    parts = text.split(_MARK + "\n")
    if len(parts) < 4:
        return HubStatus(up=False, detail="unexpected output of wg show")
    port_text, handshakes, transfer, endpoints = (part.strip() for part in parts[:4])
    fields: dict[str, dict[str, str]] = {}
    for name, block in (("handshake", handshakes), ("transfer", transfer), ("endpoint", endpoints)):
        for line in block.splitlines():
            key, _, rest = line.partition("\t")
            if key:
                fields.setdefault(key, {})[name] = rest.strip()
    peers = {}
    for key, values in fields.items():
        stamp = int(values.get("handshake") or 0)
        rx, _, tx = values.get("transfer", "0\t0").partition("\t")
        endpoint = values.get("endpoint")
        peers[key] = PeerStatus(
            endpoint=None if endpoint in (None, "(none)") else endpoint,
            latest_handshake=datetime.fromtimestamp(stamp, UTC) if stamp else None,
            rx_bytes=int(rx or 0),
            tx_bytes=int(tx or 0),
        )
    return HubStatus(
        up=True, listen_port=int(port_text) if port_text.isdigit() else None, peers=peers
    )
