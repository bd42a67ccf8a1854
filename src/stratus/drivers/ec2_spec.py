"""The pure part of the ec2 driver: host options, template section -> RunInstances request,
and botocore exceptions -> Stratus errors. No I/O here, so all of it is tested directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from stratus.drivers.base import DeploySpec, HostDefaults, HostInfo
from stratus.drivers.cloud_errors import CloudError, CloudTimeout, CloudUnreachable, scrub
from stratus.model.errors import InvalidInput, StratusError
from stratus.model.template import Template, vm_spec

__all__ = [
    "CHECKPOINT_PREFIX",
    "INSTANCE_TYPE_SIZES",
    "REGION_COUNTRIES",
    "TAG_HOST",
    "TAG_REQUEST",
    "TAG_VM",
    "TypeSize",
    "authorized_ports",
    "cloud_host_defaults",
    "instance_type",
    "parse_capacity",
    "parse_type_sizes",
    "run_instances_request",
    "security_group_name",
    "select_section",
    "translate_error",
    "type_sizes",
]

TAG_VM = "stratus:vm"  # the Stratus VM id
TAG_HOST = "stratus:host"  # the Stratus host (cloud account + region) it was deployed on
TAG_REQUEST = "stratus:request"  # the deploy's request id: finds a half-made deploy again
CHECKPOINT_PREFIX = "ec2-stopped:"  # save() stops the instance; the checkpoint names it


@dataclass(frozen=True)
class TypeSize:
    vcpu: int
    memory: int  # MB


#: vCPU and memory of common instance types (AWS documentation, 2024); a stop-gap until
#: the project's per-provider catalogue replaces it. Hosts may override or extend it with
#: the `type_sizes` option ("m1.small=1:1740,x1.big=64:1048576").
INSTANCE_TYPE_SIZES: dict[str, TypeSize] = {
    "t2.micro": TypeSize(1, 1024),
    "t2.small": TypeSize(1, 2048),
    "t2.medium": TypeSize(2, 4096),
    "t3.nano": TypeSize(2, 512),
    "t3.micro": TypeSize(2, 1024),
    "t3.small": TypeSize(2, 2048),
    "t3.medium": TypeSize(2, 4096),
    "t3.large": TypeSize(2, 8192),
    "t3.xlarge": TypeSize(4, 16384),
    "m1.small": TypeSize(1, 1740),
    "m1.medium": TypeSize(1, 3840),
    "m1.large": TypeSize(2, 7680),
    "m1.xlarge": TypeSize(4, 15360),
    "m5.large": TypeSize(2, 8192),
    "m5.xlarge": TypeSize(4, 16384),
    "c5.large": TypeSize(2, 4096),
}


def _pairs(text: str, what: str, example: str) -> list[tuple[str, str]]:
    """Split "a=1,b=2" into stripped (key, value) pairs; InvalidInput names the bad entry."""
    pairs: list[tuple[str, str]] = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInput(f"{what} entry {entry.strip()!r} is not NAME=VALUE", hint=example)
        pairs.append((key.strip(), value.strip()))
    return pairs


def parse_capacity(text: str) -> dict[str, int]:
    """The `capacity` host option ("m1.small=4,m1.large=1") -> instance type -> quota."""
    example = "e.g. --capacity m1.small=4,m1.large=1"
    quotas: dict[str, int] = {}
    for name, count in _pairs(text, "capacity", example):
        if not count.isdigit():
            raise InvalidInput(
                f"capacity of {name} is {count!r}: expected a whole number of instances",
                hint=example,
            )
        if name in quotas:
            raise InvalidInput(f"capacity gives {name} twice", hint=example)
        quotas[name] = int(count)
    if not quotas:
        raise InvalidInput("capacity is empty: give at least one instance type", hint=example)
    return quotas


def parse_type_sizes(text: str) -> dict[str, TypeSize]:
    """The `type_sizes` host option ("m1.small=1:1740") -> type -> vCPU and memory (MB)."""
    example = "e.g. type_sizes=m1.small=1:1740 (VCPUS:MEMORY_MB)"
    sizes: dict[str, TypeSize] = {}
    for name, value in _pairs(text, "type_sizes", example):
        vcpu, sep, memory = value.partition(":")
        if not (sep and vcpu.isdigit() and memory.isdigit()):
            raise InvalidInput(f"type_sizes of {name} is {value!r}", hint=example)
        sizes[name] = TypeSize(int(vcpu), int(memory))
    return sizes


#: the country of each AWS region, for compliance rules such as COUNTRY = "IE"
REGION_COUNTRIES: dict[str, str] = {
    "us-east-1": "US", "us-east-2": "US", "us-west-1": "US", "us-west-2": "US",
    "ca-central-1": "CA", "sa-east-1": "BR", "eu-west-1": "IE", "eu-west-2": "GB",
    "eu-west-3": "FR", "eu-central-1": "DE", "eu-north-1": "SE", "eu-south-1": "IT",
    "eu-south-2": "ES", "ap-northeast-1": "JP", "ap-northeast-2": "KR", "ap-south-1": "IN",
    "ap-southeast-1": "SG", "ap-southeast-2": "AU",
}  # fmt: skip


def type_sizes(options: Mapping[str, Any]) -> dict[str, TypeSize]:
    """The instance type sizes a host knows: the built-in table and its `type_sizes`."""
    sizes = dict(INSTANCE_TYPE_SIZES)
    if options.get("type_sizes"):
        sizes.update(parse_type_sizes(str(options["type_sizes"])))
    return sizes


def cloud_host_defaults(options: Mapping[str, Any], provider: str) -> HostDefaults:
    """A cloud host's capacity (the sum of its quotas) and labels (PUBLIC_CLOUD, PROVIDER,
    REGION, COUNTRY when known, INSTANCE_TYPES = its quotas), from its options."""
    quotas = parse_capacity(str(options.get("capacity") or ""))
    sizes = type_sizes(options)
    unknown = sorted(t for t in quotas if t not in sizes)
    if unknown:
        raise InvalidInput(
            f"unknown instance types {', '.join(unknown)} in the capacity",
            hint="give their sizes with the type_sizes option, e.g. x1.big=64:1048576",
        )
    labels = {
        "PUBLIC_CLOUD": "YES",
        "PROVIDER": provider,
        "INSTANCE_TYPES": ",".join(f"{name}={count}" for name, count in quotas.items()),
    }
    region = str(options.get("region") or "")
    if region:
        labels["REGION"] = region
        if region in REGION_COUNTRIES:
            labels["COUNTRY"] = REGION_COUNTRIES[region]
    return HostDefaults(
        cpu=float(sum(sizes[t].vcpu * n for t, n in quotas.items())),
        memory=sum(sizes[t].memory * n for t, n in quotas.items()),
        labels=labels,
    )


def select_section(template: Mapping[str, Any], region: str | None) -> dict[str, str]:
    """The template's EC2 section for this host: the first ec2 section whose REGION (or
    PROVIDER) names the host's region, else the first ec2 section."""
    providers = vm_spec(Template.from_dict(template)).providers
    sections = [dict(p) for p in providers if p.get("TYPE", "").lower() == "ec2"]
    if not sections:
        raise InvalidInput(
            "the template has no EC2 section, so it cannot run on an ec2 host",
            hint="add EC2 = [ AMI = ..., INSTANCETYPE = ... ] or keep it off public clouds "
            "with SCHED_REQUIREMENTS = 'PUBLIC_CLOUD != \"YES\"'",
        )
    for section in sections:
        if region and region in (section.get("REGION"), section.get("PROVIDER")):
            return section
    return sections[0]


def security_group_name(vm_id: int) -> str:
    """The security group that opens a VM's AUTHORIZED_PORTS."""
    return f"stratus-{vm_id}"


def authorized_ports(section: Mapping[str, str]) -> list[int]:
    """AUTHORIZED_PORTS ("22,80") as TCP port numbers; InvalidInput on a bad entry."""
    ports: list[int] = []
    for item in section.get("AUTHORIZED_PORTS", "").split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise InvalidInput(
                f"AUTHORIZED_PORTS entry {item!r} is not a TCP port", hint='e.g. "22,80"'
            )
        ports.append(int(item))
    return sorted(set(ports))


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _required(section: Mapping[str, str], key: str, example: str) -> str:
    value = section.get(key, "").strip()
    if not value:
        raise InvalidInput(f"the EC2 section has no {key}", hint=f"add {key} = {example}")
    return value


def security_group_refs(section: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(names, ids) of the section's SECURITYGROUPS and SECURITYGROUPIDS ("sg-" = an id)."""
    given = _split(section.get("SECURITYGROUPS")) + _split(section.get("SECURITYGROUPIDS"))
    ids = [g for g in given if g.startswith("sg-")]
    return [g for g in given if not g.startswith("sg-")], ids


def _tags(section: Mapping[str, str], spec: DeploySpec, host: HostInfo) -> list[dict[str, str]]:
    tags = {"Name": spec.name}
    for key, value in _pairs(section.get("TAGS", ""), "TAGS", 'e.g. TAGS = "team=web,env=dev"'):
        tags[key] = value
    # ours last: a template cannot hide the instance from the driver
    tags.update({TAG_VM: str(spec.vm_id), TAG_HOST: host.name, TAG_REQUEST: spec.request_id})
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def run_instances_request(
    section: Mapping[str, str],
    spec: DeploySpec,
    host: HostInfo,
    *,
    security_group_ids: Iterable[str],
    user_data: str | None,
    image_id: str | None = None,
) -> dict[str, Any]:
    """The RunInstances arguments for one VM (ClientToken = the deploy's request id).

    `image_id`: the AMI when the section names none (an image transferred to a zone).
    """
    request: dict[str, Any] = {
        "ImageId": image_id or _required(section, "AMI", "ami-..."),
        "InstanceType": instance_type(section, spec, host),
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": spec.request_id[:64],  # the API's limit; request ids are short
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": _tags(section, spec, host)},
        ],
    }
    if section.get("KEYPAIR"):
        request["KeyName"] = section["KEYPAIR"]
    if section.get("SUBNETID"):
        request["SubnetId"] = section["SUBNETID"]
    if section.get("AVAILABILITYZONE"):
        request["Placement"] = {"AvailabilityZone": section["AVAILABILITYZONE"]}
    groups = list(security_group_ids)
    if groups:
        request["SecurityGroupIds"] = groups
    if user_data:
        request["UserData"] = user_data  # boto3 base64-encodes it
    return request


def instance_type(section: Mapping[str, str], spec: DeploySpec, host: HostInfo) -> str:
    """The section's INSTANCETYPE, else the scheduler's choice (the catalogue's cheapest
    that fits), else the smallest type of the host's quotas that fits VCPU and MEMORY."""
    named = section.get("INSTANCETYPE", "").strip() or spec.instance_type
    if named:
        return named
    sizes = type_sizes(host.options)
    quotas = (
        parse_capacity(str(host.options.get("capacity") or ""))
        if "capacity" in host.options
        else {}
    )
    fitting = sorted(
        (sizes[name].memory, sizes[name].vcpu, name)
        for name in quotas
        if name in sizes
        and sizes[name].vcpu >= max(spec.vcpu, spec.cpu)
        and sizes[name].memory >= spec.memory
    )
    if not fitting:
        raise InvalidInput(
            f"no instance type of host {host.name} fits VCPU {spec.vcpu} and MEMORY"
            f" {spec.memory} MB",
            hint="name one with INSTANCETYPE in the EC2 section, or give the host a bigger type",
        )
    return fitting[0][2]


def translate_error(exc: BaseException, action: str, secrets: Iterable[str] = ()) -> StratusError:
    """A botocore exception -> the Stratus error to raise `from` it (credentials scrubbed)."""
    secrets = list(secrets)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        text = scrub(str(error.get("Message") or ""), secrets)
        message = f"EC2 {action} failed: {code}: {text}".rstrip(": ")
        return CloudError(message, code=code, hint=_HINTS.get(code))
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return CloudTimeout(
            f"EC2 {action} timed out: {scrub(str(exc), secrets)}",
            hint="the endpoint is slow or overloaded; try again later",
        )
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError):
        return CloudUnreachable(
            f"EC2 endpoint does not answer ({action}): {scrub(str(exc), secrets)}",
            hint="check the host's endpoint and region options and the network",
        )
    if isinstance(exc, NoCredentialsError):
        return CloudError(
            f"EC2 {action} failed: no credentials",
            code="AuthFailure",
            failover=False,
            hint="give the host's access_key_id and secret_access_key credentials",
        )
    if isinstance(exc, BotoCoreError):
        return CloudError(
            f"EC2 {action} failed: {scrub(str(exc), secrets)}", code=type(exc).__name__
        )
    raise TypeError(f"not a botocore exception: {type(exc).__name__}")


_HINTS = {
    "AuthFailure": "check the host's access key id and secret (stratus host update)",
    "UnauthorizedOperation": "give the host's credentials the EC2 permissions it needs",
    "InsufficientInstanceCapacity": "the region has no capacity for this type; try later "
    "or another type or availability zone",
    "InstanceLimitExceeded": "the account's instance quota is reached; raise it or use "
    "another region",
    "RequestLimitExceeded": "the API is throttling requests; they will be retried later",
    "InvalidAMIID.NotFound": "the AMI does not exist in this region; fix the EC2 section's AMI",
    "InvalidKeyPair.NotFound": "create the key pair in this region or fix KEYPAIR",
}
