"""Virtual networks: the validated network template (`VnetSpec`) and the arithmetic of its
address ranges. `model/vnet_template.py` reads and checks the template.

An address range (AR) holds SIZE consecutive addresses: the lease at `offset` has the
range's first MAC + offset and, in IPv4 ranges, its first IP + offset. An IPv4 lease's MAC
is MAC_PREFIX followed by the four bytes of its IP (02:00:c0:a8:96:64 is 192.168.150.100),
so a guest can work its address out from its MAC; its IPv6 address is the range's /64
prefix followed by the modified EUI-64 of the MAC (as SLAAC would make it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any, NamedTuple

from stratus.model.errors import Conflict, InvalidInput

__all__ = [
    "DEFAULT_MAC_PREFIX",
    "MAC_PREFIX_PATTERN",
    "Address",
    "AddressRange",
    "VnetSpec",
    "address_at",
    "ip6_for_mac",
    "ip_for_mac",
    "is_ipv4",
    "is_ipv6",
    "locate",
    "mac_for_ip",
    "mac_int",
    "mac_text",
    "parse_mac",
]

DEFAULT_MAC_PREFIX = "02:00"
MAC_PREFIX_PATTERN = re.compile(r"[0-9a-f]{2}:[0-9a-f]{2}", re.IGNORECASE)
_MAC = re.compile(r"[0-9a-f]{2}([:-]?)[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}", re.IGNORECASE)
_IP4_MAX = 2**32 - 1
_IID_MASK = 2**64 - 1  # the interface id: the low 64 bits of an IPv6 address


class Address(NamedTuple):
    """One address of a network: its MAC, and its IPv4 and IPv6 addresses when it has them."""

    mac: str
    ip: str | None
    ip6: str | None


@dataclass(frozen=True)
class AddressRange:
    """SIZE consecutive addresses; `id` is its position in the template (AR 0, AR 1...)."""

    id: int
    type: str  # IP4, IP6, IP4_6 or ETHER
    size: int  # 1..65536
    mac: str  # the first MAC, lower case with ':'
    ip: str | None = None  # the first IPv4 address (IP4, IP4_6)
    global_prefix: str | None = None  # IPv6 /64, e.g. "2001:db8:1::/64" (IP6, IP4_6)
    ula_prefix: str | None = None  # IPv6 /64 inside fc00::/7; used when no global prefix

    @property
    def last_mac(self) -> str:
        return mac_text(mac_int(self.mac) + self.size - 1)

    @property
    def last_ip(self) -> str | None:
        return None if self.ip is None else str(IPv4Address(self.ip) + self.size - 1)

    @property
    def ip6_prefix(self) -> str | None:
        """The prefix IPv6 addresses are made from: the global one, else the ULA one."""
        return self.global_prefix or self.ula_prefix


@dataclass(frozen=True)
class VnetSpec:
    """A validated network template: what the store keeps and a NIC is configured from."""

    name: str
    driver: str  # "bridge" (Linux bridge, a tap/veth per NIC) or "user" (QEMU user net)
    ranges: tuple[AddressRange, ...]
    bridge: str | None = None  # bridge networks: the Linux bridge
    netns: str | None = None  # bridge networks: the network namespace the bridge lives in
    network_address: str | None = None  # e.g. 192.168.150.0
    network_mask: str | None = None  # dotted, e.g. 255.255.255.0
    gateway: str | None = None
    dns: str | None = None  # space-separated addresses
    mac_prefix: str = DEFAULT_MAC_PREFIX  # the first two bytes of IPv4 leases' MACs
    guest_ports: tuple[int, ...] = ()  # user networks: TCP ports forwarded from 127.0.0.1
    description: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)  # not stored

    @property
    def size(self) -> int:
        """How many addresses the ranges hold together."""
        return sum(ar.size for ar in self.ranges)

    def to_json(self) -> dict[str, Any]:
        """The stored form (warnings left out)."""
        data = asdict(self)
        del data["warnings"]
        data["guest_ports"] = list(self.guest_ports)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VnetSpec:
        """Rebuild a stored spec (validated when it was created)."""
        fields = dict(data)
        fields["ranges"] = tuple(AddressRange(**ar) for ar in fields["ranges"])
        fields["guest_ports"] = tuple(fields.get("guest_ports", ()))
        return cls(**fields)


# --- address arithmetic ------------------------------------------------------------------------


def mac_int(mac: str) -> int:
    """A MAC as a 48-bit number (for range arithmetic)."""
    return int(re.sub(r"[:-]", "", mac), 16)


def mac_text(value: int) -> str:
    """A 48-bit number as a MAC: lower case, ':' separated."""
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def parse_mac(text: str) -> str | None:
    """A MAC (':' or '-' separated, or bare hex) in lower case with ':'; None if it is not one."""
    text = text.strip()
    return mac_text(mac_int(text)) if _MAC.fullmatch(text) else None


def mac_for_ip(prefix: str, ip: str) -> str:
    """The MAC of an IPv4 lease: the two-byte prefix, then the four bytes of the IP."""
    if not MAC_PREFIX_PATTERN.fullmatch(prefix):
        raise InvalidInput(f"MAC prefix {prefix!r} is not two hex bytes: write e.g. 02:00")
    return mac_text((int(prefix.replace(":", ""), 16) << 32) | int(_ipv4(ip)))


def ip_for_mac(mac: str) -> str:
    """The IPv4 address a MAC encodes in its last four bytes (the inverse of mac_for_ip)."""
    normal = parse_mac(mac)
    if normal is None:
        raise InvalidInput(f"{mac!r} is not a MAC address: write e.g. 02:00:c0:a8:96:64")
    return str(IPv4Address(mac_int(normal) & _IP4_MAX))


def ip6_for_mac(prefix: str, mac: str) -> str:
    """The IPv6 address in a /64 whose interface id is the modified EUI-64 of the MAC."""
    value = mac_int(mac)
    high, low = value >> 24, value & 0xFFFFFF
    # The first three bytes with the universal/local bit flipped, ff:fe, the last three.
    interface = (((high ^ 0x020000) << 40) | (0xFFFE << 24) | low) & _IID_MASK
    return str(IPv6Network(prefix).network_address + interface)


def _ipv4(text: str) -> IPv4Address:
    try:
        return IPv4Address(text.strip())
    except ValueError:
        raise InvalidInput(f"{text!r} is not an IPv4 address: write e.g. 192.168.150.100") from None


def address_at(spec: VnetSpec, ar_id: int, offset: int) -> Address:
    """The MAC, IPv4 and IPv6 addresses of the lease at `offset` of range `ar_id`."""
    if not 0 <= ar_id < len(spec.ranges) or not 0 <= offset < spec.ranges[ar_id].size:
        raise InvalidInput(f"network {spec.name} has no address {offset} in range {ar_id}")
    ar = spec.ranges[ar_id]
    mac = mac_text(mac_int(ar.mac) + offset)
    ip = None if ar.ip is None else str(IPv4Address(ar.ip) + offset)
    prefix = ar.ip6_prefix
    return Address(mac, ip, None if prefix is None else ip6_for_mac(prefix, mac))


def locate(spec: VnetSpec, address: str) -> tuple[int, int]:
    """(range id, offset) of an IPv4, IPv6 or MAC address of the network.

    InvalidInput when `address` is none of those; Conflict when no range holds it.
    """
    text = address.strip()
    mac = parse_mac(text)
    for ar in spec.ranges:
        if mac is not None:
            offset = mac_int(mac) - mac_int(ar.mac)
        elif ar.ip is not None and is_ipv4(text):
            offset = int(_ipv4(text)) - int(IPv4Address(ar.ip))
        elif ":" in text and ar.ip6_prefix is not None:
            offset = _ip6_offset(ar, text)
        else:
            continue
        if 0 <= offset < ar.size:
            return ar.id, offset
    if mac is None and not is_ipv4(text) and not is_ipv6(text):
        raise InvalidInput(
            f"{address!r} is not an IPv4, IPv6 or MAC address: write e.g. 192.168.150.100"
        )
    raise Conflict(
        f"address {text} is not in any address range of network {spec.name}: "
        f"see the ranges with `stratus vnet show {spec.name}`"
    )


def is_ipv4(text: str) -> bool:
    """Whether `text` is a dotted IPv4 address."""
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def is_ipv6(text: str) -> bool:
    """Whether `text` is an IPv6 address."""
    try:
        IPv6Address(text)
    except ValueError:
        return False
    return True


def _ip6_offset(ar: AddressRange, text: str) -> int:
    """The offset of an IPv6 address in a range, or -1 when the range cannot hold it."""
    if not is_ipv6(text):
        return -1
    value = int(IPv6Address(text))
    for prefix in (ar.global_prefix, ar.ula_prefix):
        if prefix is None or IPv6Address(value) not in IPv6Network(prefix):
            continue
        interface = value & _IID_MASK
        if (interface >> 24) & 0xFFFF == 0xFFFE:  # an EUI-64 made from a MAC
            high = (interface >> 40) ^ 0x020000
            return ((high << 24) | (interface & 0xFFFFFF)) - mac_int(ar.mac)
    return -1
