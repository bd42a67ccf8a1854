"""Pydantic schemas of the REST API: request bodies (validated) and responses (documented).

Responses are built as plain dicts by `views.py`; the models here give the OpenAPI
document its shapes and keep both honest through a test.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic.json_schema import WithJsonSchema

from stratus.model.credentials import (
    MAX_SECRET_VALUE,
    MAX_SECRETS,
    SECRET_KEY_PATTERN,
)
from stratus.model.errors import InvalidInput
from stratus.model.lifecycle import Action, RecoverMode, VmState
from stratus.model.records import MAX_HOST_CPU, MAX_HOST_MEMORY, HostState, ImageState, ImageType
from stratus.model.units import parse_size_mb

__all__ = [
    "MAX_ID",
    "AddressIn",
    "AddressOut",
    "AddressRangeOut",
    "CredentialsIn",
    "ErrorBody",
    "ErrorOut",
    "EventOut",
    "EventPage",
    "HealthOut",
    "HistoryOut",
    "HostDetail",
    "HostIn",
    "HostOperation",
    "HostOut",
    "HostPage",
    "ImageDetail",
    "ImageIn",
    "ImageOperation",
    "ImageOut",
    "ImagePage",
    "LeaseOut",
    "OperationIn",
    "StateChangeOut",
    "SubmitIn",
    "SubmitOut",
    "VmDetail",
    "VmOut",
    "VmPage",
    "VmRef",
    "VnetCreated",
    "VnetDetail",
    "VnetIn",
    "VnetOut",
    "VnetPage",
]

#: Largest id a database column holds (signed 64-bit); larger ones cannot exist.
MAX_ID = 2**63 - 1
MAX_TEMPLATE = 1024 * 1024  # characters of a template (1 MB)
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([BbKkMmGgTt]|[KkMmGgTt][Ii]?[Bb])?\s*$"

HostName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
OptionKey = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
OptionValue = (
    Annotated[str, StringConstraints(max_length=4096)]
    | bool
    | Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
    | Annotated[float, Field(allow_inf_nan=False)]
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -----------------------------------------------------------------------------
class SubmitIn(_Strict):
    """A VM template to submit, `count` times."""

    template: str = Field(max_length=MAX_TEMPLATE, description="the template text (max 1 MB)")
    format: Literal["auto", "classic", "yaml", "json"] = "auto"
    hold: bool = Field(default=False, description="keep the VMs out of scheduling until released")
    count: int = Field(default=1, ge=1, le=1000, description="how many VMs to create")


class OperationIn(_Strict):
    """Arguments of a VM operation; each operation reads the ones it needs."""

    host: HostName | None = Field(default=None, description="target host (deploy, migrate)")
    hard: bool = Field(default=False, description="skip the graceful step (terminate, poweroff...)")
    live: bool = Field(default=False, description="live migration (migrate)")
    mode: RecoverMode | None = Field(default=None, description="recover mode (default: retry)")


def _memory_mb(value: object) -> int:
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        raise ValueError("memory must be a number of MB or a size like 16G")
    try:
        mb = parse_size_mb(value, what="memory")
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc
    if not 1 <= mb <= MAX_HOST_MEMORY:
        raise ValueError(f"memory must be between 1 MB and {MAX_HOST_MEMORY} MB")
    return mb


MemorySize = Annotated[
    int,
    BeforeValidator(_memory_mb),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_HOST_MEMORY},
                {"type": "string", "pattern": SIZE_PATTERN, "maxLength": 32},
            ],
            "description": "MB, or a size with a unit like 512M, 16G, 1T",
        }
    ),
]


def _not_all_digits(name: str) -> str:
    if name.isdigit():  # `GET /hosts/{ref}` reads a numeric ref as an id
        raise ValueError("a host name must not be all digits (it would read as a host id)")
    return name


SecretKey = Annotated[str, StringConstraints(pattern=SECRET_KEY_PATTERN)]
SecretValue = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SECRET_VALUE)]
#: Write-only: validation messages name keys, never values, and views never show them.
Secrets = Annotated[
    dict[SecretKey, SecretValue],
    Field(
        max_length=MAX_SECRETS,
        description="credentials for the driver (cloud keys...): stored encrypted, never shown",
        json_schema_extra={"writeOnly": True},
    ),
]


class CredentialsIn(_Strict):
    """A host's new credentials: they replace the old ones ({} removes them)."""

    secrets: Secrets


class HostIn(_Strict):
    """A host to add to the pool."""

    name: Annotated[HostName, AfterValidator(_not_all_digits)]
    driver: str = Field(min_length=1, max_length=64, description="driver name, e.g. dummy")
    cpu: float | None = Field(
        default=None,
        gt=0,
        le=MAX_HOST_CPU,
        allow_inf_nan=False,
        description="physical CPUs (a cloud driver derives it from the capacity option)",
    )
    memory: MemorySize | None = None
    labels: dict[LabelKey, ShortText] = Field(
        default_factory=dict, max_length=256, description="KEY=VALUE labels (keys upper-cased)"
    )
    options: dict[OptionKey, OptionValue] = Field(
        default_factory=dict, max_length=256, description="driver options (no credentials)"
    )
    secrets: Secrets = Field(default_factory=dict)


class HostOperation(StrEnum):
    ENABLE = "enable"
    DISABLE = "disable"
    OFFLINE = "offline"


# -- responses ----------------------------------------------------------------------------
class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str


class ErrorBody(BaseModel):
    """The error; extra fields carry details (`state`, `allowed`, `errors`, `line`...)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="the error class, e.g. IllegalOperation")
    message: str
    hint: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class VmOut(BaseModel):
    id: int
    name: str
    state: VmState
    action: Action | None
    failed_state: VmState | None
    reason: str
    host: str | None = Field(description="name of the host it occupies")
    host_id: int | None
    cpu: float
    vcpu: int
    memory: int = Field(description="MB")
    user_priority: int
    requirements: str
    rank: str
    deploy_id: str | None
    info: dict[str, Any] = Field(
        default_factory=dict,
        description="what the driver and guest reported: address, forwarded ports, ready",
    )
    resched: bool
    created: datetime
    updated: datetime
    version: int


class SubmitOut(BaseModel):
    vms: list[VmOut]
    warnings: list[str]


class VmPage(BaseModel):
    items: list[VmOut]
    next: int | None = Field(description="pass as `after` for the next page; null at the end")


class HistoryOut(BaseModel):
    seq: int
    host: str
    start: datetime
    end: datetime | None
    reason: str
    end_reason: str


class StateChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    reason: str
    time: datetime


class VmDetail(VmOut):
    template: dict[str, Any]
    history: list[HistoryOut]
    events: list[StateChangeOut] = Field(description="the last 50 state changes, oldest first")
    allowed_operations: list[str]


class _HostBase(BaseModel):
    id: int
    name: str
    driver: str
    state: HostState
    reason: str
    cpu: float
    memory: int = Field(description="MB")
    used_cpu: float
    used_memory: int
    free_cpu: float
    free_memory: int
    labels: dict[str, str]
    options: dict[str, Any] = Field(description="driver options; secret-looking values masked")
    credentials: Literal["stored"] | None = Field(
        description='"stored" when the host has credentials (never shown), else null'
    )
    monitoring: dict[str, Any]
    orphans: list[str] = Field(description="instances on it that Stratus did not make")
    last_monitored: datetime | None
    created: datetime
    version: int


class HostOut(_HostBase):
    vms: int = Field(description="number of VMs placed on it")


class HostPage(BaseModel):
    items: list[HostOut]
    next: int | None


class VmRef(BaseModel):
    id: int
    name: str
    state: VmState


class HostDetail(_HostBase):
    vms: list[VmRef] = Field(description="the VMs placed on it")
    events: list[StateChangeOut] = Field(description="the last 50 state changes, oldest first")


class EventOut(StateChangeOut):
    id: int
    object_type: str
    object_id: int


class EventPage(BaseModel):
    items: list[EventOut]
    next: int | None


# -- images -------------------------------------------------------------------------------
ImageFormat = Literal["raw", "qcow2", "vmdk", "vpc", "vdi"]
MAX_SOURCE = 4096  # characters of an image path or URL


def _not_an_id(name: str) -> str:
    if name.isdigit():  # `GET /images/{ref}` reads a numeric ref as an id
        raise ValueError("an image name must not be all digits (it would read as an image id)")
    return name


class ImageIn(_Strict):
    """An image to register: a path on the daemon's machine or an http(s) URL (one of them)."""

    name: Annotated[HostName, AfterValidator(_not_an_id)]
    path: str | None = Field(
        default=None, max_length=MAX_SOURCE, description="absolute path on the daemon's machine"
    )
    url: str | None = Field(default=None, max_length=MAX_SOURCE, description="http(s) URL")
    type: ImageType = ImageType.OS
    persistent: bool = Field(default=False, description="VMs write to the image itself")
    format: ImageFormat | None = Field(
        default=None, description="convert a disk image to this format on import"
    )
    description: ShortText = ""


class ImageOperation(StrEnum):
    ENABLE = "enable"
    DISABLE = "disable"
    PRESTAGE = "prestage"  # copy it to partner zones ahead of need
    ON_DEMAND = "on-demand"  # copy it to a zone when a VM there needs it (the default)


class ImageOut(BaseModel):
    id: int
    name: str
    type: ImageType
    state: ImageState = Field(description="USED: READY and used by VMs")
    persistent: bool
    prestage: bool = Field(description="copied to partner zones ahead of need")
    format: str = Field(
        description='raw qcow2 vmdk vpc vdi tar dir iso kernel ramdisk file ("" while LOCKED)'
    )
    size: int = Field(description="bytes: a disk's virtual size, else the file's size")
    actual_size: int = Field(description="bytes it takes in the datastore")
    checksum: str = Field(description='"sha256:<hex>" of the stored file, once imported')
    path: str = Field(description="its file in the datastore, once imported")
    source: str = Field(description="where it was imported from (a URL without credentials)")
    datastore: str
    progress: float = Field(description="0..1 while LOCKED")
    reason: str = Field(description="the import's phase, its error, or who disabled it")
    description: str
    vms: list[int] = Field(description="ids of the VMs using it")
    created: datetime
    updated: datetime
    version: int


class ImagePage(BaseModel):
    items: list[ImageOut]
    next: int | None


class ImageDetail(ImageOut):
    events: list[StateChangeOut] = Field(description="the last 50 state changes, oldest first")


class VmLogOut(BaseModel):
    """The end of a VM's console log."""

    vm_id: int
    log: str


# -- virtual networks ---------------------------------------------------------------------
class VnetIn(_Strict):
    """A network template (NAME, VN_MAD or BRIDGE, NETWORK_ADDRESS/MASK, AR = [...])."""

    template: str = Field(max_length=MAX_TEMPLATE, description="the template text (max 1 MB)")
    format: Literal["auto", "classic", "yaml", "json"] = "auto"


class AddressIn(_Strict):
    """One address of a network."""

    address: str = Field(
        min_length=1, max_length=64, description="an IPv4, IPv6 or MAC address of the network"
    )


class AddressRangeOut(BaseModel):
    id: int = Field(description="position in the template: AR 0, AR 1...")
    type: Literal["IP4", "IP6", "IP4_6", "ETHER"]
    size: int
    first_mac: str
    last_mac: str
    first_ip: str | None
    last_ip: str | None
    global_prefix: str | None = Field(description="IPv6 /64 (IP6, IP4_6 ranges)")
    ula_prefix: str | None


class VnetOut(BaseModel):
    id: int
    name: str
    driver: Literal["bridge", "user"]
    bridge: str | None
    netns: str | None
    network_address: str | None
    network_mask: str | None
    gateway: str | None
    dns: str | None
    mac_prefix: str
    guest_ports: list[int] = Field(description="user networks: TCP ports forwarded to 127.0.0.1")
    description: str
    ranges: list[AddressRangeOut]
    size: int = Field(description="addresses in all ranges")
    used: int = Field(description="addresses leased to VMs")
    held: int = Field(description="addresses on hold")
    free: int
    created: datetime
    version: int


class VnetCreated(VnetOut):
    warnings: list[str]


class VnetPage(BaseModel):
    items: list[VnetOut]
    next: int | None


class LeaseOut(BaseModel):
    ar: int
    offset: int
    mac: str
    ip: str | None
    ip6: str | None
    state: Literal["used", "held"]
    vm_id: int | None
    nic_index: int | None
    created: datetime


class VnetDetail(VnetOut):
    leases: list[LeaseOut] = Field(description="used and held addresses, by range and offset")


class AddressOut(BaseModel):
    """An address after hold (state held) or release (state free)."""

    network: str
    mac: str
    ip: str | None
    ip6: str | None
    state: Literal["held", "free"]


class DiskSaveAsIn(_Strict):
    """Save a VM's disk as a new image."""

    disk: int = Field(ge=0, le=64, description="the disk's position in the template (0 first)")
    name: Annotated[HostName, AfterValidator(_not_an_id)]
