"""What every driver implements: typed inputs and outputs, capabilities with reasons.

Drivers are floor 2: they know stratus.model only. One driver object serves every host
of its kind; the host it acts on is passed in each call as a `HostInfo`. The engine wraps
every call in a deadline, so a driver may block on its outside system but never forever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from stratus.model.errors import Unsupported

__all__ = [
    "BootSpec",
    "DeploySpec",
    "DiskSpec",
    "Driver",
    "HostDefaults",
    "HostInfo",
    "InstanceInfo",
    "InstanceState",
    "NicSpec",
    "ProbeResult",
]


@dataclass(frozen=True)
class HostInfo:
    """The host a call acts on, as the driver needs it (no store objects)."""

    id: int
    name: str
    options: dict[str, Any]  # driver options given at `host add` (latency, endpoint...)
    labels: dict[str, str]
    #: decrypted credentials (cloud keys...), filled by the engine for the driver only:
    #: never logged, never returned by the API (repr=False keeps them out of tracebacks)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DiskSpec:
    """One disk of an instance, resolved from a registered image by the engine."""

    index: int  # position in the template's DISK list: disk.<index> in the VM directory
    image_id: int
    image: str  # image name, for messages
    source: str  # the image's file (or rootfs directory) on the front-end
    format: str  # raw, qcow2, vmdk, vpc, vdi (disks); tar, dir (root filesystems); iso
    type: str  # OS, CDROM, DATABLOCK
    persistent: bool  # linked, not cloned: the VM writes to the image itself
    readonly: bool = False
    checksum: str = ""  # "sha256:<hex>" of the image file
    #: a signed link to download the image from this zone (for clouds that import it)
    url: str = ""


@dataclass(frozen=True)
class NicSpec:
    """One network interface, with the lease the engine took for it."""

    index: int  # ETH<index>
    network: str  # virtual network name
    driver: str  # "bridge" (a tap/veth on a Linux bridge) or "user" (QEMU user networking)
    mac: str
    ip: str | None = None  # IPv4 lease, None on Ethernet-only ranges
    ip6: str | None = None
    network_address: str | None = None  # e.g. 192.168.150.0
    mask: str | None = None  # e.g. 255.255.255.0
    gateway: str | None = None
    dns: str | None = None
    bridge: str | None = None  # bridge networks: the Linux bridge's name
    netns: str | None = None  # bridge networks: the namespace the bridge lives in
    ports: tuple[int, ...] = ()  # user networks: guest TCP ports forwarded to 127.0.0.1


@dataclass(frozen=True)
class BootSpec:
    """Direct kernel boot (the template's OS section); files are front-end paths."""

    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class DeploySpec:
    """Everything a hypervisor needs to start one instance."""

    request_id: str  # idempotency key: the same id never creates two instances
    vm_id: int
    name: str
    cpu: float  # fraction of physical CPUs
    vcpu: int
    memory: int  # MB
    template: dict[str, Any]  # the full template (DISK, NIC, CONTEXT, provider sections)
    checkpoint: str | None = None  # restore from this saved state instead of booting
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    boot: BootSpec | None = None
    #: files of the context CD-ROM (name -> content): context.sh, init.sh, FILES and the
    #: cloud-init NoCloud meta-data/user-data; None when the template has no CONTEXT
    context: dict[str, bytes] | None = None
    #: a cold migration's source host, whose VM directory the target must take over
    source: HostInfo | None = None
    #: on a catalogued cloud, the instance type the scheduler chose (cheapest that fits)
    #: when the template names none; "" elsewhere
    instance_type: str = ""


class InstanceState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # suspended in place
    OFF = "off"  # powered off (from inside the guest, or by poweroff)
    ERROR = "error"  # the hypervisor reports a failure


@dataclass(frozen=True)
class InstanceInfo:
    deploy_id: str  # the driver's own id of the instance
    state: InstanceState
    cpu_usage: float = 0.0  # physical CPUs in use
    memory_usage: int = 0  # MB in use
    address: str | None = None  # an address to reach it, when the driver knows one
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    """What a host probe measured."""

    cpu: float  # physical CPUs
    memory: int  # MB total
    free_memory: int  # MB free
    load: float = 0.0  # 1-minute load average
    attributes: dict[str, str] = field(default_factory=dict)  # HYPERVISOR, ARCH, ...
    instances: dict[str, InstanceInfo] = field(default_factory=dict)  # deploy_id -> info


@dataclass(frozen=True)
class HostDefaults:
    """What a driver derives from a new host's options: a cloud's capacity is the sum of
    its instance quotas, its labels say where and whose it is. The user's values win."""

    cpu: float
    memory: int  # MB
    labels: dict[str, str] = field(default_factory=dict)


class Driver(ABC):
    """A hypervisor (or cloud) driver and its host probe.

    `unsupported` maps an operation name to the reason the driver cannot do it; the
    engine refuses such operations before calling (`check_supported`).
    """

    name: ClassVar[str]
    unsupported: ClassVar[dict[str, str]] = {}

    def __init__(self, data_dir: Path) -> None:
        #: where the driver may keep its own state files (under the daemon's data dir)
        self.data_dir = data_dir

    def check_supported(self, operation: str) -> None:
        """Raise Unsupported, with the driver's reason, for an operation it cannot do."""
        reason = self.unsupported.get(operation)
        if reason is not None:
            raise Unsupported(f"the {self.name} driver cannot {operation}: {reason}")

    def host_defaults(self, options: Mapping[str, Any]) -> HostDefaults | None:
        """Capacity and labels implied by a new host's options (no I/O); None when the
        driver implies none (hypervisors: give the capacity)."""
        return None

    async def stage_image(self, host: HostInfo, disk: DiskSpec) -> str:
        """Copy an image to the host ahead of need (a partner zone imports it from
        `disk.url`); the host's id for it. Unsupported unless the driver does it."""
        raise Unsupported(f"the {self.name} driver does not stage images ahead of need")

    @abstractmethod
    async def probe(self, host: HostInfo) -> ProbeResult:
        """Measure the host and list its instances; HostUnreachable if it does not answer."""

    async def prepare(self, host: HostInfo, spec: DeploySpec) -> None:  # noqa: B027
        """Stage what the instance needs on the host before it boots (PROLOG)."""

    @abstractmethod
    async def deploy(self, host: HostInfo, spec: DeploySpec) -> InstanceInfo:
        """Start (or restore) an instance; idempotent on spec.request_id."""

    @abstractmethod
    async def shutdown(self, host: HostInfo, deploy_id: str, timeout: float) -> None:
        """Ask the guest to shut down; raise DriverTimeout if it is still up after `timeout`."""

    @abstractmethod
    async def destroy(self, host: HostInfo, deploy_id: str) -> None:
        """Hard power-off and remove the instance; an instance already gone is success."""

    @abstractmethod
    async def reboot(self, host: HostInfo, deploy_id: str, hard: bool) -> None:
        """Reboot through the guest, or reset it when `hard`."""

    @abstractmethod
    async def suspend(self, host: HostInfo, deploy_id: str) -> None:
        """Save the instance's memory state on the host and stop it."""

    @abstractmethod
    async def resume(self, host: HostInfo, deploy_id: str) -> InstanceInfo:
        """Restore a suspended instance."""

    @abstractmethod
    async def save(self, host: HostInfo, deploy_id: str) -> str:
        """Save the memory state for a stop or cold migration; returns the checkpoint."""

    @abstractmethod
    async def live_migrate(
        self, source: HostInfo, deploy_id: str, target: HostInfo
    ) -> InstanceInfo:
        """Move a running instance to `target` without stopping it."""

    @abstractmethod
    async def cleanup(
        self,
        host: HostInfo,
        vm_id: int,
        request_id: str,
        deploy_id: str | None,
        *,
        keep_disks: bool = False,
    ) -> None:
        """Remove whatever an instance or a half-made deploy left on the host (its
        process, taps, VM directory and disks); idempotent. `keep_disks` (stop, undeploy)
        keeps the VM directory with its disks and saved state for the next deploy."""

    async def console_log(self, host: HostInfo, deploy_id: str, max_bytes: int) -> bytes:
        """The last `max_bytes` of the instance's serial console (or container log)."""
        raise Unsupported(f"the {self.name} driver keeps no console log")

    async def save_disk(self, host: HostInfo, vm_id: int, disk_index: int, dest: str) -> None:
        """Copy disk `disk_index` of a VM (flattened) to `dest` on the front-end."""
        raise Unsupported(f"the {self.name} driver cannot save disks")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called when the daemon stops."""
