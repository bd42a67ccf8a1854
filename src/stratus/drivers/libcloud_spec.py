"""The pure part of the libcloud driver: host options, the template section -> create_node
arguments, libcloud exceptions -> Stratus errors, and the EC2 XML-namespace shim.

No I/O here (but `driver_class`, which imports the provider's libcloud module).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError, ProviderError
from libcloud.compute.base import NodeDriver, NodeSize
from libcloud.compute.drivers.ec2 import NAMESPACE, BaseEC2NodeDriver, EC2Connection
from libcloud.compute.providers import get_driver

from stratus.drivers.base import DeploySpec
from stratus.drivers.cloud_errors import CloudError, CloudTimeout, CloudUnreachable, scrub
from stratus.drivers.ec2_spec import INSTANCE_TYPE_SIZES, TypeSize, parse_capacity
from stratus.model.credentials import looks_secret
from stratus.model.errors import InvalidInput, StratusError
from stratus.model.template import Template, vm_spec

__all__ = [
    "CHECKPOINT_PREFIX",
    "FALLBACK_SIZES",
    "TAG_HOST",
    "TAG_REQUEST",
    "TAG_VM",
    "LibcloudHost",
    "create_arguments",
    "driver_class",
    "parse_host_options",
    "select_section",
    "size_of",
    "translate_error",
]

# Metadata keys valid on every provider (GCE allows only [A-Za-z0-9_-], so no "stratus:").
TAG_VM = "stratus-vm"  # the Stratus VM id
TAG_HOST = "stratus-host"  # the Stratus host the node was deployed on
TAG_REQUEST = "stratus-request"  # the deploy's request id: a retried deploy finds its node
CHECKPOINT_PREFIX = "libcloud-stopped:"  # save() stops the node; the checkpoint names it

#: vCPU and memory of sizes the provider's list_sizes does not describe; the project's
#: instance-type catalogue will replace it (today: the ec2 driver's table).
FALLBACK_SIZES: Mapping[str, TypeSize] = INSTANCE_TYPE_SIZES

_ERROR_TYPE = re.compile(r"<Type>[^<]*</Type>")
_RESERVED_ARGS = frozenset({"key", "secret", "host", "port", "secure", "timeout"})


@dataclass(frozen=True)
class LibcloudHost:
    """A libcloud host's options, checked (no credentials: those are HostInfo.secrets)."""

    provider: str  # libcloud compute Provider name, lower case
    capacity: dict[str, int]  # size -> quota of instances
    region: str | None = None
    host: str | None = None  # from `endpoint`
    port: int | None = None
    secure: bool | None = None
    driver_args: dict[str, Any] = field(default_factory=dict)
    timeout: float = 30.0  # seconds per HTTP call
    boot_wait: float = 60.0  # seconds a deploy (or start/stop) waits for the node's state
    poll_interval: float = 2.0

    def connection_kwargs(self, extra_secrets: Mapping[str, str]) -> dict[str, Any]:
        """Keyword arguments of the libcloud driver's constructor (after key, secret)."""
        kwargs: dict[str, Any] = {**self.driver_args, **extra_secrets, "timeout": self.timeout}
        if self.region:
            kwargs.setdefault("region", self.region)
        if self.host:
            kwargs.update(host=self.host, port=self.port, secure=self.secure)
        if issubclass(driver_class(self.provider), BaseEC2NodeDriver):
            # SigV4 keeps the access key id out of URLs; EC2-compatible endpoints such as
            # moto route unsigned-header (SigV2) requests to S3
            kwargs.setdefault("signature_version", "4")
        return kwargs


def _number(options: Mapping[str, Any], name: str, default: float) -> float:
    raw = options.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise InvalidInput(f"option {name} = {raw!r} is not a positive number of seconds")
    return value


def _driver_args(raw: Any) -> dict[str, Any]:
    example = """e.g. driver_args='{"ex_force_auth_url": "https://keystone:5000"}'"""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"driver_args is not JSON: {exc.msg}", hint=example) from None
    if not isinstance(raw, dict):
        raise InvalidInput("driver_args must be a JSON object", hint=example)
    for name in raw:
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidInput(f"driver_args key {name!r} is not an identifier", hint=example)
        if name in _RESERVED_ARGS or looks_secret(name):
            raise InvalidInput(
                f"driver_args cannot set {name!r}",
                hint="credentials go in the host's secrets; endpoint and timeout are options",
            )
    return dict(raw)


def parse_host_options(options: Mapping[str, Any]) -> LibcloudHost:
    """Check a libcloud host's options; InvalidInput names the bad one and the fix."""
    provider = str(options.get("provider") or "").strip().lower()
    if not provider:
        raise InvalidInput(
            "a libcloud host needs a provider option", hint="e.g. provider=openstack, gce, ec2"
        )
    driver_class(provider)  # an unknown provider fails here, at host add
    capacity = options.get("capacity")
    if not capacity:
        raise InvalidInput("a libcloud host needs a capacity", hint="e.g. capacity=m1.small=4")
    host = port = secure = None
    endpoint = str(options.get("endpoint") or "")
    if endpoint:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput(
                f"endpoint {endpoint!r} is not an http(s) URL", hint="e.g. https://cloud:8773"
            )
        secure = url.scheme == "https"
        host, port = url.hostname, url.port or (443 if secure else 80)
    return LibcloudHost(
        provider=provider,
        capacity=capacity if isinstance(capacity, dict) else parse_capacity(str(capacity)),
        region=str(options.get("region") or "") or None,
        host=host,
        port=port,
        secure=secure,
        driver_args=_driver_args(options.get("driver_args")),
        timeout=_number(options, "timeout", 30.0),
        boot_wait=_number(options, "boot_wait", 60.0),
        poll_interval=_number(options, "poll_interval", 2.0),
    )


class _Ec2NamespaceFix:
    """EC2 responses that declare the API namespace without its trailing slash.

    Real EC2 answers with xmlns="http://ec2.amazonaws.com/doc/2016-11-15/" and error
    bodies without a namespace, each Error holding exactly Code and Message. moto 5
    serializes from botocore's service model, whose xmlNamespace lacks the slash (on errors
    too), and adds <Type> to some errors; libcloud matches namespaces exactly and unpacks
    an Error into two children, so it would read every list as empty, every error as blank
    and an AuthFailure as a ValueError. A no-op on real EC2.
    """

    body: Any

    def _fix(self, *, error: bool) -> None:
        if isinstance(self.body, str | bytes):
            text = self.body.decode() if isinstance(self.body, bytes) else self.body
            short = f'xmlns="{NAMESPACE.rstrip("/")}"'
            text = text.replace(short, "" if error else f'xmlns="{NAMESPACE}"')
            self.body = _ERROR_TYPE.sub("", text) if error else text

    def parse_body(self) -> Any:
        self._fix(error=False)
        return super().parse_body()  # type: ignore[misc]

    def parse_error(self) -> Any:
        self._fix(error=True)
        return super().parse_error()  # type: ignore[misc]


@functools.cache
def driver_class(provider: str) -> type[NodeDriver]:
    """libcloud's driver class for `provider` (EC2 family: with the namespace shim)."""
    try:
        cls: type[NodeDriver] = get_driver(provider)
    except AttributeError:
        raise InvalidInput(
            f"libcloud has no compute provider {provider!r}",
            hint="e.g. ec2, openstack, gce, azure_arm, cloudsigma "
            "(libcloud.compute.types.Provider)",
        ) from None
    conn = getattr(cls, "connectionCls", None)
    if issubclass(cls, BaseEC2NodeDriver) and conn and issubclass(conn, EC2Connection):
        response = type("Ec2Response", (_Ec2NamespaceFix, conn.responseCls), {})
        conn = type(conn.__name__, (conn,), {"responseCls": response})
        cls = type(cls.__name__, (cls,), {"connectionCls": conn})
    return cls


def select_section(
    template: Mapping[str, Any], provider: str, region: str | None
) -> dict[str, str]:
    """The template's section for this host: PUBLIC_CLOUD TYPE=libcloud (whose PROVIDER, if
    given, is this provider) or TYPE=<provider> (EC2 sections for ec2), not of another REGION."""
    candidates = []
    for section in vm_spec(Template.from_dict(template)).providers:
        kind = section.get("TYPE", "").lower()
        named = section.get("PROVIDER", "").lower()
        fits = kind == provider or (kind == "libcloud" and named in ("", provider))
        if fits and (not region or section.get("REGION", region) == region):
            candidates.append(dict(section))
    if not candidates:
        raise InvalidInput(
            f"the template has no PUBLIC_CLOUD section for libcloud provider {provider}",
            hint=f"add PUBLIC_CLOUD = [ TYPE = libcloud, PROVIDER = {provider}, IMAGE = ..., "
            "SIZE = ... ] or keep it off public clouds with "
            "SCHED_REQUIREMENTS = 'PUBLIC_CLOUD != \"YES\"'",
        )
    return candidates[0]


def size_of(name: str, listed: NodeSize | None) -> TypeSize:
    """vCPU and memory of size `name`: what the provider reports, else FALLBACK_SIZES."""
    if listed is not None:
        extra = listed.extra or {}
        vcpu = getattr(listed, "vcpus", None) or extra.get("vcpu") or extra.get("guestCpus")
        try:
            if vcpu and listed.ram:
                return TypeSize(int(float(vcpu)), int(listed.ram))
        except (TypeError, ValueError):
            pass
    if name in FALLBACK_SIZES:
        return FALLBACK_SIZES[name]
    raise InvalidInput(
        f"the host's capacity names size {name!r}, which the provider does not describe",
        hint="use a size the provider lists (list_sizes) or one of "
        + ", ".join(sorted(FALLBACK_SIZES)),
    )


def _pick_size(capacity: Mapping[str, int], spec: DeploySpec) -> str:
    """Without SIZE: the smallest size of the capacity that fits the VM's VCPU and MEMORY."""
    fitting = [
        (FALLBACK_SIZES[n].memory, n)
        for n in capacity
        if n in FALLBACK_SIZES
        and FALLBACK_SIZES[n].vcpu >= spec.vcpu
        and FALLBACK_SIZES[n].memory >= spec.memory
    ]
    if not fitting:
        raise InvalidInput(
            f"no size of the host fits VCPU {spec.vcpu} and MEMORY {spec.memory} MB",
            hint="name one in the template: PUBLIC_CLOUD = [ ..., SIZE = ... ]",
        )
    return min(fitting)[1]


def create_arguments(
    drv: NodeDriver, cfg: LibcloudHost, section: Mapping[str, str], spec: DeploySpec, host: str
) -> dict[str, Any]:
    """create_node's arguments (image and size as ids), limited to what the driver takes."""
    accepted = inspect.signature(drv.create_node).parameters
    image = section.get("IMAGE") or section.get("AMI")
    if not image:
        raise InvalidInput(
            "the template's cloud section has no IMAGE (or AMI)", hint="add IMAGE = <image id>"
        )
    tags: dict[str, str] = {}
    for entry in section.get("TAGS", "").split(","):
        key, sep, value = entry.partition("=")
        if sep and key.strip():
            tags[key.strip()] = value.strip()
    tags.update({TAG_VM: str(spec.vm_id), TAG_HOST: host, TAG_REQUEST: spec.request_id})
    args: dict[str, Any] = {
        "name": spec.name,
        "image": image,
        "size": section.get("SIZE")
        or section.get("INSTANCETYPE")
        or spec.instance_type
        or _pick_size(cfg.capacity, spec),
    }
    tag_arg = next((a for a in ("ex_metadata", "ex_tags") if a in accepted), None)
    if tag_arg is None:
        raise InvalidInput(
            f"libcloud's {drv.name} driver cannot tag nodes, so Stratus could not find them again",
            hint="use a provider whose create_node takes ex_metadata or ex_tags",
        )
    user_data = (spec.context or {}).get("user-data")
    text = user_data.decode("utf-8", "replace") if user_data else section.get("USERDATA")
    if text and "ex_userdata" in accepted:
        args["ex_userdata"] = text
    elif text and tag_arg == "ex_metadata":  # GCE-style: cloud-init reads metadata user-data
        tags["user-data"] = text
    args[tag_arg] = tags
    keypair = section.get("KEYPAIR") or section.get("KEYNAME")
    if keypair and "ex_keyname" in accepted:
        args["ex_keyname"] = keypair
    if "ex_clienttoken" in accepted:
        args["ex_clienttoken"] = spec.request_id[:64]
    return args


def _code(text: str) -> str | None:
    """The provider's error code at the start of a message ("InvalidAMIID.NotFound: ...")."""
    head = text.strip().split(":", 1)[0].strip()
    return head if head and " " not in head and head.replace(".", "").isalnum() else None


def translate_error(
    exc: BaseException, action: str, provider: str, secrets: Iterable[str] = ()
) -> StratusError:
    """A libcloud/requests exception -> the Stratus error to raise `from` it (scrubbed)."""
    where = f"libcloud {provider} {action}"
    text = scrub(str(getattr(exc, "message", "") or exc or type(exc).__name__), list(secrets))
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if isinstance(exc, InvalidCredsError) or (
        isinstance(exc, BaseHTTPError | ProviderError)
        and getattr(exc, "code", getattr(exc, "http_code", 0)) in (401, 403)
    ):
        return CloudError(
            f"{where} failed: the provider refused the credentials ({first})",
            code="AuthFailure",
            failover=False,
            hint="check the host's key and secret (stratus host credentials)",
        )
    if isinstance(exc, requests.Timeout | socket.timeout | TimeoutError):
        return CloudTimeout(
            f"{where} timed out: {first}", hint="the endpoint is slow; raise the timeout option"
        )
    if isinstance(exc, requests.ConnectionError | ssl.SSLError | ConnectionError | OSError):
        return CloudUnreachable(
            f"{where}: the endpoint does not answer ({type(exc).__name__})",
            hint="check the host's endpoint and region options and the network",
        )
    if isinstance(exc, BaseHTTPError):
        status = int(getattr(exc, "code", 0) or 0)
        code = _code(first) or ("ServiceUnavailable" if status >= 500 else f"HTTP{status}")
        return CloudError(f"{where} failed: {first}", code=code)
    if isinstance(exc, LibcloudError):
        return CloudError(f"{where} failed: {first}", code=_code(first) or type(exc).__name__)
    return CloudError(f"{where} failed: {type(exc).__name__}: {first}", code=type(exc).__name__)
