"""The guest side of the instance metadata service: a proxy at 169.254.169.254:80 inside a
network namespace, and a one-connection relay for QEMU user networking.

Both hand each guest connection to the daemon's metadata server on a unix socket
(`<data dir>/metadata.sock`, root only), after one trusted preamble line that says who
the guest is: `STRATUS-META netns=<name or -> src=<guest IPv4>` from the proxy (the
server finds the VM leasing that address there), `STRATUS-META vm=<id>` from a relay
(one per VM, by construction). The guest's bytes follow and are never trusted for that.

    python -m stratus.drivers.metadata_proxy serve --netns NAME --socket PATH
        (run inside the namespace, e.g. with `ip netns exec NAME`): adds the address to
        `lo`, listens, prints "listening" once it does, exits when its parent does.
    python -m stratus.drivers.metadata_proxy relay --vm ID --socket PATH
        (QEMU guestfwd `cmd:`): relays stdin/stdout, which are the guest's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stratus.drivers.netdev import tap_name, veth_name

__all__ = [
    "METADATA_ADDRESS",
    "METADATA_PORT",
    "Preamble",
    "guard_script",
    "guest_ports",
    "metadata_socket_path",
    "parse_preamble",
    "preamble_for_address",
    "preamble_for_vm",
    "proxy_argv",
    "relay_command",
]

METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80
SOCKET_NAME = "metadata.sock"
MAX_PREAMBLE = 200
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
_SHORT_SOCKET_DIR = "/tmp/stratus-meta"
_PREAMBLE = re.compile(
    rb"STRATUS-META (?:netns=(?P<netns>[A-Za-z0-9_.-]{1,64}) src=(?P<src>[0-9.]{7,15})"
    rb"|vm=(?P<vm>[0-9]{1,12}))\n"
)
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_CONNECT_TIMEOUT = 5.0
_IDLE_TIMEOUT = 30.0  # a relayed connection with no bytes either way this long is closed
_MAX_CONNECTION = 120.0  # and none lives longer than this
_MAX_CONNECTIONS = 128  # per proxy
_MAX_PER_SOURCE = 16  # per guest address, so one guest cannot starve the others
_BIND_WAIT = 10.0  # a proxy of a daemon that just died may still hold the port


@dataclass(frozen=True)
class Preamble:
    """Who a connection comes from: an address in a namespace, or a VM (relays)."""

    netns: str | None = None  # None: the root namespace ("-" on the wire)
    src: str | None = None
    vm_id: int | None = None


def metadata_socket_path(data_dir: Path) -> Path:
    """`<data dir>/metadata.sock`, or a short path under /tmp when that one is too long."""
    path = Path(data_dir) / SOCKET_NAME
    if len(str(path).encode()) <= _UNIX_PATH_MAX:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:20]
    return Path(_SHORT_SOCKET_DIR) / f"{digest}.sock"


def preamble_for_address(netns: str | None, src: str) -> bytes:
    return f"STRATUS-META netns={netns or '-'} src={src}\n".encode()


def preamble_for_vm(vm_id: int) -> bytes:
    return f"STRATUS-META vm={vm_id}\n".encode()


def parse_preamble(line: bytes) -> Preamble:
    """The preamble of one connection (with its newline); ValueError when malformed."""
    match = _PREAMBLE.fullmatch(line)
    if match is None:
        raise ValueError("not a STRATUS-META preamble")
    if match["vm"] is not None:
        return Preamble(vm_id=int(match["vm"]))
    src = str(ipaddress.IPv4Address(match["src"].decode()))
    netns = match["netns"].decode()
    return Preamble(netns=None if netns == "-" else netns, src=src)


def proxy_argv(netns: str | None, socket_path: Path) -> list[str]:
    """The command that runs a proxy in `netns` (None: this namespace)."""
    enter = ["ip", "netns", "exec", netns] if netns else []
    module = [sys.executable, "-m", __name__, "serve", "--netns", netns or "-"]
    return [*enter, *module, "--socket", str(socket_path)]


def relay_command(socket_path: Path, vm_id: int) -> str:
    """The shell-quoted command of a QEMU guestfwd `cmd:` relay for VM `vm_id`."""
    argv = [sys.executable, "-m", __name__, "relay", "--vm", str(vm_id)]
    return shlex.join([*argv, "--socket", str(socket_path)])


# --- the anti-spoofing guard ----------------------------------------------------------------

GUARD_TABLE = "stratus_imds"


def guest_ports(vm_id: int, nic_index: int) -> tuple[str, ...]:
    """The bridge ports a VM's NIC can enter by: its QEMU tap (and the tap of a migration
    target on the same machine) or its container's veth."""
    tap = tap_name(vm_id, nic_index)
    return tap, "stq" + tap[3:], veth_name(vm_id, nic_index)


def guard_script(ports: Iterable[tuple[str, str]]) -> str:
    """An `nft -f` script for a bridge's namespace: packets to 169.254.169.254 pass only
    when their source address is the one leased to the bridge port they enter by, so a
    guest cannot pass for another by taking its address. `ports`: (IPv4, port name).
    Applied as one transaction; run again, it replaces the allowed pairs."""
    pairs = sorted({(str(ipaddress.IPv4Address(ip)), _port(name)) for ip, name in ports})
    table = f"bridge {GUARD_TABLE}"
    lines = [
        f"add table {table}",
        f"add set {table} allowed {{ type ipv4_addr . ifname; }}",
        f"flush set {table} allowed",
    ]
    if pairs:
        elements = ", ".join(f'{ip} . "{name}"' for ip, name in pairs)
        lines.append(f"add element {table} allowed {{ {elements} }}")
    lines += [
        f"add chain {table} guard {{ type filter hook prerouting priority -200; policy accept; }}",
        f"flush chain {table} guard",
        f"add rule {table} guard ip daddr {METADATA_ADDRESS} ip saddr . iifname != @allowed drop",
    ]
    return "\n".join(lines) + "\n"


def _port(name: str) -> str:
    if not _IFNAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a network device name")
    return name


# --- the proxy -----------------------------------------------------------------------------


class _Proxy:
    """Accepts guest connections and relays each to the unix socket after its preamble."""

    def __init__(self, netns: str | None, socket_path: str) -> None:
        self._netns = netns
        self._socket = socket_path
        self._per_source: Counter[str] = Counter()
        self._active = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        src = str(writer.get_extra_info("peername")[0])
        if self._active >= _MAX_CONNECTIONS or self._per_source[src] >= _MAX_PER_SOURCE:
            writer.close()
            return
        self._active += 1
        self._per_source[src] += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self._socket), _CONNECT_TIMEOUT
            )
            up_writer.write(preamble_for_address(self._netns, src))
            try:
                await asyncio.wait_for(
                    asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer)),
                    _MAX_CONNECTION,
                )
            finally:
                up_writer.close()
        except (OSError, TimeoutError) as exc:
            print(f"metadata proxy: {src}: {exc}", file=sys.stderr, flush=True)
        finally:
            self._active -= 1
            self._per_source[src] -= 1
            if not self._per_source[src]:
                del self._per_source[src]
            writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF (then half-close the other side) or until idle too long."""
    while True:
        try:
            data = await asyncio.wait_for(reader.read(65536), _IDLE_TIMEOUT)
        except (TimeoutError, OSError):
            writer.close()
            return
        if not data:
            if writer.can_write_eof() and not writer.is_closing():
                with contextlib.suppress(OSError):
                    writer.write_eof()
            return
        writer.write(data)
        try:
            await writer.drain()
        except OSError:
            return


def _add_address() -> None:
    """169.254.169.254/32 on this namespace's `lo` (a guest's packets to it, routed to
    the bridge, are delivered locally); `replace` makes it idempotent."""
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "replace", f"{METADATA_ADDRESS}/32", "dev", "lo"],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=10)


async def _listen(proxy: _Proxy) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BIND_WAIT
    while True:
        try:
            return await asyncio.start_server(
                proxy.handle, METADATA_ADDRESS, METADATA_PORT, reuse_address=True
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def serve(netns: str | None, socket_path: str) -> None:
    """Run the proxy of this namespace until the parent (the daemon) goes away."""
    parent = os.getppid()
    _add_address()
    server = await _listen(_Proxy(netns, socket_path))
    print("listening", flush=True)
    async with server:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)


# --- the relay (QEMU user networking) ------------------------------------------------------


def relay(socket_path: str, vm_id: int, guest_in: int = 0, guest_out: int = 1) -> int:
    """Relay one guest connection (slirp gives it as stdin/stdout) to the server."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # slirp makes stderr the guest's connection too: say nothing there
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.settimeout(_CONNECT_TIMEOUT)
    try:
        upstream.connect(socket_path)
        upstream.settimeout(_MAX_CONNECTION)
        upstream.sendall(preamble_for_vm(vm_id))
    except OSError:
        return 1

    def guest_to_server() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(guest_in, 65536):
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    threading.Thread(target=guest_to_server, daemon=True).start()
    with contextlib.suppress(OSError):
        while data := upstream.recv(65536):
            os.write(guest_out, data)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stratus.drivers.metadata_proxy")
    sub = parser.add_subparsers(dest="mode", required=True)
    serve_parser = sub.add_parser("serve", help="the proxy of the current network namespace")
    serve_parser.add_argument("--netns", required=True, help="its name, '-' for the root one")
    serve_parser.add_argument("--socket", required=True)
    relay_parser = sub.add_parser("relay", help="one connection on stdin/stdout (guestfwd)")
    relay_parser.add_argument("--vm", type=int, required=True)
    relay_parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    if args.mode == "relay":
        return relay(args.socket, args.vm)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(None if args.netns == "-" else args.netns, args.socket))
    return 0


if __name__ == "__main__":
    sys.exit(main())
