"""Linux network devices for instances: bridges, veths (LXC) and taps (QEMU).

Everything goes through a `HostAccess`, so the same code serves this machine and an SSH
host. A bridge network may live in a named network namespace (`ip netns add NAME`); then
every command is `ip -n NAME ...` and the namespace is created when missing (a host reboot
drops namespaces, and a network that names one should come back with its first instance).

Device names are at most 15 characters (IFNAMSIZ - 1) and derived from the VM id, so the
driver that made a device can always find it again, even after a crash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex

from stratus.drivers.access import HostAccess
from stratus.model.errors import DriverError

__all__ = [
    "MAX_IFNAME",
    "add_tap",
    "bridge_list_script",
    "delete_link",
    "ensure_bridge",
    "gateway_cidr",
    "list_bridges",
    "parse_bridge_list",
    "tap_name",
    "veth_name",
]

MAX_IFNAME = 15
_TIMEOUT = 15.0
_VALID_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_VALID_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _device_name(prefix: str, vm_id: int, nic_index: int) -> str:
    name = f"{prefix}{vm_id}n{nic_index}"
    if len(name) <= MAX_IFNAME:
        return name
    # Absurdly large ids: a stable digest keeps the name unique enough and short.
    digest = hashlib.sha1(f"{vm_id}-{nic_index}".encode()).hexdigest()
    return prefix + digest[: MAX_IFNAME - len(prefix)]


def tap_name(vm_id: int, nic_index: int) -> str:
    """The tap of a QEMU instance's NIC: `stp<vm>n<nic>`, e.g. stp42n0."""
    return _device_name("stp", vm_id, nic_index)


def veth_name(vm_id: int, nic_index: int) -> str:
    """The host end of a container NIC's veth pair: `sve<vm>n<nic>`, e.g. sve42n0."""
    return _device_name("sve", vm_id, nic_index)


def gateway_cidr(gateway: str | None, mask: str | None) -> str | None:
    """The bridge's address for a network's gateway: 192.168.150.1 + 255.255.255.0 (or 24)
    -> 192.168.150.1/24; None when the network has no gateway."""
    if not gateway:
        return None
    try:
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask or 24}").prefixlen
        address = ipaddress.IPv4Address(gateway)
    except ValueError as exc:
        raise DriverError(
            f"gateway {gateway!r} with mask {mask!r} is not an IPv4 address and netmask; "
            "fix the virtual network's GATEWAY and NETWORK_MASK"
        ) from exc
    return f"{address}/{prefix}"


def _check_ifname(name: str) -> None:
    if not _VALID_IFNAME.fullmatch(name):
        raise DriverError(
            f"{name!r} is not a valid network device name (1-15 letters, digits, '_', '.', '-')"
        )


def _check_netns(netns: str | None) -> None:
    if netns is not None and not _VALID_NETNS.fullmatch(netns):
        raise DriverError(
            f"{netns!r} is not a valid network namespace name (letters, digits, '_', '.', '-')"
        )


def _ip(netns: str | None) -> str:
    """The `ip` command for a namespace, as shell words."""
    return f"ip -n {shlex.quote(netns)}" if netns else "ip"


def _netns_script(netns: str | None) -> str:
    """Shell lines that create the namespace (with loopback up) when it is missing."""
    if not netns:
        return ""
    ns = shlex.quote(netns)
    # `ip netns add` of an existing name fails: a concurrent creator is not an error.
    return (
        f"[ -e /run/netns/{ns} ] || ip netns add {ns} 2>/dev/null || [ -e /run/netns/{ns} ]\n"
        f"ip -n {ns} link set lo up\n"
    )


async def ensure_bridge(
    access: HostAccess, bridge: str, netns: str | None, gateway_cidr: str | None
) -> None:
    """Create the bridge if missing (and its namespace), bring it up, and give it the
    gateway address when one is given; safe to call concurrently and repeatedly."""
    _check_ifname(bridge)
    _check_netns(netns)
    ip, br = _ip(netns), shlex.quote(bridge)
    script = "set -e\n" + _netns_script(netns)
    # A concurrent deploy may create the bridge between our check and our add.
    script += (
        f"{ip} link show dev {br} >/dev/null 2>&1 || {ip} link add {br} type bridge 2>/dev/null"
        f" || {ip} link show dev {br} >/dev/null\n"
        f"{ip} link set dev {br} up\n"
    )
    if gateway_cidr:
        ipaddress.IPv4Interface(gateway_cidr)  # ValueError here is a programming error
        script += f"{ip} addr replace {shlex.quote(gateway_cidr)} dev {br}\n"
    where = f" in namespace {netns}" if netns else ""
    result = await access.sh(script, timeout=_TIMEOUT, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-400:]
        raise DriverError(
            f"could not set up bridge {bridge}{where} on {access.where}: {detail or 'failed'}; "
            "check that the host has the bridge module and that the name is free"
        )


async def add_tap(access: HostAccess, name: str, bridge: str, netns: str | None) -> None:
    """Create a persistent tap on the bridge, up (QEMU opens it with script=no); a tap of
    that name left by an earlier attempt is reused."""
    _check_ifname(name)
    _check_ifname(bridge)
    _check_netns(netns)
    ip, tap, br = _ip(netns), shlex.quote(name), shlex.quote(bridge)
    script = (
        "set -e\n"
        f"{ip} link show dev {tap} >/dev/null 2>&1 || {ip} tuntap add dev {tap} mode tap\n"
        f"{ip} link set dev {tap} master {br}\n"
        f"{ip} link set dev {tap} up\n"
    )
    result = await access.sh(script, timeout=_TIMEOUT, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-400:]
        where = f" in namespace {netns}" if netns else ""
        raise DriverError(
            f"could not add tap {name} to bridge {bridge}{where} on {access.where}: "
            f"{detail or 'failed'}; check that /dev/net/tun exists and the bridge is up"
        )


async def delete_link(access: HostAccess, name: str, netns: str | None) -> None:
    """Delete a device (tap, veth, bridge); a device or namespace already gone is success."""
    _check_ifname(name)
    _check_netns(netns)
    dev = shlex.quote(name)
    guard = f"[ -e /run/netns/{shlex.quote(netns)} ] || exit 0\n" if netns else ""
    ip = _ip(netns)
    script = (
        f"{guard}{ip} link show dev {dev} >/dev/null 2>&1 || exit 0\n"
        f"{ip} link delete dev {dev} 2>/dev/null || ! {ip} link show dev {dev} >/dev/null 2>&1\n"
    )
    result = await access.sh(script, timeout=_TIMEOUT, check=False)
    if result.returncode != 0:
        raise DriverError(f"could not delete network device {name} on {access.where}")


def bridge_list_script(netns: str | None) -> str:
    """A shell command printing one bridge name per line (empty for a missing namespace);
    host probes embed it in their own script to keep to one round trip."""
    _check_netns(netns)
    guard = f"[ -e /run/netns/{shlex.quote(netns)} ] && " if netns else ""
    return f"{guard}{_ip(netns)} -o link show type bridge 2>/dev/null | cut -d: -f2"


def parse_bridge_list(text: str) -> list[str]:
    """Bridge names from `bridge_list_script` output (sorted)."""
    names = {line.strip().split("@", 1)[0] for line in text.splitlines()}
    return sorted(name for name in names if name)


async def list_bridges(access: HostAccess, netns: str | None) -> list[str]:
    """The bridges of the host's namespace, or of `netns` (none when it does not exist)."""
    result = await access.sh(bridge_list_script(netns), timeout=_TIMEOUT, check=False)
    return parse_bridge_list(result.text)
