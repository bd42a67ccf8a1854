"""EC2-style names of Stratus objects, shared by the EC2 Query API and the metadata service.

A VM is instance `i-<17 hex digits of its id>`, an image `ami-<8 hex digits>`; the
mapping is fixed, so no table is needed and an id reads back without a lookup. A VM's
EC2-only facts (instance type, key pair, user data...) travel in its template's
`METADATA` section, which both the API that writes it and the metadata service that
serves it read through `InstanceMetadata`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from stratus.model.errors import InvalidInput
from stratus.model.lifecycle import Action, VmState

__all__ = [
    "RESOURCE_TYPES",
    "InstanceMetadata",
    "allocation_id",
    "ami_id",
    "association_id",
    "ec2_state",
    "group_id",
    "image_id_of",
    "instance_id",
    "kernel_id",
    "key_pair_id",
    "number_of",
    "ramdisk_id",
    "resource_type",
    "vm_id_of",
]

_INSTANCE = re.compile(r"i-([0-9a-f]{8}|[0-9a-f]{17})")
_IMAGE = re.compile(r"ami-([0-9a-f]{8}|[0-9a-f]{17})")
_HTTP_TOKENS = ("", "optional", "required")


def instance_id(vm_id: int) -> str:
    return f"i-{vm_id:017x}"


def ami_id(image_id: int) -> str:
    return f"ami-{image_id:08x}"


def vm_id_of(instance: str) -> int:
    """The VM id of an instance id; InvalidInput naming the id when it is not one of ours."""
    match = _INSTANCE.fullmatch(instance)
    if match is None:
        raise InvalidInput(f"{instance!r} is not an instance id (i- and 8 or 17 hex digits)")
    return int(match.group(1), 16)


def image_id_of(ami: str) -> int:
    """The image id of an AMI id; InvalidInput naming the id when it is not one of ours."""
    match = _IMAGE.fullmatch(ami)
    if match is None:
        raise InvalidInput(f"{ami!r} is not an image id (ami- and 8 or 17 hex digits)")
    return int(match.group(1), 16)


def kernel_id(image_id: int) -> str:
    """The EC2 name of a KERNEL image (RegisterImage's KernelId)."""
    return f"aki-{image_id:08x}"


def ramdisk_id(image_id: int) -> str:
    """The EC2 name of a RAMDISK image (RegisterImage's RamdiskId)."""
    return f"ari-{image_id:08x}"


def group_id(number: int) -> str:
    return f"sg-{number:017x}"


def key_pair_id(number: int) -> str:
    return f"key-{number:017x}"


def allocation_id(number: int) -> str:
    return f"eipalloc-{number:017x}"


def association_id(number: int) -> str:
    """An address's association: one per address at a time, so named after the address."""
    return f"eipassoc-{number:017x}"


#: id prefix -> EC2 resource type (DescribeTags' resource-type)
RESOURCE_TYPES = {
    "i": "instance",
    "ami": "image",
    "aki": "image",
    "ari": "image",
    "sg": "security-group",
    "eipalloc": "elastic-ip",
    "key": "key-pair",
}
_NUMBERED = re.compile(r"([a-z]+)-([0-9a-f]{8}|[0-9a-f]{17})")


def number_of(prefix: str, text: str) -> int:
    """The number in an id of the `prefix` kind ("sg", "key"...); InvalidInput naming it."""
    match = _NUMBERED.fullmatch(text)
    if match is None or match.group(1) != prefix:
        raise InvalidInput(f"{text!r} is not a valid {prefix}- id ({prefix}- and hex digits)")
    return int(match.group(2), 16)


def resource_type(resource_id: str) -> str | None:
    """The EC2 resource type of an id ("instance", "image"...), None when not ours."""
    match = _NUMBERED.fullmatch(resource_id)
    return RESOURCE_TYPES.get(match.group(1)) if match else None


# EC2 instance states: (code, name). Transient Stratus states map to where they lead.
_PENDING = (0, "pending")
_RUNNING = (16, "running")
_SHUTTING_DOWN = (32, "shutting-down")
_TERMINATED = (48, "terminated")
_STOPPING = (64, "stopping")
_STOPPED = (80, "stopped")

_STOPPING_ACTIONS = {
    Action.POWEROFF, Action.POWEROFF_HARD, Action.UNDEPLOY, Action.STOP, Action.SUSPEND
}  # fmt: skip


def ec2_state(state: VmState, action: str | None = None) -> tuple[int, str]:
    """The EC2 instance state (code, name) of a VM in `state` doing `action`."""
    if state in (VmState.PENDING, VmState.HOLD, VmState.PROLOG, VmState.BOOT):
        return _PENDING
    if state in (VmState.RUNNING, VmState.MIGRATING, VmState.UNKNOWN):
        return _RUNNING
    if state in (VmState.SHUTTING_DOWN, VmState.EPILOG, VmState.SAVING):
        if action in _STOPPING_ACTIONS:
            return _STOPPING
        return _SHUTTING_DOWN
    if state in (
        VmState.POWEROFF, VmState.STOPPED, VmState.UNDEPLOYED, VmState.SUSPENDED, VmState.FAILED
    ):  # fmt: skip
        return _STOPPED
    return _TERMINATED  # DONE


@dataclass(frozen=True)
class InstanceMetadata:
    """The EC2 facts of a VM, kept in its template's METADATA section (all optional).

    Keys there: INSTANCE_TYPE, KEY_NAME, PUBLIC_KEY (OpenSSH), SECURITY_GROUPS
    (comma-separated names), USER_DATA (base64), AVAILABILITY_ZONE, AMI_ID, and
    HTTP_TOKENS ("optional", the default: IMDSv1 and v2; "required": IMDSv2 only).
    """

    instance_type: str = ""
    key_name: str = ""
    public_key: str = ""
    security_groups: tuple[str, ...] = ()
    user_data: bytes = b""
    availability_zone: str = ""
    ami_id: str = ""
    http_tokens: str = ""  # "" (= optional), "optional" or "required"

    @property
    def tokens_required(self) -> bool:
        """Whether the metadata service answers only requests with an IMDSv2 token."""
        return self.http_tokens == "required"

    @classmethod
    def from_section(cls, section: Mapping[str, str] | None) -> InstanceMetadata:
        """Read a METADATA section; InvalidInput when USER_DATA is not base64."""
        if not section:
            return cls()
        encoded = section.get("USER_DATA", "")
        try:
            user_data = base64.b64decode(encoded, validate=True) if encoded else b""
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("METADATA USER_DATA is not base64", hint="encode it") from exc
        groups = section.get("SECURITY_GROUPS", "")
        http_tokens = section.get("HTTP_TOKENS", "").strip().lower()
        if http_tokens not in _HTTP_TOKENS:
            raise InvalidInput(
                f"METADATA HTTP_TOKENS = {section['HTTP_TOKENS']!r} is not valid",
                hint='use "optional" (IMDSv1 and v2) or "required" (IMDSv2 only)',
            )
        return cls(
            instance_type=section.get("INSTANCE_TYPE", ""),
            key_name=section.get("KEY_NAME", ""),
            public_key=section.get("PUBLIC_KEY", ""),
            security_groups=tuple(g.strip() for g in groups.split(",") if g.strip()),
            user_data=user_data,
            availability_zone=section.get("AVAILABILITY_ZONE", ""),
            ami_id=section.get("AMI_ID", ""),
            http_tokens=http_tokens,
        )

    def to_section(self) -> dict[str, str]:
        """The METADATA section that reads back as this (empty values left out)."""
        section = {
            "INSTANCE_TYPE": self.instance_type,
            "KEY_NAME": self.key_name,
            "PUBLIC_KEY": self.public_key,
            "SECURITY_GROUPS": ",".join(self.security_groups),
            "USER_DATA": base64.b64encode(self.user_data).decode() if self.user_data else "",
            "AVAILABILITY_ZONE": self.availability_zone,
            "AMI_ID": self.ami_id,
            "HTTP_TOKENS": self.http_tokens,
        }
        return {key: value for key, value in section.items() if value}
