"""Images that follow a VM to an EC2-compatible endpoint that lacks them (a partner zone).

A template with no AMI whose first disk is a registered image can still run on such an
endpoint: the image is registered there from a signed download link of this zone
(`DiskSpec.url`), with its SHA-256 as the `stratus:sha256` tag, which a Stratus zone
verifies after the download (a mismatch ends the image in "failed"). The remote image is
named after the local one and its checksum, so the name is the mapping image -> AMI that
every later deploy finds again with DescribeImages, whichever zone process asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stratus.drivers.base import DiskSpec
from stratus.drivers.cloud_errors import CloudError, CloudTimeout
from stratus.model.errors import InvalidInput

__all__ = ["CHECKSUM_TAG", "ensure_image", "remote_image_name"]

CHECKSUM_TAG = "stratus:sha256"
_NAME_LIMIT = 64

Call = Callable[..., Awaitable[Any]]


def remote_image_name(disk: DiskSpec) -> str:
    """`<image name>-<first 12 hex of its sha256>`, at most 64 characters."""
    digest = _digest(disk)
    return f"{disk.image[: _NAME_LIMIT - 13]}-{digest[:12]}"


def _digest(disk: DiskSpec) -> str:
    digest = disk.checksum.removeprefix("sha256:")
    if len(digest) != 64 or not disk.url:
        raise InvalidInput(
            f"image {disk.image} cannot follow the VM to a cloud: it has no checksum or link",
            hint="give the cloud section an AMI, or wait until the image is READY",
        )
    return digest


async def ensure_image(
    call: Call, disk: DiskSpec, *, poll: float = 1.0, timeout: float = 600.0
) -> str:
    """The endpoint's AMI for `disk`: found by name, else registered from the link; waits
    until it is available (CloudTimeout after `timeout` s, CloudError when it failed)."""
    name = remote_image_name(disk)
    found = await _find(call, name) or await _register(call, disk, name)
    deadline = time.monotonic() + timeout
    while found["State"] != "available":
        if found["State"] in ("failed", "invalid", "deregistered", "error"):
            reason = found.get("StateReason", {}).get("Message") or found["State"]
            if found["State"] != "deregistered":  # free the name: a later deploy tries anew
                with contextlib.suppress(CloudError):
                    await call("deregister_image", ImageId=found["ImageId"])
            raise CloudError(
                f"the endpoint could not import image {disk.image} as {name}: {reason}",
                code="InvalidAMIID.Unavailable",
                failover=False,
                hint="check the image's checksum and that the endpoint can reach this zone",
            )
        if time.monotonic() > deadline:
            raise CloudTimeout(f"image {name} is still {found['State']} after {timeout:g} s")
        await asyncio.sleep(poll)
        found = await _find(call, name) or {"ImageId": found["ImageId"], "State": "deregistered"}
    return str(found["ImageId"])


async def _register(call: Call, disk: DiskSpec, name: str) -> dict[str, Any]:
    """Register the image from its link; when another deploy registered it meanwhile
    (InvalidAMIName.Duplicate), theirs is the one."""
    try:
        reply = await call(
            "register_image",
            Name=name,
            ImageLocation=disk.url,
            Description=f"Stratus image {disk.image} ({disk.checksum})",
            TagSpecifications=[
                {
                    "ResourceType": "image",
                    "Tags": [{"Key": CHECKSUM_TAG, "Value": _digest(disk)}],
                }
            ],
        )
    except CloudError as exc:
        if exc.code != "InvalidAMIName.Duplicate":
            raise
        found = await _find(call, name)
        if found is None:
            raise
        return found
    return {"ImageId": reply["ImageId"], "State": "pending"}


async def _find(call: Call, name: str) -> dict[str, Any] | None:
    reply = await call(
        "describe_images", Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
    )
    images = [i for i in reply.get("Images", []) if i.get("Name") == name]
    return images[0] if images else None
