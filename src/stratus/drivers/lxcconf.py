"""What one container is made of, from its DeploySpec (names, root disk, NICs, context
archive, LXC configuration) and how LXC's answers read. Pure: lxc.py does the I/O.

What the config sets, and why:
- an overlay rootfs (`overlay:LOWER:UPPER`; LXC puts the workdir beside the upper dir)
  over the image cached on the host, so a deploy copies nothing;
- `/sbin/init` with the signals busybox init understands (SIGUSR2 powers off, SIGTERM
  reboots), so lxc-stop and lxc-stop -r reach the guest's own shutdown;
- a console pty whose output LXC copies to `<vm_dir>/console.log`;
- the context files bind-mounted read-only at /mnt/context, where the appliance reads
  context.sh;
- memory and CPU limits as cgroup v1 or v2 keys, whichever the host runs;
- one veth per NIC on its bridge, named from the VM id, with the lease's MAC, as eth<n>.
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from dataclasses import dataclass

from stratus.drivers.base import DeploySpec, DiskSpec, InstanceState, NicSpec
from stratus.model.errors import DriverError

__all__ = [
    "LXC_STATES",
    "ContainerPaths",
    "HostFacts",
    "as_int",
    "bridge_nics",
    "check_path",
    "container_name",
    "context_tar",
    "hostname_for",
    "lxc_failure",
    "render_config",
    "root_disk",
    "vm_id_of",
]

_CFS_PERIOD_US = 100_000
_HOSTNAME_BAD = re.compile(r"[^A-Za-z0-9-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_CONTAINER = re.compile(r"stratus-([0-9]+)-[A-Za-z0-9_.-]+")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
#: lxc-info states as instance states
LXC_STATES = {
    "RUNNING": InstanceState.RUNNING,
    "STARTING": InstanceState.RUNNING,
    "STOPPING": InstanceState.RUNNING,
    "THAWED": InstanceState.RUNNING,
    "FROZEN": InstanceState.PAUSED,
    "FREEZING": InstanceState.PAUSED,
    "STOPPED": InstanceState.OFF,
}
_LOG_ERROR = re.compile(r" ERROR +\S+ - \S+ - (.*)")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./@+,=~-]+")


def container_name(vm_id: int, request_id: str) -> str:
    """The container (deploy id) of one deploy request: `stratus-<vm>-<request>`.

    Derived from the request id, so a retried deploy finds its container, and prefixed by
    the VM id, so the VM directory can be found from the deploy id alone. (LXC names the
    container's cgroups after it too, adding a suffix when two lxcpaths clash.)
    """
    return f"stratus-{vm_id}-{_UNSAFE.sub('_', request_id)}"


def vm_id_of(deploy_id: str) -> int:
    """The VM id in a container name made by container_name (DriverError for others)."""
    match = _CONTAINER.fullmatch(deploy_id)
    if match is None:
        raise DriverError(f"{deploy_id!r} is not a container of the lxc driver")
    return int(match.group(1))


def check_path(path: str) -> str:
    """The path, if LXC's config can hold it: its syntax splits on whitespace and ':',
    and the start script nests quotes."""
    if not _PLAIN_PATH.fullmatch(path):
        raise DriverError(
            f"path {path!r} has characters LXC's configuration cannot hold (spaces, ':', "
            "quotes...); use a datastore path and host name of letters, digits and ._-/@+,="
        )
    return path


def bridge_nics(spec: DeploySpec) -> tuple[list[NicSpec], str | None]:
    """The NICs as veths on bridges, and the one namespace they share (None: the host's)."""
    for nic in spec.nics:
        if nic.driver == "user":
            raise DriverError(
                f"network {nic.network} uses QEMU user networking; containers need a bridge network"
            )
        if nic.driver != "bridge" or not nic.bridge:
            raise DriverError(
                f"network {nic.network} has no Linux bridge (driver {nic.driver!r}); "
                "give the network a BRIDGE to attach containers to"
            )
    namespaces = {nic.netns for nic in spec.nics}
    if len(namespaces) > 1:
        names = ", ".join(sorted(str(ns or "the host's") for ns in namespaces))
        raise DriverError(
            f"the NICs of VM {spec.vm_id} are in different network namespaces ({names}); "
            "a container's bridges must share one namespace"
        )
    return list(spec.nics), next(iter(namespaces), None)


def root_disk(spec: DeploySpec) -> DiskSpec:
    """The disk a container boots from: its one OS disk, a rootfs tarball or directory."""
    roots = [d for d in spec.disks if d.format in ("tar", "dir")]
    others = [d for d in spec.disks if d.format not in ("tar", "dir")]
    if others:
        disk = others[0]
        raise DriverError(
            f"disk {disk.index} ({disk.image}, format {disk.format}) cannot be attached to a "
            "container; containers take one root filesystem image (format tar or dir)"
        )
    if len(roots) != 1:
        raise DriverError(
            f"VM {spec.vm_id} has {len(roots)} root filesystem disks; a container needs "
            "exactly one DISK whose image has format tar or dir"
        )
    if roots[0].persistent:
        raise DriverError(
            f"image {roots[0].image} is persistent; the lxc driver runs containers on an "
            "overlay of a read-only image, so make the image non-persistent"
        )
    return roots[0]


def context_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of flat files (context file names carry no directories)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(files.items()):
            if "/" in name or name in ("", ".", ".."):
                raise DriverError(f"context file name {name!r} must be a plain file name")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class HostFacts:
    """What the config depends on about a host, read once per host entry."""

    version: str  # lxc-start --version
    cgroup2: bool  # /sys/fs/cgroup is cgroup2 only (else v1 controllers, maybe hybrid)
    common_conf: str | None  # the distribution's common.conf (seccomp, device rules)


@dataclass(frozen=True)
class ContainerPaths:
    """Host paths of one container."""

    rootfs: str  # the cached image: the overlay's lower layer
    vm_dir: str  # upper/, work/, context/, console.log
    veths: tuple[str, ...]  # host end of each NIC's veth, in NIC order


def hostname_for(name: str, vm_id: int) -> str:
    """A valid host name (RFC 1123 label) from the VM's name."""
    label = _HOSTNAME_BAD.sub("-", name).strip("-")[:63].strip("-")
    return label or f"vm-{vm_id}"


def _limits(spec: DeploySpec, facts: HostFacts) -> list[str]:
    lines: list[str] = []
    quota = int(spec.cpu * _CFS_PERIOD_US) if spec.cpu > 0 else 0
    if facts.cgroup2:
        if spec.memory > 0:
            lines.append(f"lxc.cgroup2.memory.max = {spec.memory * 1024 * 1024}")
        if quota:
            lines.append(f"lxc.cgroup2.cpu.max = {quota} {_CFS_PERIOD_US}")
    else:
        if spec.memory > 0:
            lines.append(f"lxc.cgroup.memory.limit_in_bytes = {spec.memory}M")
        if quota:
            lines.append(f"lxc.cgroup.cpu.cfs_period_us = {_CFS_PERIOD_US}")
            lines.append(f"lxc.cgroup.cpu.cfs_quota_us = {quota}")
    return lines


def _network(spec: DeploySpec, paths: ContainerPaths) -> list[str]:
    if not spec.nics:
        return ["lxc.net.0.type = empty"]  # loopback only, never LXC's default bridge
    lines: list[str] = []
    for i, (nic, veth) in enumerate(zip(spec.nics, paths.veths, strict=True)):
        if not _MAC.fullmatch(nic.mac):
            raise DriverError(f"NIC {nic.index} has MAC {nic.mac!r}, not a MAC address")
        lines += [
            f"lxc.net.{i}.type = veth",
            f"lxc.net.{i}.link = {nic.bridge}",
            f"lxc.net.{i}.veth.pair = {veth}",
            f"lxc.net.{i}.hwaddr = {nic.mac}",
            f"lxc.net.{i}.name = eth{nic.index}",
            f"lxc.net.{i}.flags = up",
        ]
    return lines


def render_config(spec: DeploySpec, paths: ContainerPaths, facts: HostFacts) -> str:
    """The container's `config` file."""
    vm = paths.vm_dir
    request = _UNSAFE.sub("_", spec.request_id)
    head = [f"# VM {spec.vm_id}, request {request}: written by Stratus"]
    if facts.common_conf:
        head.append(f"lxc.include = {facts.common_conf}")
    else:  # the capabilities common.conf would drop
        head.append("lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio")
        head.append("lxc.mount.auto = cgroup:mixed proc:mixed sys:mixed")
    body = [
        f"lxc.uts.name = {hostname_for(spec.name, spec.vm_id)}",
        f"lxc.rootfs.path = overlay:{paths.rootfs}:{vm}/upper",
        "lxc.init.cmd = /sbin/init",
        "lxc.autodev = 1",
        "lxc.signal.halt = SIGUSR2",
        "lxc.signal.reboot = SIGTERM",
        "lxc.tty.max = 0",
        "lxc.pty.max = 16",  # also gives the container a console LXC can log
        f"lxc.console.logfile = {vm}/console.log",
        "lxc.console.size = 1048576",
        f"lxc.mount.entry = {vm}/context mnt/context none bind,ro,create=dir 0 0",
    ]
    lines = head + body + _limits(spec, facts) + _network(spec, paths)
    return "\n".join(lines) + "\n"


def as_int(text: str) -> int:
    """A count printed by a host script; 0 when the script printed nothing usable."""
    return int(text) if text.isdigit() else 0


def lxc_failure(what: str, name: str, where: str, log: str) -> DriverError:
    """An error naming LXC's reason: the first ERROR lines of its log (the last ones are
    only "failed to start" boilerplate)."""
    errors = [m.group(1) for m in _LOG_ERROR.finditer(log)]
    reason = "; ".join(errors[:2]) or log.strip()[-300:] or "LXC logged no reason"
    return DriverError(f"{what} of container {name} failed on {where}: {reason}")
