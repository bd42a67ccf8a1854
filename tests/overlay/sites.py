"""Sites for overlay tests: network namespaces of the test's own joined by veth "underlay"
links, peers brought up with wg-quick from the configuration Stratus generated, and a
tcpdump capture on an underlay link with a small pcap reader.

The underlay links carry no ARP and no IPv6 (static neighbours, IPv6 off), so whatever a
capture sees on them is what the tunnel sends. Every process a test starts inside a
namespace is stopped by its id (`ip netns pids`) before the namespace is deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.netns import Netns

__all__ = [
    "Capture",
    "Packet",
    "connect_sites",
    "openvpn_up",
    "read_pcap",
    "stop_processes",
    "wg_quick_up",
]

_TIMEOUT = 15


def _run(argv: list[str], *, timeout: float = _TIMEOUT) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr.strip()}"
    return done.stdout


def _sysctl(ns: Netns, key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    _run(["ip", "netns", "exec", ns.name, "sh", "-c", f"echo {value} > {path}"])


def _mac(ns: Netns, dev: str) -> str:
    return _run(["ip", "-n", ns.name, "-o", "link", "show", "dev", dev]).split("link/ether ")[1][
        :17
    ]


def connect_sites(a: Netns, b: Netns, dev_a: str, dev_b: str, subnet: str) -> tuple[str, str]:
    """A veth link between two namespaces on a /30: the two addresses (a's first).

    Static neighbours and IPv6 off: the link carries only what the sites send each other."""
    net = ipaddress.IPv4Network(subnet)
    ip_a, ip_b = str(net.network_address + 1), str(net.network_address + 2)
    _run(["ip", "-n", a.name, "link", "add", dev_a, "type", "veth", "peer", "name", dev_b,
          "netns", b.name])  # fmt: skip
    for ns, dev, mine in ((a, dev_a, ip_a), (b, dev_b, ip_b)):
        _sysctl(ns, f"net.ipv6.conf.{dev}.disable_ipv6", "1")
        _run(["ip", "-n", ns.name, "addr", "add", f"{mine}/{net.prefixlen}", "dev", dev])
        _run(["ip", "-n", ns.name, "link", "set", dev, "up", "arp", "off"])
    for ns, dev, other, other_dev, theirs in (
        (a, dev_a, b, dev_b, ip_b),
        (b, dev_b, a, dev_a, ip_a),
    ):
        mac = _mac(other, other_dev)
        _run(["ip", "-n", ns.name, "neigh", "replace", theirs, "lladdr", mac, "dev", dev,
              "nud", "permanent"])  # fmt: skip
    return ip_a, ip_b


def wg_quick_up(ns: Netns, config: str, directory: Path, name: str) -> None:
    """Bring a peer up inside `ns` exactly as a remote machine would: `wg-quick up FILE`
    (wireguard-go here, the kernel having no wireguard module)."""
    path = directory / f"{name}.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(config)
    _run(["ip", "netns", "exec", ns.name, "wg-quick", "up", str(path)], timeout=30)


def openvpn_up(ns: Netns, config: str, directory: Path, name: str) -> None:
    """Start `openvpn --config FILE` inside `ns` as a remote machine would (daemonized;
    `stop_processes` ends it)."""
    path = directory / f"{name}.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(config)
    log = directory / f"{name}.log"
    _run(["ip", "netns", "exec", ns.name, "openvpn", "--config", str(path), "--daemon",
          "--log", str(log)], timeout=30)  # fmt: skip


def stop_processes(ns: Netns, grace: float = 3.0) -> None:
    """Stop every process inside the namespace (by id): SIGTERM, then SIGKILL."""
    listed = subprocess.run(
        ["ip", "netns", "pids", ns.name], capture_output=True, text=True, timeout=_TIMEOUT
    )
    pids = [int(pid) for pid in listed.stdout.split() if pid.isdigit() and int(pid) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            time.sleep(0.05)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Packet:
    """One captured frame, decoded as far as the tests need."""

    ethertype: int
    proto: int | None = None  # IPv4 protocol: 6 TCP, 17 UDP
    src: str | None = None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None

    def __str__(self) -> str:
        where = f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"
        return f"{self.ethertype:#06x} proto={self.proto} {where}"


def read_pcap(path: Path) -> list[Packet]:
    """The frames of a pcap file (Ethernet link type, either byte order)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    order = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    assert struct.unpack(order + "I", data[:4])[0] == 0xA1B2C3D4, "not a pcap file"
    assert struct.unpack(order + "I", data[20:24])[0] == 1, "not an Ethernet capture"
    packets, pos = [], 24
    while pos + 16 <= len(data):
        length = struct.unpack(order + "I", data[pos + 8 : pos + 12])[0]
        frame = data[pos + 16 : pos + 16 + length]
        pos += 16 + length
        packets.append(_decode(frame))
    return packets


def _decode(frame: bytes) -> Packet:
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype != 0x0800 or len(frame) < 34:
        return Packet(ethertype)
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    proto = ip[9]
    src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
    sport = dport = None
    if proto in (6, 17) and len(ip) >= header + 4:
        sport, dport = struct.unpack("!HH", ip[header : header + 4])
    return Packet(ethertype, proto, src, dst, sport, dport)


class Capture:
    """tcpdump on a device inside a namespace, from `start()` until `stop()`; every frame,
    no filter, so anything but the tunnel's traffic shows up."""

    def __init__(self, ns: Netns, dev: str, path: Path) -> None:
        self.ns, self.dev, self.path = ns, dev, path
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Capture:
        argv = ["ip", "netns", "exec", self.ns.name, "tcpdump", "-Z", "root", "-i", self.dev,
                "-n", "-U", "--immediate-mode", "-s", "256", "-w", str(self.path)]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self._proc.stderr is not None
        deadline = time.monotonic() + 10
        seen = b""
        while b"listening on" not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._proc.poll() is not None:
                self.__exit__()
                raise AssertionError(f"tcpdump did not start: {seen.decode(errors='replace')}")
            ready, _, _ = select.select([self._proc.stderr], [], [], remaining)
            if ready:
                seen += os.read(self._proc.stderr.fileno(), 4096)
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)  # tcpdump flushes its file and exits
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        finally:
            if proc.stderr is not None:
                proc.stderr.close()

    def packets(self) -> list[Packet]:
        return read_pcap(self.path)
