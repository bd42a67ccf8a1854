"""CreateTags, DeleteTags, DescribeTags; the Tag.N and TagSpecification.N readers."""

from __future__ import annotations

from typing import Any

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.filters import parse_filters
from stratus.ec2api.protocol import (
    Ec2Error,
    Params,
    check_text,
    decode_token,
    encode_token,
    invalid,
    missing,
)
from stratus.model.ec2ids import (
    RESOURCE_TYPES,
    allocation_id,
    ami_id,
    group_id,
    instance_id,
    key_pair_id,
    number_of,
)
from stratus.model.errors import InvalidInput
from stratus.store import ec2 as store_ec2

__all__ = [
    "canonical_resource",
    "create_tags",
    "delete_tags",
    "describe_tags",
    "parse_tags",
    "tag_specifications",
]

_CANONICAL = {
    "i": instance_id,
    "ami": ami_id,
    "sg": group_id,
    "eipalloc": allocation_id,
    "key": key_pair_id,
}
_NOT_FOUND_CODES = {
    "i": "InvalidInstanceID.NotFound",
    "ami": "InvalidAMIID.NotFound",
    "sg": "InvalidGroup.NotFound",
    "eipalloc": "InvalidAllocationID.NotFound",
    "key": "InvalidKeyPair.NotFound",
}
_TYPE_PREFIX = {"instance": "i-", "image": "ami-", "security-group": "sg-"}
_TYPE_PREFIX |= {"elastic-ip": "eipalloc-", "key-pair": "key-"}


def _tag(item: Params, *, value_required: bool) -> tuple[str, str | None]:
    key = item.required("Key", max_len=128)
    if key.lower().startswith("aws:"):
        raise invalid(item.name("Key"), key, "Tag keys starting with 'aws:' are reserved.")
    value = item.text("Value", max_len=256)
    if value is None and value_required:
        value = ""
    return key, value


def parse_tags(params: Params, key: str = "Tag") -> dict[str, str]:
    """Tag.N.Key / Tag.N.Value as a dict (a missing value is "")."""
    tags: dict[str, str] = {}
    for item in params.items(key):
        name, value = _tag(item, value_required=True)
        tags[name] = value or ""
    return tags


def tag_specifications(
    params: Params, allowed: set[str], ignored: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The tags of TagSpecification.N whose ResourceType is in `allowed` (merged);
    types in `ignored` are accepted and left out, others are refused."""
    tags: dict[str, str] = {}
    for spec in params.items("TagSpecification"):
        kind = spec.required("ResourceType", max_len=64)
        if kind in ignored:
            continue
        if kind not in allowed:
            raise invalid(
                spec.name("ResourceType"), kind, f"Expected {' or '.join(sorted(allowed))}."
            )
        tags |= parse_tags(spec)
    return tags


def canonical_resource(resource_id: str, name: str) -> tuple[str, str, int]:
    """(canonical id, prefix, number) of a taggable id; InvalidID naming it otherwise."""
    prefix = resource_id.split("-", 1)[0]
    if prefix not in _CANONICAL:
        raise Ec2Error(
            "InvalidID", f"The ID '{resource_id}' ({name}) is not a taggable resource ID"
        )
    try:
        number = number_of(prefix, resource_id)
    except InvalidInput:
        raise Ec2Error("InvalidID", f"The ID '{resource_id}' ({name}) is malformed") from None
    return _CANONICAL[prefix](number), prefix, number


async def _owned_ids(ctx: Ec2Context, params: Params) -> list[str]:
    """The ResourceId.N values, canonical; NotFound (per kind) for one the user lacks."""
    given = params.texts("ResourceId", max_len=64)
    if not given:
        raise missing("ResourceId.1")
    resources: dict[str, tuple[str, int]] = {}
    for index, raw in enumerate(given, start=1):
        canonical, prefix, number = canonical_resource(raw, f"ResourceId.{index}")
        resources[canonical] = (prefix, number)
    owned = await ctx.read(store_ec2.owned_resources, ctx.user_id, resources)
    for rid, (prefix, _) in resources.items():
        if rid not in owned:
            raise Ec2Error(_NOT_FOUND_CODES[prefix], f"The ID '{rid}' does not exist")
    return list(resources)


async def create_tags(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    tags = parse_tags(params)
    if not tags:
        raise missing("Tag.1.Key")
    ids = await _owned_ids(ctx, params)
    ctx.commit()
    await ctx.write(store_ec2.set_tags, ctx.user_id, ids, tags)
    return {"return": True}


async def delete_tags(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    keys: list[tuple[str, str | None]] | None = None
    items = params.items("Tag")
    if items:
        keys = [_tag(item, value_required=False) for item in items]
    ids = await _owned_ids(ctx, params)
    ctx.commit()
    await ctx.write(store_ec2.delete_tags, ctx.user_id, ids, keys)
    return {"return": True}


_DESCRIBE_FILTERS = {"resource-id", "resource-type", "key", "value", "tag:"}


async def describe_tags(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    filters = parse_filters(params, _DESCRIBE_FILTERS)
    limit = params.number("MaxResults", low=5, high=1000)
    after = decode_token(params.text("NextToken", max_len=1024), "tags")
    if after is not None and not (
        isinstance(after, list) and len(after) == 2 and all(isinstance(a, str) for a in after)
    ):
        raise invalid("NextToken", params.text("NextToken"), "Use the previous NextToken.")
    types = filters.values("resource-type")
    prefixes = None
    if types is not None:
        prefixes = [_TYPE_PREFIX[t] for t in types if t in _TYPE_PREFIX]
    for value in filters.values("resource-id") or ():
        check_text("resource-id", value, 64)
    ctx.commit()
    found = await ctx.read(
        store_ec2.select_tags,
        ctx.user_id,
        resource_ids=filters.exact("resource-id"),
        keys=filters.values("key"),
        values=filters.values("value"),
        prefixes=prefixes,
        after=tuple(after) if after else None,
        limit=limit,
    )
    items = []
    for tag in found:
        kind = RESOURCE_TYPES.get(tag.resource_id.split("-", 1)[0], "")
        facts = {
            "resource-id": [tag.resource_id],
            "resource-type": [kind],
            "key": [tag.key],
            "value": [tag.value],
            f"tag:{tag.key}": [tag.value],
        }
        if filters.matches(facts):
            items.append(
                {
                    "resourceId": tag.resource_id,
                    "resourceType": kind,
                    "key": tag.key,
                    "value": tag.value,
                }
            )
    token = None
    if limit is not None and len(found) == limit:
        token = encode_token("tags", [found[-1].resource_id, found[-1].key])
    return {"tagSet": items, "nextToken": token}
