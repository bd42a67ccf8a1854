"""DescribeImages, RegisterImage, DeregisterImage over Stratus's images.

Every READY OS image is an AMI anyone may run (`ami-<8 hex of its id>`), KERNEL and
RAMDISK images are aki-/ari-. RegisterImage imports from an http(s) URL, or a local file
under a configured `--ec2-import-dir`, through `engine.images.register`; a tag
`stratus:sha256` = <64 hex> makes the import verify the content's SHA-256. Images
registered here belong to the caller (Owner self, DeregisterImage); the others to the
Stratus admin (owner alias "stratus").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.filters import parse_filters, tag_items
from stratus.ec2api.protocol import Ec2Error, Params, decode_token, encode_token, invalid
from stratus.ec2api.tags import tag_specifications
from stratus.model.ec2ids import ami_id, kernel_id, number_of, ramdisk_id
from stratus.model.errors import Conflict, InvalidInput, NotFound
from stratus.model.records import Image, ImageState, ImageType
from stratus.store import ec2 as store_ec2
from stratus.store import images as store_images
from stratus.store.ec2 import Ec2Image

__all__ = ["CHECKSUM_TAG", "deregister_image", "describe_images", "register_image"]

CHECKSUM_TAG = "stratus:sha256"
ADMIN_OWNER = "000000000000"
ADMIN_ALIAS = "stratus"
_NAME = re.compile(r"[A-Za-z0-9_.-]{3,64}")
_DEVICE = re.compile(r"/dev/[a-z0-9]{1,16}")
_HEX = re.compile(r"(sha256:)?([0-9a-f]{64})")
_KINDS = {ImageType.OS: ("ami", "machine"), ImageType.KERNEL: ("aki", "kernel")}
_KINDS[ImageType.RAMDISK] = ("ari", "ramdisk")
_ID_OF = {"ami": ami_id, "aki": kernel_id, "ari": ramdisk_id}
_STATES = {
    ImageState.LOCKED: "pending",
    ImageState.READY: "available",
    ImageState.USED: "available",
    ImageState.ERROR: "failed",
    ImageState.DISABLED: "disabled",
}
_FILTERS = {
    "name", "state", "image-id", "image-type", "owner-id", "owner-alias", "description",
    "is-public", "architecture", "kernel-id", "ramdisk-id", "tag-key", "tag:",
}  # fmt: skip
_PAGE = 1000


def _item(image: Image, details: Ec2Image | None, tags: dict[str, str]) -> dict[str, Any]:
    prefix, kind = _KINDS[image.type]
    failed = image.state is ImageState.ERROR
    owner = f"{details.user_id:012d}" if details and details.user_id is not None else ADMIN_OWNER
    return {
        "imageId": _ID_OF[prefix](image.id),
        "imageLocation": image.source,
        "imageState": _STATES[image.state],
        "imageOwnerId": owner,
        "imageOwnerAlias": ADMIN_ALIAS if owner == ADMIN_OWNER else None,
        "creationDate": image.created,
        "isPublic": True,
        "architecture": "x86_64",
        "imageType": kind,
        "kernelId": kernel_id(details.kernel_id) if details and details.kernel_id else None,
        "ramdiskId": ramdisk_id(details.ramdisk_id) if details and details.ramdisk_id else None,
        "name": image.name,
        "description": image.description,
        "rootDeviceType": "ebs",
        "rootDeviceName": details.root_device if details else "/dev/vda",
        "blockDeviceMapping": [],
        "virtualizationType": "hvm",
        "stateReason": {"code": "Client.ImportError", "message": image.reason} if failed else None,
        "tagSet": tag_items(tags),
    }


def _facts(item: dict[str, Any]) -> dict[str, list[str]]:
    tags = {t["key"]: t["value"] for t in item["tagSet"]}
    facts = {
        "name": [item["name"]],
        "state": [item["imageState"]],
        "image-id": [item["imageId"]],
        "image-type": [item["imageType"]],
        "owner-id": [item["imageOwnerId"]],
        "owner-alias": [item["imageOwnerAlias"] or ""],
        "description": [item["description"]],
        "is-public": ["true"],
        "architecture": ["x86_64"],
        "kernel-id": [item["kernelId"] or ""],
        "ramdisk-id": [item["ramdiskId"] or ""],
        "tag-key": list(tags),
    }
    return facts | {f"tag:{k}": [v] for k, v in tags.items()}


def _image_ids(params: Params) -> dict[int, str]:
    """ImageId.N (ami-, aki- or ari-) -> id number, keyed by number."""
    found = {}
    for value in params.texts("ImageId", max_len=64):
        prefix = value.split("-", 1)[0]
        try:
            if prefix not in _ID_OF:
                raise InvalidInput(value)
            found[number_of(prefix, value)] = value
        except InvalidInput:
            raise Ec2Error("InvalidAMIID.Malformed", f'Invalid id: "{value}"') from None
    return found


def _owner_test(owners: list[str], ctx: Ec2Context) -> set[str] | None:
    """The owner ids Owner.N asks for (None: any)."""
    if not owners:
        return None
    wanted = set()
    for owner in owners:
        if owner == "self":
            wanted.add(ctx.owner_id)
        elif owner in (ADMIN_ALIAS, "amazon"):
            wanted.add(ADMIN_OWNER)
        elif re.fullmatch(r"\d{12}", owner):
            wanted.add(owner)
        else:
            raise invalid("Owner", owner, "Expected self, stratus or a 12-digit account id.")
    return wanted


async def describe_images(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    ids = _image_ids(params)
    owners = _owner_test(params.texts("Owner", max_len=64), ctx)
    filters = parse_filters(params, _FILTERS)
    limit = params.number("MaxResults", low=5, high=1000)
    after = decode_token(params.text("NextToken", max_len=1024), "images") or 0
    if not isinstance(after, int):
        raise invalid("NextToken", params.text("NextToken"), "Use the previous NextToken.")
    ctx.commit()

    def read(conn: Connection) -> tuple[list[dict[str, Any]], str | None]:
        items: list[dict[str, Any]] = []
        position = after
        while True:
            page = store_images.select_images(conn, state=None, limit=_PAGE, after_id=position)
            shown = [i for i in page if i.type in _KINDS and (not ids or i.id in ids)]
            details = store_ec2.ec2_image_rows(conn, [i.id for i in shown])
            tags = store_ec2.tags_of(conn, [ami_id(i.id) for i in shown])
            for image in shown:
                item = _item(image, details.get(image.id), tags.get(ami_id(image.id), {}))
                if (owners is None or item["imageOwnerId"] in owners) and filters.matches(
                    _facts(item)
                ):
                    if limit is not None and len(items) == limit:
                        return items, encode_token("images", position)
                    items.append(item)
                position = image.id
            if len(page) < _PAGE:
                return items, None
            position = page[-1].id

    items, token = await ctx.read(read)
    if ids and not filters.items and owners is None:
        seen = {number_of(i["imageId"].split("-", 1)[0], i["imageId"]) for i in items}
        missing = [value for number, value in ids.items() if number not in seen]
        if missing:
            raise Ec2Error(
                "InvalidAMIID.NotFound", f"The image id '[{', '.join(missing)}]' does not exist"
            )
    return {"imagesSet": items, "nextToken": token}


def _source(ctx: Ec2Context, location: str) -> tuple[str | None, str | None]:
    """ImageLocation as engine.images.register's (path, url)."""
    if location.startswith(("http://", "https://")):
        return None, location
    path = Path(location)
    if path.is_absolute():
        resolved = path.resolve()
        for directory in ctx.config.import_dirs:
            if resolved.is_relative_to(directory.resolve()):
                return str(resolved), None
    allowed = ", ".join(str(d) for d in ctx.config.import_dirs) or "none configured"
    raise invalid(
        "ImageLocation",
        location,
        f"Give an http(s) URL, or a file under an import directory ({allowed}).",
    )


def _boot_ref(params: Params, key: str, prefix: str) -> int | None:
    value = params.text(key, max_len=64)
    if not value:
        return None
    try:
        return number_of(prefix, value)
    except InvalidInput:
        raise invalid(key, value, f"Expected a {prefix}- id.") from None


def _check_boot(conn: Connection, number: int | None, kind: ImageType, key: str) -> None:
    if number is None:
        return
    try:
        image = store_images.find_image(conn, number)
    except NotFound:
        image = None
    if image is None or image.type is not kind:
        shown = (kernel_id if kind is ImageType.KERNEL else ramdisk_id)(number)
        raise invalid(key, shown, f"No {kind.value} image has that id.")


async def register_image(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    name = params.required("Name", max_len=128)
    if _NAME.fullmatch(name) is None or name.isdigit():
        raise invalid("Name", name, "Use 3 to 64 letters, digits, '.', '_' and '-'.")
    location = params.required("ImageLocation", max_len=4096)
    path, url = _source(ctx, location)
    architecture = params.text("Architecture", default="x86_64", max_len=16)
    if architecture != "x86_64":
        raise invalid("Architecture", architecture, "Only x86_64 is supported.")
    root = params.text("RootDeviceName", default="/dev/vda", max_len=32) or "/dev/vda"
    if _DEVICE.fullmatch(root) is None:
        raise invalid("RootDeviceName", root, "Expected a device such as /dev/vda.")
    kernel = _boot_ref(params, "KernelId", "aki")
    ramdisk = _boot_ref(params, "RamdiskId", "ari")
    description = params.text("Description", default="", max_len=255) or ""
    tags = tag_specifications(params, {"image"})
    checksum = None
    if CHECKSUM_TAG in tags:
        match = _HEX.fullmatch(tags[CHECKSUM_TAG].lower())
        if match is None:
            raise invalid(f"tag {CHECKSUM_TAG}", tags[CHECKSUM_TAG], "Expected 64 hex digits.")
        checksum = f"sha256:{match.group(2)}"

    def check(conn: Connection) -> None:
        _check_boot(conn, kernel, ImageType.KERNEL, "KernelId")
        _check_boot(conn, ramdisk, ImageType.RAMDISK, "RamdiskId")

    await ctx.read(check)
    ctx.commit()
    try:
        image = await ctx.engine.images.register(
            name,
            path=path,
            url=url,
            image_type=ImageType.OS,
            description=description,
            checksum=checksum,
        )
    except Conflict:
        raise Ec2Error(
            "InvalidAMIName.Duplicate", f"AMI name {name} is already in use by another image"
        ) from None
    details = Ec2Image(image.id, ctx.user_id, kernel, ramdisk, root)

    def record(conn: Connection) -> None:
        store_ec2.insert_ec2_image(conn, ctx.now(), details)
        store_ec2.set_tags(conn, ctx.user_id, [ami_id(image.id)], tags)

    try:
        await ctx.write(record)
    except BaseException:  # no image without its owner
        await ctx.engine.images.delete(image.id)
        raise
    return {"imageId": ami_id(image.id)}


async def deregister_image(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    value = params.required("ImageId", max_len=64)
    try:
        number = number_of("ami", value)
    except InvalidInput:
        raise Ec2Error("InvalidAMIID.Malformed", f'Invalid id: "{value}"') from None

    def owner(conn: Connection) -> int | None:
        try:
            store_images.find_image(conn, number)
        except NotFound:
            raise Ec2Error(
                "InvalidAMIID.NotFound", f"The image id '[{value}]' does not exist"
            ) from None
        details = store_ec2.ec2_image_rows(conn, [number]).get(number)
        return details.user_id if details else None

    if await ctx.read(owner) != ctx.user_id:
        raise Ec2Error(
            "AuthFailure", f"Not authorized for image {value}: it was not registered by you", 403
        )
    ctx.commit()
    try:
        await ctx.engine.images.delete(number)
    except Conflict as exc:
        raise Ec2Error(
            "InvalidAMIID.Unavailable", f"{value} cannot be deregistered: {exc}"
        ) from None
    await ctx.write(store_ec2.delete_tags, ctx.user_id, [ami_id(number)], None)
    return {"return": True}
