"""The OpenVPN overlay hub on its host: one `openvpn` server in the network's namespace,
its files in /run/stratus/overlay/<dev>/ (server.conf, one client-config-dir file per
peer, status, log, pid), routed to the bridge like the WireGuard hub (drivers/overlay.py).

A new peer needs no restart (OpenVPN reads a client's file when it connects); a removed
peer's file is deleted and the server gets SIGHUP, which drops every session and keeps
that certificate out (`ccd-exclusive`). The process is found by its pid file and checked
against /proc before any signal, so a recycled pid is never signalled.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stratus.drivers.access import HostAccess
from stratus.drivers.netdev import ensure_bridge
from stratus.drivers.overlay import TIMEOUT, HubStatus, PeerStatus, bridge_routing, in_netns
from stratus.model.errors import DriverError

__all__ = [
    "RUN_ROOT",
    "OpenVpnHubSpec",
    "openvpn_down",
    "openvpn_status",
    "openvpn_up",
    "parse_status",
    "run_dir",
]

RUN_ROOT = "/run/stratus/overlay"


def run_dir(dev: str) -> str:
    """The hub's files on its host (tmpfs: a reboot clears them, the next sync rewrites them)."""
    return f"{RUN_ROOT}/{dev}"


@dataclass(frozen=True)
class OpenVpnHubSpec:
    dev: str
    netns: str | None
    bridge: str
    gateway_cidr: str | None
    hub_cidr: str
    config: str = field(repr=False)  # server.conf, keys inline
    ccd: Mapping[str, str] = field(default_factory=dict)  # peer (common) name -> its file
    routes: tuple[str, ...] = ()


def _running_script(directory: str) -> str:
    """Prints the server's pid when the pid file names a live openvpn of this directory."""
    d, conf = shlex.quote(directory), shlex.quote(directory + "/server.conf")
    return (
        f"pid=$(cat {d}/pid 2>/dev/null) || exit 0\n"
        '[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || exit 0\n'
        f'tr "\\0" " " < "/proc/$pid/cmdline" | grep -q -- {conf} && echo "$pid"\n'
        "exit 0\n"
    )


async def _running_pid(access: HostAccess, directory: str) -> int | None:
    found = await access.sh(_running_script(directory), timeout=TIMEOUT, check=False)
    text = found.text.strip()
    return int(text) if text.isdigit() else None


async def openvpn_up(access: HostAccess, spec: OpenVpnHubSpec) -> str:
    """Bring the OpenVPN hub to `spec`: files, process, routes; "openvpn"."""
    await ensure_bridge(access, spec.bridge, spec.netns, spec.gateway_cidr)
    directory = run_dir(spec.dev)
    d = shlex.quote(directory)
    listed = await access.sh(
        f"mkdir -p {d}/ccd && chmod 700 {d} && ls -1 {d}/ccd", timeout=TIMEOUT, check=False
    )
    if listed.returncode != 0:
        raise DriverError(
            f"cannot create {directory} on {access.where}: check that /run is writable"
        )
    removed = sorted(set(listed.text.split()) - set(spec.ccd))
    for name, text in spec.ccd.items():
        await access.write_file(f"{directory}/ccd/{name}", text.encode(), 0o600)
    if removed:
        quoted = " ".join(shlex.quote(f"{directory}/ccd/{name}") for name in removed)
        await access.sh(f"rm -f {quoted}", timeout=TIMEOUT)
    config_path = f"{directory}/server.conf"
    old = await access.sh(
        f"cat {shlex.quote(config_path)} 2>/dev/null", timeout=TIMEOUT, check=False
    )
    changed = old.stdout != spec.config.encode()
    if changed:
        await access.write_file(config_path, spec.config.encode(), 0o600)
    pid = await _running_pid(access, directory)
    if pid is None:
        # `daemon` may fork before the TUN device exists: wait for it (10 s at most)
        ip, dev = f"ip -n {shlex.quote(spec.netns)}" if spec.netns else "ip", shlex.quote(spec.dev)
        script = (
            f"{in_netns(spec.netns)}openvpn --config {shlex.quote(config_path)} || exit 1\n"
            f"i=0; until {ip} link show dev {dev} >/dev/null 2>&1; do\n"
            "  [ $i -ge 100 ] && { echo 'no TUN device after 10 s' >&2; exit 1; }\n"
            "  sleep 0.1; i=$((i+1))\n"
            "done\n"
        )
        started = await access.sh(script, timeout=TIMEOUT * 2, check=False)
        if started.returncode != 0:
            log = await access.sh(f"tail -n 5 {d}/log 2>/dev/null", timeout=TIMEOUT, check=False)
            detail = (started.stderr.decode(errors="replace") + log.text).strip()[-400:]
            raise DriverError(
                f"openvpn did not start on {access.where}: {detail or 'failed'}; "
                "install openvpn and check /dev/net/tun"
            )
    elif changed or removed:
        await access.run(["kill", "-HUP", str(pid)], timeout=TIMEOUT)  # re-read, drop sessions
    await bridge_routing(
        access,
        ifname=spec.dev,
        netns=spec.netns,
        bridge=spec.bridge,
        hub_cidr=spec.hub_cidr,
        routes=spec.routes,
    )
    return "openvpn"


async def openvpn_down(
    access: HostAccess, dev: str, netns: str | None, bridge: str, hub_cidr: str
) -> None:
    """Stop the server (its TUN device goes with it), remove its files and the hub's
    address on the bridge; a hub already gone is success."""
    directory = run_dir(dev)
    pid = await _running_pid(access, directory)
    ip = f"ip -n {shlex.quote(netns)}" if netns else "ip"
    guard = f"[ -e /run/netns/{shlex.quote(netns)} ] && " if netns else ""
    script = ""
    if pid is not None:
        script += (
            f"kill {pid} 2>/dev/null\n"
            f"i=0; while [ -e /proc/{pid} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n"
            f"[ -e /proc/{pid} ] && kill -9 {pid} 2>/dev/null\n"
        )
    script += (
        f"rm -rf {shlex.quote(directory)}\n"
        f"{guard}{ip} link delete dev {shlex.quote(dev)} 2>/dev/null\n"
        f"{guard}{ip} addr del {shlex.quote(hub_cidr)} dev {shlex.quote(bridge)} 2>/dev/null\n"
        "exit 0\n"
    )
    await access.sh(script, timeout=TIMEOUT, check=False)


async def openvpn_status(access: HostAccess, dev: str) -> HubStatus:
    """Whether the server runs, and each connected peer (by common name) from its status file."""
    directory = run_dir(dev)
    if await _running_pid(access, directory) is None:
        return HubStatus(up=False, detail="openvpn is not running")
    status = await access.sh(
        f"cat {shlex.quote(directory + '/status')}", timeout=TIMEOUT, check=False
    )
    return parse_status(status.text)


def parse_status(text: str, listen_port: int | None = None) -> HubStatus:
    """OpenVPN's `status-version 2` file: a CLIENT_LIST line per connected peer."""
    peers: dict[str, PeerStatus] = {}
    for line in text.splitlines():
        fields: Sequence[str] = line.split(",")
        if fields[0] != "CLIENT_LIST" or len(fields) < 9:
            continue
        since = int(fields[8]) if fields[8].isdigit() else 0
        peers[fields[1]] = PeerStatus(
            endpoint=fields[2] or None,
            latest_handshake=datetime.fromtimestamp(since, UTC) if since else None,
            rx_bytes=int(fields[5]) if fields[5].isdigit() else 0,
            tx_bytes=int(fields[6]) if fields[6].isdigit() else 0,
        )
    return HubStatus(up=True, listen_port=listen_port, peers=peers)
