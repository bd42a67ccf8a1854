"""Typed records of the domain objects as the store keeps them and the API shows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from stratus.model.lifecycle import Action, VmState
from stratus.model.vnet import VnetSpec

__all__ = [
    "MAX_HOST_CPU",
    "MAX_HOST_MEMORY",
    "Event",
    "HistoryRecord",
    "Host",
    "HostState",
    "HostUsage",
    "Image",
    "ImageState",
    "ImageType",
    "Lease",
    "Vm",
    "Vnet",
]


class HostState(StrEnum):
    INIT = "INIT"  # added, not probed yet; not schedulable
    MONITORED = "MONITORED"  # answered its last probe; schedulable
    ERROR = "ERROR"  # stopped answering; its VMs are UNKNOWN
    DISABLED = "DISABLED"  # still monitored, takes no new VMs
    OFFLINE = "OFFLINE"  # not monitored, takes no new VMs


#: the largest host capacity Stratus takes (what one host entry, or one cloud account's
#: quotas together, could offer, far beyond real machines)
MAX_HOST_CPU = 1_000_000.0
MAX_HOST_MEMORY = 1024**3  # MB (1 PiB)


@dataclass(frozen=True)
class HostUsage:
    """Capacity allocated to the VMs placed on a host (derived from the VM table)."""

    cpu: float = 0.0  # physical CPUs allocated (sum of the VMs' CPU)
    memory: int = 0  # MB allocated
    vms: int = 0  # VMs placed on it (any state that holds capacity)


@dataclass(frozen=True)
class Host:
    id: int
    name: str
    driver: str  # registry name of the driver, e.g. "dummy"
    state: HostState
    cpu: float  # total physical CPUs offered to VMs
    memory: int  # total MB offered to VMs
    labels: dict[str, str]  # free KEY=VALUE labels: COUNTRY, PUBLIC_CLOUD, PRIORITY, PRICE...
    options: dict[str, Any]  # driver options (latency, endpoint...): never credentials
    reason: str  # why it is in its state (the last probe error, who disabled it)
    monitoring: dict[str, Any]  # last probe's figures (HYPERVISOR, load, free memory...)
    last_monitored: datetime | None
    created: datetime
    version: int
    usage: HostUsage = field(default_factory=HostUsage)
    #: the credentials as the engine sealed them ("" when none): only the engine opens
    #: them, for the driver; views show whether there are any, never this text
    sealed_secrets: str = field(default="", repr=False)

    @property
    def has_secrets(self) -> bool:
        return bool(self.sealed_secrets)


@dataclass(frozen=True)
class Vm:
    id: int
    name: str
    state: VmState
    action: Action | None  # the engine's work in progress (transient states, reboot)
    failed_state: VmState | None  # where it failed, when state is FAILED
    reason: str  # why it is in its state (scheduler reason, error, who asked)
    host_id: int | None  # the host it occupies
    target_host_id: int | None  # where deploy/migrate is taking it
    cpu: float  # fraction of physical CPUs
    vcpu: int
    memory: int  # MB
    user_priority: int
    requirements: str  # SCHED_REQUIREMENTS, "" when none
    rank: str  # SCHED_RANK, "" when none
    template: dict[str, Any]  # the parsed template, as its JSON form
    deploy_id: str | None  # the driver's instance id
    op_seq: int  # bumped by every accepted operation: makes driver request ids unique
    resched: bool  # the scheduler should move it to a better host
    created: datetime
    updated: datetime
    version: int
    host_name: str | None = None  # filled by reads that join hosts
    checkpoint: str | None = None  # saved memory state of a STOPPED VM (driver's reference)
    info: dict[str, Any] = field(default_factory=dict)  # the driver's report: address, ports

    def request_id(self) -> str:
        """Idempotency key for the driver call of the current operation."""
        return f"vm-{self.id}-{self.op_seq}"


@dataclass(frozen=True)
class HistoryRecord:
    """One placement of a VM on a host: the basis of accounting."""

    vm_id: int
    seq: int  # 0, 1, 2... per VM
    host_id: int
    host_name: str
    start: datetime
    end: datetime | None
    reason: str  # why it was placed there
    end_reason: str  # why it left ("" while open)


@dataclass(frozen=True)
class Event:
    """One state change of an object."""

    id: int
    object_type: str  # "vm" or "host"
    object_id: int
    from_state: str
    to_state: str
    reason: str
    time: datetime


# images


class ImageType(StrEnum):
    """What an image is for; the import checks that its content matches."""

    OS = "OS"  # a bootable disk, or a root filesystem (tar archive, directory) for containers
    CDROM = "CDROM"  # an ISO9660 image, attached read-only
    DATABLOCK = "DATABLOCK"  # a data disk
    KERNEL = "KERNEL"  # a Linux kernel (bzImage) for direct boot
    RAMDISK = "RAMDISK"  # an initrd (cpio archive, maybe compressed) for direct boot
    CONTEXT = "CONTEXT"  # a file for the context CD-ROM (CONTEXT = [ FILES = ... ])


class ImageState(StrEnum):
    LOCKED = "LOCKED"  # being imported (copied or downloaded, checked, converted)
    READY = "READY"  # in the datastore, usable by VMs
    USED = "USED"  # READY and used by VMs: derived from image_uses, never stored
    ERROR = "ERROR"  # the import failed; the reason says why and nothing is left on disk
    DISABLED = "DISABLED"  # kept, but no new VM may use it


@dataclass(frozen=True)
class Image:
    """A registered image and the VMs using it."""

    id: int
    name: str
    type: ImageType
    state: ImageState  # USED when READY with users (see `vms`)
    persistent: bool  # VMs write to the image itself (one VM at a time), not to a clone
    format: str  # raw qcow2 vmdk vpc vdi, tar dir, iso, kernel, ramdisk, file ("" at first)
    size: int  # bytes: the virtual size of a disk, else the file's (or tree's) size
    actual_size: int  # bytes it takes in the datastore (sparse files take less)
    checksum: str  # "sha256:<hex>" of the stored file (of a manifest for a directory)
    path: str  # its file (or directory) in the datastore; "" until imported
    source: str  # where it was imported from: a path, or a URL without credentials
    datastore: str
    progress: float  # 0..1 while LOCKED
    reason: str  # why it is in its state: the import's phase, its error, who disabled it
    description: str
    created: datetime
    updated: datetime
    version: int
    vms: tuple[int, ...] = ()  # ids of the VMs using it, ascending
    prestage: bool = False  # copied to partner zones ahead of need (else on demand)


# virtual networks


@dataclass(frozen=True)
class Vnet:
    """A virtual network: its validated template, and how many of its addresses are taken."""

    id: int
    name: str
    driver: str  # "bridge" or "user"
    bridge: str | None
    netns: str | None
    spec: VnetSpec  # ranges, mask, gateway, DNS, MAC prefix, guest ports
    created: datetime
    version: int
    used: int = 0  # addresses leased to VMs' NICs
    held: int = 0  # addresses on hold (kept from automatic allocation)

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def free(self) -> int:
        return self.spec.size - self.used - self.held


@dataclass(frozen=True)
class Lease:
    """An address of a network in use by a VM's NIC, or on hold; with what the NIC needs."""

    vnet_id: int
    network: str  # the network's name
    ar_id: int  # the address range
    offset: int  # the address's index in its range
    mac: str
    ip: str | None  # None in Ethernet-only and IPv6-only ranges
    ip6: str | None
    vm_id: int | None  # None when on hold
    nic_index: int | None  # the VM's NIC (ETH<index>)
    held: bool
    created: datetime
    driver: str  # "bridge" or "user"
    bridge: str | None
    netns: str | None
    network_address: str | None
    mask: str | None  # dotted
    gateway: str | None
    dns: str | None  # space-separated
    ports: tuple[int, ...] = ()  # user networks: guest TCP ports forwarded from 127.0.0.1
