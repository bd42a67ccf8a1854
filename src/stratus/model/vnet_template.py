"""Network templates: the classic syntax, YAML or JSON (read by the one template parser,
`model.template.parse_template`) checked and typed into a `VnetSpec`.

    NAME = "private"
    BRIDGE = "br0"                      # implies VN_MAD = "bridge"
    NETWORK_ADDRESS = "192.168.150.0"
    NETWORK_MASK = "255.255.255.0"      # or "/24"
    GATEWAY = "192.168.150.1"
    AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "50" ]

Ranges (AR) are IP4, IP6 (GLOBAL_PREFIX or ULA_PREFIX, a /64), IP4_6 (both) or ETHER
(MACs only). Ranges without IPv4 need MAC, their first MAC; IPv4 ranges derive it from
MAC_PREFIX and the IP unless MAC is given.

Defaults of `user` networks (QEMU user networking: a private NAT per VM): GATEWAY is the
network address + 2 and DNS the network address + 3, QEMU's own layout (10.0.2.2 and
10.0.2.3 in its default 10.0.2.0/24), and GUEST_PORTS "22 80" are forwarded from
127.0.0.1. `bridge` networks have no defaults: what is not written is not configured.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from stratus.model.errors import InvalidInput, TemplateError
from stratus.model.template import Template, parse_template
from stratus.model.template_syntax import Vector, detect_format
from stratus.model.vnet import (
    DEFAULT_MAC_PREFIX,
    MAC_PREFIX_PATTERN,
    AddressRange,
    VnetSpec,
    is_ipv4,
    is_ipv6,
    mac_for_ip,
    mac_int,
    mac_text,
    parse_mac,
)

__all__ = [
    "DEFAULT_GUEST_PORTS",
    "DRIVERS",
    "MAX_RANGE_SIZE",
    "RANGE_TYPES",
    "parse_vnet",
    "vnet_spec",
]

DRIVERS = ("bridge", "user")
RANGE_TYPES = ("IP4", "IP6", "IP4_6", "ETHER")
MAX_RANGE_SIZE = 65536
DEFAULT_GUEST_PORTS = (22, 80)
MAX_GUEST_PORTS = 32

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the API's names: a path segment, not all digits
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # Linux: IFNAMSIZ - 1, no '/', ':' or spaces
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a file name under /run/netns
_PREFIX_LENGTH = re.compile(r"/?([0-9]{1,2})")
_MAC_MAX = 2**48 - 1
_IP4_MAX = 2**32 - 1
_SCALARS = frozenset(
    {
        "NAME", "DESCRIPTION", "VN_MAD", "BRIDGE", "NETNS", "NETWORK_ADDRESS", "NETWORK_MASK",
        "GATEWAY", "DNS", "MAC_PREFIX", "GUEST_PORTS",
    }
)  # fmt: skip
_AR_KEYS = ("TYPE", "IP", "SIZE", "MAC", "GLOBAL_PREFIX", "ULA_PREFIX")
_ULA = IPv6Network("fc00::/7")
_Fail = Callable[..., InvalidInput]  # builds the error of one AR: (message, key=None)


def parse_vnet(text: str, *, format: str = "auto", source: str = "network template") -> VnetSpec:
    """Read and validate a network template (classic syntax, YAML or JSON)."""
    text = text.removeprefix("\ufeff")
    template = parse_template(text, format=format, source=source)
    kind = detect_format(text) if format == "auto" else format
    return vnet_spec(template, text=text if kind == "classic" else None, source=source)


def vnet_spec(
    template: Template, *, text: str | None = None, source: str = "network template"
) -> VnetSpec:
    """Check and type a network template; errors name the attribute (and its line when the
    classic `text` is given) and how to fix it."""
    at = _Locator(text, source)
    names = _check_shapes(template, at)

    def scalar(name: str) -> str | None:
        value = template.get(name)
        return (value.strip() or None) if isinstance(value, str) else None

    name = _vnet_name(scalar("NAME"), at)
    driver, bridge, netns = _driver(scalar("VN_MAD"), scalar("BRIDGE"), scalar("NETNS"), at)
    network = _network(scalar("NETWORK_ADDRESS"), scalar("NETWORK_MASK"), at)
    mac_prefix = _mac_prefix(scalar("MAC_PREFIX"), at)
    ranges = tuple(
        _range(i, vector, mac_prefix, network, at)
        for i, vector in enumerate(template.vectors("AR"))
    )
    if not ranges:
        raise at.error(
            "the network has no address range: add e.g. "
            'AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "50" ]',
            "NAME",
        )
    _check_overlaps(ranges, at)
    gateway = _optional_ipv4(scalar("GATEWAY"), "GATEWAY", at)
    dns = _dns(scalar("DNS"), at)
    ports: tuple[int, ...] = ()
    if driver == "user":
        gateway, dns = _user_defaults(network, ranges, gateway, dns, at)
        ports = _guest_ports(scalar("GUEST_PORTS"), at)
    elif scalar("GUEST_PORTS") is not None:
        raise at.error(
            "GUEST_PORTS is for user networks: remove it, or set VN_MAD = user", "GUEST_PORTS"
        )
    if gateway is not None:
        if network is not None and not _is_host_of(gateway, network):
            raise at.error(f"GATEWAY {gateway} is not a host address of {network}", "GATEWAY")
        _outside_ranges(gateway, "GATEWAY", ranges, at)
    return VnetSpec(
        name=name,
        driver=driver,
        ranges=ranges,
        bridge=bridge,
        netns=netns,
        network_address=None if network is None else str(network.network_address),
        network_mask=None if network is None else str(network.netmask),
        gateway=None if gateway is None else str(gateway),
        dns=dns,
        mac_prefix=mac_prefix,
        guest_ports=ports,
        description=scalar("DESCRIPTION") or "",
        warnings=tuple(
            f"unknown attribute {name} ignored" for name in names if name not in _SCALARS
        ),
    )


def _check_shapes(template: Template, at: _Locator) -> list[str]:
    """Scalars given once, AR only as vectors; the attribute names, in order (AR left out)."""
    names = list(dict.fromkeys(name for name, _ in template.items))
    for name in names:
        values = template.get_all(name)
        if name in _SCALARS and len(values) > 1:
            raise at.error(f"{name} appears {len(values)} times: give it once", name, nth=1)
        if name in _SCALARS and isinstance(values[0], dict):
            raise at.error(f"{name} must be a single value, not a vector: {name} = value", name)
        if name == "AR" and any(isinstance(value, str) for value in values):
            raise at.error("AR must be a vector: AR = [ TYPE = IP4, IP = ..., SIZE = ... ]", name)
    return [name for name in names if name != "AR"]


def _vnet_name(name: str | None, at: _Locator) -> str:
    if name is None:
        raise at.error('NAME is missing: add e.g. NAME = "private"', "NAME")
    if not _NAME.fullmatch(name) or name.isdigit():
        raise at.error(
            f"NAME {name!r} is not valid: use 1 to 64 letters, digits, '_', '.' or '-', "
            "not all digits (a number reads as a network id)",
            "NAME",
        )
    return name


def _driver(
    vn_mad: str | None, bridge: str | None, netns: str | None, at: _Locator
) -> tuple[str, str | None, str | None]:
    """(driver, bridge, netns): VN_MAD defaults to bridge when BRIDGE is set, else user."""
    driver = (vn_mad or ("bridge" if bridge else "user")).lower()
    if driver not in DRIVERS:
        raise at.error(f"VN_MAD {driver!r} is not a network driver: use bridge or user", "VN_MAD")
    if driver == "user":
        for name, value in (("BRIDGE", bridge), ("NETNS", netns)):
            if value is not None:
                raise at.error(
                    f"{name} is for bridge networks: remove it, or set VN_MAD = bridge", name
                )
        return driver, None, None
    if bridge is None:
        raise at.error('a bridge network needs BRIDGE: add e.g. BRIDGE = "br0"', "VN_MAD")
    if not _IFNAME.fullmatch(bridge) or bridge in (".", ".."):
        raise at.error(
            f"BRIDGE {bridge!r} is not a Linux interface name: use 1 to 15 letters, "
            "digits, '_', '.' or '-'",
            "BRIDGE",
        )
    if netns is not None and (not _NETNS.fullmatch(netns) or netns in (".", "..")):
        raise at.error(
            f"NETNS {netns!r} is not a namespace name: use letters, digits, '_', '.' or '-'",
            "NETNS",
        )
    return driver, bridge, netns


def _mac_prefix(text: str | None, at: _Locator) -> str:
    prefix = (text or DEFAULT_MAC_PREFIX).lower()
    if not MAC_PREFIX_PATTERN.fullmatch(prefix) or int(prefix[:2], 16) & 1:
        raise at.error(
            f"MAC_PREFIX {prefix!r} is not two hex bytes of a unicast MAC: "
            "write e.g. MAC_PREFIX = 02:00 (the first byte must be even)",
            "MAC_PREFIX",
        )
    return prefix


def _user_defaults(
    network: IPv4Network | None,
    ranges: tuple[AddressRange, ...],
    gateway: IPv4Address | None,
    dns: str | None,
    at: _Locator,
) -> tuple[IPv4Address, str]:
    """A user network's checks, and its GATEWAY and DNS (QEMU's .2 and .3 by default)."""
    if network is None:
        raise at.error(
            "a user network needs NETWORK_ADDRESS and NETWORK_MASK: the private network "
            'QEMU gives each VM, e.g. NETWORK_ADDRESS = "10.0.2.0", NETWORK_MASK = "/24"',
            "NAME",
        )
    if network.prefixlen > 29:
        raise at.error(
            f"the user network {network} is too small for QEMU's gateway, DNS and guests: "
            "use a /29 or larger",
            "NETWORK_MASK",
        )
    for ar in ranges:
        if ar.ip is None:
            raise at.error(
                f"AR {ar.id} has no IPv4 addresses: user networks need TYPE IP4 or IP4_6",
                "AR",
                nth=ar.id,
            )
    if gateway is None:
        gateway = network.network_address + 2
        _outside_ranges(gateway, "GATEWAY", ranges, at, default=True)
    if dns is None:
        dns = str(network.network_address + 3)
        _outside_ranges(IPv4Address(dns), "DNS", ranges, at, default=True)
    return gateway, dns


class _Locator:
    """Builds the errors of a network template, with the line of the attribute when known.

    The parsed template keeps no positions, so in the classic syntax the line is found
    again by looking for the n-th `NAME =` at the start of a line (and `KEY =` after it).
    """

    def __init__(self, text: str | None, source: str) -> None:
        self.text = text
        self.source = source

    def error(
        self, message: str, attribute: str, *, nth: int = 0, key: str | None = None
    ) -> InvalidInput:
        position = self._position(attribute, nth, key)
        if position is None:
            return InvalidInput(f"{self.source}: {message}")
        return TemplateError(message, line=position[0], column=position[1], source=self.source)

    def _position(self, attribute: str, nth: int, key: str | None) -> tuple[int, int] | None:
        if self.text is None:
            return None
        pattern = re.compile(rf"^[ \t]*({re.escape(attribute)})[ \t]*=", re.M | re.I)
        found = list(pattern.finditer(self.text))
        if nth >= len(found):
            return None
        at = found[nth].start(1)
        if key is not None:
            inner = re.compile(rf"\b{re.escape(key)}\s*=", re.I).search(self.text, found[nth].end())
            at = inner.start() if inner else at
        return self.text.count("\n", 0, at) + 1, at - self.text.rfind("\n", 0, at)


def _network(address: str | None, mask: str | None, at: _Locator) -> IPv4Network | None:
    if address is not None and "/" in address:
        address, _, in_address = address.partition("/")
        if mask is not None and _prefix_length(mask, at) != _prefix_length(in_address, at):
            raise at.error("NETWORK_ADDRESS and NETWORK_MASK give different masks", "NETWORK_MASK")
        mask = mask or in_address
    if address is None:
        if mask is None:
            return None
        raise at.error(
            'NETWORK_MASK needs NETWORK_ADDRESS: add e.g. NETWORK_ADDRESS = "192.168.150.0"',
            "NETWORK_MASK",
        )
    ip = _optional_ipv4(address, "NETWORK_ADDRESS", at)
    if mask is None:
        raise at.error(
            'NETWORK_ADDRESS needs NETWORK_MASK: add e.g. NETWORK_MASK = "255.255.255.0" (or /24)',
            "NETWORK_ADDRESS",
        )
    prefix = _prefix_length(mask, at)
    try:
        return IPv4Network(f"{ip}/{prefix}")
    except ValueError:
        right = IPv4Network(f"{ip}/{prefix}", strict=False).network_address
        raise at.error(
            f"NETWORK_ADDRESS {ip} is not the start of a /{prefix} network: use {right}",
            "NETWORK_ADDRESS",
        ) from None


def _prefix_length(mask: str, at: _Locator) -> int:
    """A mask as a prefix length: "255.255.255.0", "/24" and "24" all give 24."""
    mask = mask.strip()
    digits = _PREFIX_LENGTH.fullmatch(mask)
    if digits and int(digits.group(1)) <= 32:
        return int(digits.group(1))
    if not digits and is_ipv4(mask):
        inverted = ~int(IPv4Address(mask)) & _IP4_MAX
        if inverted & (inverted + 1) == 0:  # ones then zeros
            return 32 - inverted.bit_length()
    raise at.error(
        f"NETWORK_MASK {mask!r} is not a network mask: write e.g. 255.255.255.0 or /24",
        "NETWORK_MASK",
    )


def _optional_ipv4(text: str | None, what: str, at: _Locator) -> IPv4Address | None:
    if text is None:
        return None
    if not is_ipv4(text):
        raise at.error(f"{what} {text!r} is not an IPv4 address: write e.g. 192.168.150.1", what)
    return IPv4Address(text)


def _dns(text: str | None, at: _Locator) -> str | None:
    if text is None:
        return None
    servers = text.replace(",", " ").split()
    wrong = [s for s in servers if not is_ipv4(s) and not is_ipv6(s)]
    if wrong:
        raise at.error(
            f"DNS {wrong[0]!r} is not an IP address: write addresses separated by spaces", "DNS"
        )
    return " ".join(servers)


def _guest_ports(text: str | None, at: _Locator) -> tuple[int, ...]:
    if text is None:
        return DEFAULT_GUEST_PORTS
    words = text.replace(",", " ").split()
    if not all(w.isascii() and w.isdigit() and 1 <= int(w) <= 65535 for w in words):
        raise at.error(
            f'GUEST_PORTS {text!r} must be TCP ports from 1 to 65535, e.g. GUEST_PORTS = "22 80"',
            "GUEST_PORTS",
        )
    ports = tuple(dict.fromkeys(int(w) for w in words))
    if len(ports) > MAX_GUEST_PORTS:
        raise at.error(f"GUEST_PORTS lists more than {MAX_GUEST_PORTS} ports", "GUEST_PORTS")
    return ports


def _range(
    i: int, vector: Vector, mac_prefix: str, network: IPv4Network | None, at: _Locator
) -> AddressRange:
    """One AR, checked on its own: keys, TYPE, SIZE, first IP and MAC, IPv6 prefixes."""

    def fail(message: str, key: str | None = None) -> InvalidInput:
        return at.error(f"AR {i}: {message}", "AR", nth=i, key=key)

    values = {key: text.strip() for key, text in vector.items() if text.strip()}
    for key in values:
        if key not in _AR_KEYS:
            raise fail(f"unknown key {key}: an AR takes {', '.join(_AR_KEYS)}", key)
    kind = values.get("TYPE", "IP4" if "IP" in values else "").upper()
    if not kind:
        raise fail(f"TYPE is missing: add TYPE = IP4 (or {', '.join(RANGE_TYPES[1:])})")
    if kind not in RANGE_TYPES:
        raise fail(f"TYPE {kind!r} is not a range type: use {', '.join(RANGE_TYPES)}", "TYPE")
    size_text = values.get("SIZE", "")
    if not size_text:
        raise fail("SIZE is missing: add SIZE = 50, the number of addresses")
    if not (size_text.isascii() and size_text.isdigit() and 1 <= int(size_text) <= MAX_RANGE_SIZE):
        raise fail(f"SIZE {size_text!r} must be a whole number from 1 to {MAX_RANGE_SIZE}", "SIZE")
    size = int(size_text)
    ip: IPv4Address | None = None
    if kind in ("IP4", "IP4_6"):
        if "IP" not in values:
            raise fail(f"a {kind} range needs IP, its first address: add IP = 192.168.150.100")
        if not is_ipv4(values["IP"]):
            raise fail(f"IP {values['IP']!r} is not an IPv4 address", "IP")
        ip = IPv4Address(values["IP"])
        if int(ip) + size - 1 > _IP4_MAX:
            raise fail(f"{size} addresses from {ip} run past 255.255.255.255", "SIZE")
        if network is not None:
            _check_inside(ip, size, network, fail)
    elif "IP" in values:
        raise fail(f"IP is for IP4 and IP4_6 ranges, not {kind}: use TYPE = IP4_6", "IP")
    mac = _range_mac(values.get("MAC"), kind, ip, size, mac_prefix, fail)
    prefixes = {key: _ip6_prefix(values[key], key, fail) for key in _AR_KEYS[4:] if key in values}
    if kind in ("IP6", "IP4_6") and not prefixes:
        raise fail(f"a {kind} range needs GLOBAL_PREFIX or ULA_PREFIX, e.g. 2001:db8:1::/64")
    if kind in ("IP4", "ETHER") and prefixes:
        key = next(iter(prefixes))
        raise fail(f"{key} is for IP6 and IP4_6 ranges, not {kind}: use TYPE = IP4_6", key)
    return AddressRange(
        id=i,
        type=kind,
        size=size,
        mac=mac,
        ip=None if ip is None else str(ip),
        global_prefix=prefixes.get("GLOBAL_PREFIX"),
        ula_prefix=prefixes.get("ULA_PREFIX"),
    )


def _range_mac(
    text: str | None,
    kind: str,
    ip: IPv4Address | None,
    size: int,
    mac_prefix: str,
    fail: _Fail,
) -> str:
    if text is None:
        if ip is None:
            raise fail(f"a {kind} range needs MAC, its first address: add MAC = 02:00:00:00:01:00")
        return mac_for_ip(mac_prefix, str(ip))
    mac = parse_mac(text)
    if mac is None:
        raise fail(f"MAC {text!r} is not a MAC address: write e.g. 02:00:00:00:01:00", "MAC")
    first = mac_int(mac)
    if (first >> 40) & 1 or first == 0:
        raise fail(f"MAC {mac} is not a unicast MAC: the first byte must be even", "MAC")
    last = first + size - 1
    if last > _MAC_MAX or last >> 40 != first >> 40:
        raise fail(f"{size} MACs from {mac} run past {mac[:2]}:ff:ff:ff:ff:ff", "SIZE")
    return mac


def _ip6_prefix(text: str, key: str, fail: _Fail) -> str:
    try:
        prefix = IPv6Network(text if "/" in text else f"{text}/64")
    except ValueError:
        raise fail(
            f"{key} {text!r} is not an IPv6 /64 prefix: write e.g. 2001:db8:1::", key
        ) from None
    if prefix.prefixlen != 64:
        raise fail(f"{key} {text!r} is a /{prefix.prefixlen}: give a /64", key)
    if key == "ULA_PREFIX" and not prefix.subnet_of(_ULA):
        raise fail(f"ULA_PREFIX {prefix} is not inside fc00::/7: use e.g. fd00:1::", key)
    return str(prefix)


def _is_host_of(ip: IPv4Address, network: IPv4Network) -> bool:
    if network.prefixlen >= 31:
        return ip in network
    return network.network_address < ip < network.broadcast_address


def _check_inside(ip: IPv4Address, size: int, network: IPv4Network, fail: _Fail) -> None:
    last = ip + size - 1
    if not (_is_host_of(ip, network) and _is_host_of(last, network)):
        raise fail(
            f"{ip}-{last} is not inside the host addresses of {network} "
            "(NETWORK_ADDRESS/NETWORK_MASK)",
            "IP",
        )


def _check_overlaps(ranges: tuple[AddressRange, ...], at: _Locator) -> None:
    """No two ranges share an IPv4 address or a MAC (a lease must be one address)."""
    for what, spans in (
        ("IP", [(int(IPv4Address(ar.ip)), ar) for ar in ranges if ar.ip is not None]),
        ("MAC", [(mac_int(ar.mac), ar) for ar in ranges]),
    ):
        spans.sort(key=lambda span: span[0])
        for (first, a), (second, b) in itertools.pairwise(spans):
            if second <= first + a.size - 1:
                later, earlier = (a, b) if a.id > b.id else (b, a)
                raise at.error(
                    f"AR {later.id} overlaps AR {earlier.id} (both hold {what} "
                    f"{mac_text(second) if what == 'MAC' else IPv4Address(second)}): "
                    "move or shrink one of them",
                    "AR",
                    nth=later.id,
                )


def _outside_ranges(
    ip: IPv4Address,
    what: str,
    ranges: tuple[AddressRange, ...],
    at: _Locator,
    *,
    default: bool = False,
) -> None:
    """A gateway or DNS address must not be leased to a VM."""
    for ar in ranges:
        if ar.ip is not None and 0 <= int(ip) - int(IPv4Address(ar.ip)) < ar.size:
            fix = f"set {what} outside the ranges" if default else "move it out of the range"
            raise at.error(
                f"{what} {ip}{' (the user network default)' if default else ''} is inside "
                f"AR {ar.id}, so a VM could be given it: {fix}, or shrink the range",
                "AR" if default else what,
                nth=ar.id if default else 0,
            )
