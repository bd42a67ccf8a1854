"""DescribeRegions, DescribeAvailabilityZones, DescribeInstanceTypes, DescribeAccountAttributes.

A Stratus daemon is one region with one availability zone (`Ec2ApiConfig`); its instance
types are the catalogue's for that region, mapped to Stratus CPU and memory.
"""

from __future__ import annotations

from typing import Any

from stratus.ec2api.context import Ec2Context
from stratus.ec2api.filters import parse_filters
from stratus.ec2api.protocol import Ec2Error, Params, decode_token, encode_token, invalid
from stratus.model.catalogue import Offering
from stratus.store import users as store_users

__all__ = [
    "describe_account_attributes",
    "describe_availability_zones",
    "describe_instance_types",
    "describe_regions",
]


async def describe_regions(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    names = params.texts("RegionName", max_len=64)
    filters = parse_filters(params, {"region-name", "endpoint", "opt-in-status"})
    ctx.commit()
    region = {
        "regionName": ctx.config.region,
        "regionEndpoint": ctx.endpoint,
        "optInStatus": "opt-in-not-required",
    }
    facts = {
        "region-name": [ctx.config.region],
        "endpoint": [ctx.endpoint],
        "opt-in-status": ["opt-in-not-required"],
    }
    keep = (not names or ctx.config.region in names) and filters.matches(facts)
    return {"regionInfo": [region] if keep else []}


async def describe_availability_zones(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    names = params.texts("ZoneName", max_len=64)
    for name in names:
        if name != ctx.config.zone:
            raise invalid("ZoneName", name, f"The only zone is {ctx.config.zone}.")
    filters = parse_filters(params, {"zone-name", "region-name", "state", "zone-type"})
    ctx.commit()
    zone = {
        "zoneName": ctx.config.zone,
        "zoneState": "available",
        "regionName": ctx.config.region,
        "zoneId": f"{ctx.config.zone}-id",
        "zoneType": "availability-zone",
        "optInStatus": "opt-in-not-required",
        "groupName": ctx.config.region,
        "networkBorderGroup": ctx.config.region,
        "messageSet": [],
    }
    facts = {
        "zone-name": [ctx.config.zone],
        "region-name": [ctx.config.region],
        "state": ["available"],
        "zone-type": ["availability-zone"],
    }
    return {"availabilityZoneInfo": [zone] if filters.matches(facts) else []}


def _type_item(offering: Offering) -> dict[str, Any]:
    return {
        "instanceType": offering.name,
        "currentGeneration": not offering.name.startswith(("m1.", "t2.")),
        "freeTierEligible": offering.name in ("t2.micro", "t3.micro"),
        "supportedUsageClasses": ["on-demand"],
        "supportedRootDeviceTypes": ["ebs"],
        "supportedVirtualizationTypes": ["hvm"],
        "bareMetal": False,
        "processorInfo": {"supportedArchitectures": ["x86_64"]},
        "vCpuInfo": {
            "defaultVCpus": offering.vcpu,
            "defaultCores": offering.vcpu,
            "defaultThreadsPerCore": 1,
        },
        "memoryInfo": {"sizeInMiB": offering.memory_mb},
        "instanceStorageSupported": False,
        "hibernationSupported": False,
        "burstablePerformanceSupported": offering.name.startswith(("t2.", "t3.")),
    }


async def describe_instance_types(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    types = ctx.config.instance_types
    wanted = params.texts("InstanceType", max_len=64)
    unknown = [name for name in wanted if name not in types]
    if unknown:
        raise Ec2Error(
            "InvalidInstanceType",
            f"The following supplied instance types do not exist: [{', '.join(unknown)}]",
        )
    filters = parse_filters(
        params, {"instance-type", "vcpu-info.default-vcpus", "memory-info.size-in-mib"}
    )
    limit = params.number("MaxResults", low=5, high=100)
    after = decode_token(params.text("NextToken", max_len=1024), "types")
    if after is not None and not isinstance(after, str):
        raise invalid("NextToken", params.text("NextToken"), "Use the previous NextToken.")
    ctx.commit()
    names = [n for n in (wanted or list(types)) if after is None or n > after]
    items: list[dict[str, Any]] = []
    token = None
    for name in sorted(names):
        offering = types[name]
        facts = {
            "instance-type": [name],
            "vcpu-info.default-vcpus": [str(offering.vcpu)],
            "memory-info.size-in-mib": [str(offering.memory_mb)],
        }
        if not filters.matches(facts):
            continue
        if limit is not None and len(items) == limit:
            token = encode_token("types", items[-1]["instanceType"])
            break
        items.append(_type_item(offering))
    return {"instanceTypeSet": items, "nextToken": token}


async def describe_account_attributes(ctx: Ec2Context, params: Params) -> dict[str, Any]:
    names = params.texts("AttributeName", max_len=64)
    ctx.commit()
    quota = await ctx.read(store_users.user_quota, ctx.user_id)
    values = {
        "supported-platforms": ["VPC"],
        "default-vpc": ["none"],
        "max-instances": [str(quota.vms) if quota.vms is not None else "unlimited"],
        "max-elastic-ips": [str(ctx.config.pool.num_addresses - 2)],
        "vpc-max-elastic-ips": [str(ctx.config.pool.num_addresses - 2)],
        "vpc-max-security-groups-per-interface": ["5"],
    }
    unknown = [name for name in names if name not in values]
    if unknown:
        raise invalid("AttributeName", unknown[0], f"Known: {', '.join(sorted(values))}.")
    return {
        "accountAttributeSet": [
            {
                "attributeName": name,
                "attributeValueSet": [{"attributeValue": value} for value in values[name]],
            }
            for name in (names or list(values))
        ]
    }
