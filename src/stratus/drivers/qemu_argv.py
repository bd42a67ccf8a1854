"""The QEMU command line of one instance, built from plain data (no I/O here).

A `Launch` holds everything needed to start an instance. It is kept in the instance's run
file, so resume and live migration can start the same machine again (with a new deploy
id, new forwarded ports or an `-incoming` source) without the DeploySpec.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from stratus.drivers.metadata_proxy import METADATA_ADDRESS
from stratus.model.errors import InvalidInput

__all__ = [
    "DEBUG_EXIT_CODE",
    "QEMU_BINARY",
    "Drive",
    "Launch",
    "Nic",
    "build_argv",
    "incoming_from_file",
    "launch_from_dict",
    "launch_to_dict",
    "metadata_address",
    "usernet_forwards",
]

QEMU_BINARY = "qemu-system-x86_64"
#: what QEMU exits with when the probe's boot sector writes 1 to isa-debug-exit ((1<<1)|1)
DEBUG_EXIT_CODE = 3
_HUB_LINE = re.compile(r"^Hub -?\d+ \(n(\d+)\):$")


@dataclass(frozen=True)
class Drive:
    """One virtio disk, in the order the guest sees them (vda, vdb, ...)."""

    path: str
    format: str  # the format QEMU opens the file with: qcow2 for clones, raw for the ISO
    readonly: bool = False


@dataclass(frozen=True)
class Nic:
    """One network interface and how it reaches the outside."""

    index: int
    driver: str  # "user" (QEMU's own NAT) or "bridge" (a tap on a Linux bridge)
    mac: str
    ip: str | None = None
    network_address: str | None = None
    mask: str | None = None
    gateway: str | None = None
    #: user networking: guest TCP ports forwarded from a port of 127.0.0.1 that the host's
    #: kernel picks (read back with `usernet_forwards`), so two instances never collide
    ports: tuple[int, ...] = ()
    tap: str | None = None  # bridge networking: the tap device QEMU opens
    bridge: str | None = None  # bridge networking: the bridge the tap is put on
    #: user networking: the command QEMU runs for each guest connection to the metadata
    #: address (`metadata_address`), relaying it to the daemon's metadata service
    metadata_relay: str | None = None


@dataclass(frozen=True)
class Launch:
    """Everything that makes up one instance's command line."""

    deploy_id: str
    vm_id: int
    vm_dir: str
    accel: str  # kvm or tcg
    memory: int  # MB
    vcpu: int
    machine: str = "q35"
    drives: tuple[Drive, ...] = ()
    nics: tuple[Nic, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    netns: str | None = None  # run QEMU inside this network namespace (bridge networks)

    @property
    def console_path(self) -> str:
        return f"{self.vm_dir}/console.log"


def build_argv(launch: Launch, qmp_path: str, pid_path: str, incoming: str | None) -> list[str]:
    """The full argv (daemonized) for `launch`; `incoming` restores or receives a state."""
    argv = [
        *(["ip", "netns", "exec", launch.netns] if launch.netns else []),
        QEMU_BINARY,
        "-name", f"guest={launch.deploy_id}",
        "-machine", f"{launch.machine},accel={launch.accel}",
        *(["-cpu", "host"] if launch.accel == "kvm" else []),
        "-m", str(launch.memory),
        "-smp", str(max(1, launch.vcpu)),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-pidfile", pid_path,
        "-daemonize",
        "-chardev", f"file,id=ser0,path={_opt(launch.console_path)},append=on",
        "-serial", "chardev:ser0",
    ]  # fmt: skip
    argv += _boot_args(launch)
    for i, drive in enumerate(launch.drives):
        argv += ["-drive", _drive_opt(drive, i)]
    for nic in launch.nics:
        argv += _nic_args(nic)
    if incoming:
        argv += ["-incoming", incoming]
    return argv


def _boot_args(launch: Launch) -> list[str]:
    if not launch.kernel:
        return ["-boot", "order=c"]
    argv = ["-kernel", launch.kernel]
    if launch.initrd:
        argv += ["-initrd", launch.initrd]
    if launch.append:
        argv += ["-append", launch.append]
    return argv


def _drive_opt(drive: Drive, i: int) -> str:
    opt = f"file={_opt(drive.path)},if=virtio,format={drive.format},id=disk{i}"
    return opt + (",readonly=on" if drive.readonly else "")


def _nic_args(nic: Nic) -> list[str]:
    netdev_id = f"n{nic.index}"
    if nic.driver == "user":
        netdev = f"user,id={netdev_id}" + _user_net_opts(nic)
    elif nic.driver == "bridge":
        if not nic.tap:
            raise InvalidInput(f"NIC {nic.index} is on a bridge network but has no tap device")
        netdev = f"tap,id={netdev_id},ifname={nic.tap},script=no,downscript=no"
    else:
        raise InvalidInput(
            f"NIC {nic.index}: the qemu driver has no network driver {nic.driver!r}",
            hint="use a network whose driver is 'user' or 'bridge'",
        )
    device = f"virtio-net-pci,netdev={netdev_id},mac={nic.mac}"
    return ["-netdev", netdev, "-device", device]


def _user_net_opts(nic: Nic) -> str:
    opts = ""
    if nic.network_address and nic.mask:
        try:
            net = ipaddress.IPv4Network(f"{nic.network_address}/{nic.mask}", strict=False)
        except ValueError as exc:
            raise InvalidInput(f"NIC {nic.index}: bad network address or mask: {exc}") from exc
        opts += f",net={net.network_address}/{net.prefixlen}"
        if nic.gateway:
            opts += f",host={nic.gateway}"
        if nic.ip:
            opts += f",dhcpstart={nic.ip}"
    guest = nic.ip or ""
    for guest_port in nic.ports:
        opts += f",hostfwd=tcp:127.0.0.1:0-{guest}:{guest_port}"
    address = metadata_address(nic) if nic.metadata_relay else None
    if address and nic.metadata_relay:
        opts += f",guestfwd=tcp:{address}:80-cmd:{_opt(nic.metadata_relay)}"
    return opts


def metadata_address(nic: Nic) -> str | None:
    """Where a user-networked guest reaches the metadata service: 169.254.169.254 when the
    network holds it (e.g. 169.254.0.0/16), else the network's highest host address that is
    neither the gateway, QEMU's DNS (.3) nor the guest's own; None without a network.

    libslirp refuses a guest forward to an address outside the user network (QEMU says
    "Conflicting/invalid host:port in guest forwarding rule"), so EC2's address itself is
    reachable only on a user network that contains it.
    """
    if not (nic.network_address and nic.mask):
        return None
    try:
        net = ipaddress.IPv4Network(f"{nic.network_address}/{nic.mask}", strict=False)
    except ValueError:
        return None
    ec2 = ipaddress.IPv4Address(METADATA_ADDRESS)
    if ec2 in net and ec2 not in (net.network_address, net.broadcast_address):
        return METADATA_ADDRESS
    taken = {nic.gateway, nic.ip, str(net.network_address + 3)}
    last = int(net.broadcast_address) - 1
    for value in range(last, max(last - 8, int(net.network_address)), -1):
        candidate = str(ipaddress.IPv4Address(value))
        if candidate not in taken:
            return candidate
    return None


def _opt(value: str) -> str:
    """A value inside a QEMU option list: commas are doubled."""
    return value.replace(",", ",,")


def usernet_forwards(info_usernet: str) -> dict[int, dict[int, int]]:
    """NIC index -> guest port -> host port, read from HMP `info usernet`, whose lines are

    Hub -1 (n0):
      Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
      TCP[HOST_FORWARD]  11       127.0.0.1 41325 192.168.150.100    80     0     0
    """
    found: dict[int, dict[int, int]] = {}
    nic: int | None = None
    for line in info_usernet.splitlines():
        hub = _HUB_LINE.match(line.strip())
        if hub:
            nic = int(hub.group(1))
            continue
        fields = line.split()
        if nic is not None and fields[:1] == ["TCP[HOST_FORWARD]"] and len(fields) >= 6:
            with contextlib.suppress(ValueError):
                found.setdefault(nic, {})[int(fields[5])] = int(fields[3])
    return found


def incoming_from_file(path: str) -> str:
    """The -incoming URI that restores a state saved with `exec:cat > path`."""
    return f"exec:cat {shlex.quote(path)}"


def launch_to_dict(launch: Launch) -> dict[str, Any]:
    """JSON-ready form of a Launch (for the run file)."""
    return asdict(launch)


def launch_from_dict(data: dict[str, Any]) -> Launch:
    """The Launch a run file recorded."""
    drives = tuple(Drive(**d) for d in data.get("drives", ()))
    nics = tuple(Nic(**{**n, "ports": tuple(n.get("ports", ()))}) for n in data.get("nics", ()))
    return Launch(**{**data, "drives": drives, "nics": nics})
