"""RunInstances: the request -> a Stratus template -> engine.submit, then ownership.

There is one way to create VMs: the template goes through `engine.submit` like any
other. The instance type gives CPU, VCPU and MEMORY (catalogue); the AMI gives the DISK
(and OS KERNEL/INITRD when registered with them); the key pair and user data go into
CONTEXT for cloud-init, and every EC2 fact into the METADATA section the metadata
service serves. RunInstances calls of one user run one at a time, so the quota check
and a ClientToken's reservation cannot race.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.instances import end_vms, group_ids, reservation_body
from stratus.ec2api.protocol import Ec2Error, Params, invalid
from stratus.ec2api.tags import tag_specifications
from stratus.model.catalogue import Offering
from stratus.model.ec2ids import (
    InstanceMetadata,
    ami_id,
    image_id_of,
    instance_id,
    kernel_id,
    number_of,
    ramdisk_id,
)
from stratus.model.errors import InvalidInput, NotFound
from stratus.model.records import Image, ImageState, ImageType
from stratus.store import ec2 as store_ec2
from stratus.store import ec2_objects
from stratus.store import images as store_images
from stratus.store import users as store_users
from stratus.store.ec2 import InstanceQuery, Ownership

__all__ = ["build_template", "run_instances"]

MAX_USER_DATA = 16 * 1024  # bytes, as on EC2
MAX_COUNT = 1000
DEFAULT_TYPE = "m1.small"
_USABLE = (ImageState.READY, ImageState.USED)


@dataclass(frozen=True)
class RunRequest:
    """A checked RunInstances request."""

    image: int
    min_count: int
    max_count: int
    offering: Offering
    key_name: str | None
    groups: list[str]  # names
    group_ids: list[int]
    user_data: bytes
    tags: dict[str, str]
    client_token: str | None
    kernel: int | None
    ramdisk: int | None
    http_tokens: str  # MetadataOptions.HttpTokens: "" (the default), optional or required


@dataclass(frozen=True)
class Resolved:
    """What the request names, read from the store in one transaction."""

    image: Image
    kernel: Image | None
    ramdisk: Image | None
    root_device: str
    public_key: str
    groups: list[str]
    room: int  # instances the quota still allows


def _image_ref(params: Params, key: str, prefix: str) -> int | None:
    value = params.text(key, max_len=64)
    if not value:
        return None
    try:
        return number_of(prefix, value)
    except InvalidInput:
        raise invalid(key, value, f"Expected a {prefix}- id.") from None


def _parse(ctx: Ec2Context, params: Params) -> RunRequest:
    ami = params.required("ImageId", max_len=64)
    try:
        image = image_id_of(ami)
    except InvalidInput:
        raise Ec2Error("InvalidAMIID.Malformed", f'Invalid id: "{ami}"') from None
    low = params.number("MinCount", low=1, high=MAX_COUNT)
    high = params.number("MaxCount", low=1, high=MAX_COUNT)
    if low is None or high is None:
        raise Ec2Error("MissingParameter", "The request must contain MinCount and MaxCount")
    if low > high:
        raise invalid("MinCount", low, "MinCount must not be greater than MaxCount.")
    type_name = params.text("InstanceType", default=DEFAULT_TYPE, max_len=64) or DEFAULT_TYPE
    offering = ctx.config.instance_types.get(type_name)
    if offering is None:
        known = ", ".join(ctx.config.instance_types)
        raise invalid("InstanceType", type_name, f"Known types: {known}.")
    placement = params.sub("Placement")
    zone = placement.text("AvailabilityZone", max_len=64) if placement else None
    if zone and zone != ctx.config.zone:
        raise invalid("Placement.AvailabilityZone", zone, f"The only zone is {ctx.config.zone}.")
    if params.text("SubnetId"):
        raise Ec2Error("InvalidSubnetID.NotFound", "Stratus has no subnets: leave SubnetId out")
    encoded = params.text("UserData", max_len=4 * MAX_USER_DATA)
    try:
        user_data = base64.b64decode(encoded, validate=True) if encoded else b""
    except (binascii.Error, ValueError):
        raise invalid("UserData", "...", "Invalid BASE64 encoding of user data.") from None
    if len(user_data) > MAX_USER_DATA:
        raise invalid("UserData", "...", f"User data is limited to {MAX_USER_DATA} bytes.")
    group_ids = []
    for index, value in enumerate(params.texts("SecurityGroupId", max_len=64), start=1):
        try:
            group_ids.append(number_of("sg", value))
        except InvalidInput:
            raise invalid(f"SecurityGroupId.{index}", value, "Expected an sg- id.") from None
    token = params.text("ClientToken", max_len=64) or None
    options = params.sub("MetadataOptions")
    http_tokens = (options.text("HttpTokens", max_len=16) if options else None) or ""
    if http_tokens not in ("", "optional", "required"):
        raise invalid("MetadataOptions.HttpTokens", http_tokens, "Expected optional or required.")
    tags = tag_specifications(params, {"instance"}, frozenset({"volume", "network-interface"}))
    return RunRequest(
        image=image,
        min_count=low,
        max_count=high,
        offering=offering,
        key_name=params.text("KeyName", max_len=255) or None,
        groups=params.texts("SecurityGroup", max_len=255),
        group_ids=group_ids,
        user_data=user_data,
        tags=tags,
        client_token=token,
        kernel=_image_ref(params, "KernelId", "aki"),
        ramdisk=_image_ref(params, "RamdiskId", "ari"),
        http_tokens=http_tokens,
    )


def _usable(image: Image, what: str, code: str, shown: str) -> Image:
    if image.state in _USABLE:
        return image
    if image.state is ImageState.LOCKED:
        raise Ec2Error(code, f"The {what} '{shown}' is still pending (importing)")
    raise Ec2Error(code, f"The {what} '{shown}' is not available: {image.reason}")


def _boot_image(conn: Connection, number: int, kind: ImageType, key: str) -> Image:
    """A KERNEL or RAMDISK image named by KernelId/RamdiskId (or the AMI's)."""
    shown = (kernel_id if kind is ImageType.KERNEL else ramdisk_id)(number)
    try:
        image = store_images.find_image(conn, number)
    except NotFound:
        image = None
    if image is None or image.type is not kind:
        raise invalid(key, shown, f"No {kind.value} image has that id.")
    return _usable(image, key, "InvalidParameterValue", shown)


def _resolve(conn: Connection, user_id: int, request: RunRequest) -> Resolved:
    shown = ami_id(request.image)
    try:
        image = store_images.find_image(conn, request.image)
    except NotFound:
        image = None
    if image is None or image.type is not ImageType.OS:
        raise Ec2Error("InvalidAMIID.NotFound", f"The image id '[{shown}]' does not exist")
    _usable(image, "image id", "InvalidAMIID.Unavailable", shown)
    details = store_ec2.ec2_image_rows(conn, [image.id]).get(image.id)
    kernel_number = request.kernel or (details.kernel_id if details else None)
    ramdisk_number = request.ramdisk or (details.ramdisk_id if details else None)
    kernel = ramdisk = None
    if kernel_number is not None:
        kernel = _boot_image(conn, kernel_number, ImageType.KERNEL, "KernelId")
    if ramdisk_number is not None:
        ramdisk = _boot_image(conn, ramdisk_number, ImageType.RAMDISK, "RamdiskId")
    public_key = ""
    if request.key_name:
        pairs = ec2_objects.select_keypairs(conn, user_id, names=[request.key_name])
        if not pairs:
            raise Ec2Error(
                "InvalidKeyPair.NotFound", f"The key pair '{request.key_name}' does not exist"
            )
        public_key = pairs[0].public_key
    groups = list(request.groups)
    if groups:
        found = {g.name for g in ec2_objects.select_security_groups(conn, user_id, names=groups)}
        for name in groups:
            if name not in found:
                raise Ec2Error(
                    "InvalidGroup.NotFound", f"The security group '{name}' does not exist"
                )
    if request.group_ids:
        by_id = ec2_objects.select_security_groups(conn, user_id, ids=request.group_ids)
        found_ids = {g.id for g in by_id}
        for number in request.group_ids:
            if number not in found_ids:
                raise Ec2Error(
                    "InvalidGroup.NotFound", f"The security group 'sg-{number:017x}' does not exist"
                )
        groups += [g.name for g in by_id if g.name not in groups]
    return Resolved(
        image=image,
        kernel=kernel,
        ramdisk=ramdisk,
        root_device=details.root_device if details else "/dev/vda",
        public_key=public_key,
        groups=groups,
        room=_room(conn, user_id, request.offering),
    )


def _room(conn: Connection, user_id: int, offering: Offering) -> int:
    """How many instances of this type the user's quota still allows."""
    quota = store_users.user_quota(conn, user_id)
    count, cpu, memory = store_ec2.usage_of(conn, user_id)
    room = MAX_COUNT
    if quota.vms is not None:
        room = min(room, quota.vms - count)
    if quota.cpu is not None:
        room = min(room, math.floor((quota.cpu - cpu) / offering.vcpu + 1e-9))
    if quota.memory is not None:
        room = min(room, (quota.memory - memory) // offering.memory_mb)
    return max(room, 0)


def build_template(ctx: Ec2Context, request: RunRequest, found: Resolved) -> dict[str, Any]:
    """The Stratus template (JSON form) of one RunInstances request."""
    meta = InstanceMetadata(
        instance_type=request.offering.name,
        key_name=request.key_name or "",
        public_key=found.public_key,
        security_groups=tuple(found.groups),
        user_data=request.user_data,
        availability_zone=ctx.config.zone,
        ami_id=ami_id(found.image.id),
        http_tokens=request.http_tokens,
    )
    section = meta.to_section()
    context: dict[str, str] = {"NETWORK": "YES"}
    if found.public_key:
        context["SSH_PUBLIC_KEY"] = found.public_key
    if request.user_data.startswith(b"#!"):  # a script: cloud-init runs it once
        context["START_SCRIPT_BASE64"] = base64.b64encode(request.user_data).decode()
    template: dict[str, Any] = {
        "CPU": request.offering.vcpu,
        "VCPU": request.offering.vcpu,
        "MEMORY": request.offering.memory_mb,
        "DISK": {"IMAGE": found.image.name},
        "CONTEXT": context,
        "METADATA": section,
    }
    name = request.tags.get("Name")
    if name:
        template["NAME"] = name[:200]
    if ctx.config.network:
        template["NIC"] = {"NETWORK": ctx.config.network}
    if found.kernel is not None:
        boot = {
            "KERNEL": found.kernel.name,
            "KERNEL_CMD": f"console=ttyS0 root={found.root_device} rw",
        }
        section["KERNEL_ID"] = kernel_id(found.kernel.id)
        if found.ramdisk is not None:
            boot["INITRD"] = found.ramdisk.name
            section["RAMDISK_ID"] = ramdisk_id(found.ramdisk.id)
        template["OS"] = boot
    return template


async def _reservation(ctx: Ec2Context, vm_ids: list[int]) -> dict[str, Any]:
    """The RunInstances answer: the reservation of these instances."""

    def read(conn: Connection) -> list[dict[str, Any]]:
        query = InstanceQuery(visible_since=ctx.visible_since(), vm_ids=vm_ids)
        found = store_ec2.select_instances(conn, ctx.user_id, query)
        groups = group_ids(conn, ctx.user_id)
        return reservation_body(found, ctx.owner_id, ctx.config.zone, groups)

    reservations = await ctx.read(read)
    if not reservations:
        raise Ec2Error("InternalError", "the new instances vanished; describe them again", 500)
    return reservations[0]


async def run_instances(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    request = _parse(ctx, params)
    async with ctx.user_lock():
        if request.client_token:
            earlier = await ctx.read(
                store_ec2.reservation_of_token, ctx.user_id, request.client_token
            )
            if earlier:
                ctx.commit()
                return await _reservation(ctx, earlier)
        found = await ctx.read(_resolve, ctx.user_id, request)
        count = min(request.max_count, found.room)
        if count < request.min_count:
            raise Ec2Error(
                "InstanceLimitExceeded",
                f"Your quota allows for {found.room} more instance(s) of type "
                f"{request.offering.name}. You requested at least {request.min_count}.",
            )
        ctx.commit()
        template = build_template(ctx, request, found)
        result = await ctx.engine.submit(orjson.dumps(template).decode(), fmt="json", count=count)
        reservation = "r-" + secrets.token_hex(9)[:17]
        owners = [
            Ownership(
                vm_id=vm.id,
                instance_id=instance_id(vm.id),
                user_id=ctx.user_id,
                reservation_id=reservation,
                client_token=request.client_token,
                launch_index=index,
                instance_type=request.offering.name,
            )
            for index, vm in enumerate(result.vms)
        ]
        try:
            await ctx.write(store_ec2.insert_instances, ctx.user_id, owners, request.tags)
        except BaseException:  # no half-made instances: end what was created
            await asyncio.shield(end_vms(ctx, [vm.id for vm in result.vms]))
            raise
        return await _reservation(ctx, [vm.id for vm in result.vms])
