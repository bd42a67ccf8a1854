"""The ec2 driver: a public (or EC2-compatible private) cloud region as a Stratus host.

Host options: `region` (required), `endpoint` (any EC2-compatible API URL), `capacity`
("m1.small=4,m1.large=1": instances allowed per type; the host's CPU and memory are their
sum), `type_sizes` (override the vCPU/memory table), `poll_interval` and `wait_timeout`
(seconds; instance state waits). Secrets: `access_key_id`, `secret_access_key`, optional
`session_token`; they reach boto3 only, never a message, a log line or a repr.

Every boto3 call runs in a worker thread (boto3 is synchronous) with connect/read timeouts
and bounded retries; the engine adds its own deadline around each driver call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from stratus.drivers.base import (
    DeploySpec,
    DiskSpec,
    Driver,
    HostDefaults,
    HostInfo,
    InstanceInfo,
    InstanceState,
    ProbeResult,
)
from stratus.drivers.cloud_errors import CloudError, CloudTimeout
from stratus.drivers.ec2_images import ensure_image
from stratus.drivers.ec2_spec import (
    CHECKPOINT_PREFIX,
    TAG_HOST,
    TAG_REQUEST,
    TAG_VM,
    TypeSize,
    authorized_ports,
    cloud_host_defaults,
    run_instances_request,
    security_group_name,
    security_group_refs,
    select_section,
    translate_error,
    type_sizes,
)
from stratus.model.errors import InvalidInput, Unsupported

__all__ = ["Ec2Driver"]

_CONNECT_TIMEOUT = 5.0
_READ_TIMEOUT = 30.0
_STATES = {  # EC2 instance state -> Stratus; absent (shutting-down, terminated) = gone
    "pending": InstanceState.RUNNING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.OFF,
    "stopped": InstanceState.OFF,
}
_LIVE = ["pending", "running", "stopping", "stopped"]
_NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidGroup.NotFound")


class Ec2Driver(Driver):
    """EC2 through boto3; one object serves every ec2 host (one client per account/region)."""

    name = "ec2"
    unsupported = {
        "suspend": "EC2 cannot keep an instance's memory while it is stopped; use stop "
        "(StopInstances keeps the disks) or poweroff",
        "live_migrate": "an instance cannot move between clouds or regions while running; "
        "use a cold migration (the VM is redeployed from its template)",
    }

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self._clients: dict[tuple[int, str, str, str], Any] = {}
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------
    def _client(self, host: HostInfo) -> Any:
        """The boto3 client of this host's account and region, made on first use."""
        region = str(host.options.get("region") or "")
        if not region:
            raise InvalidInput(
                f"ec2 host {host.name} has no region option", hint="e.g. --region eu-west-1"
            )
        endpoint = str(host.options.get("endpoint") or "")
        key_id = host.secrets.get("access_key_id", "")
        key = (host.id, endpoint, region, key_id)
        with self._lock:  # boto3 sessions are not thread-safe; one client per key
            client = self._clients.get(key)
            if client is None:
                session = boto3.session.Session(
                    aws_access_key_id=key_id or None,
                    aws_secret_access_key=host.secrets.get("secret_access_key") or None,
                    aws_session_token=host.secrets.get("session_token") or None,
                    region_name=region,
                )
                config = Config(
                    connect_timeout=_CONNECT_TIMEOUT,
                    read_timeout=_READ_TIMEOUT,
                    retries={"max_attempts": 2, "mode": "standard"},
                )
                client = session.client("ec2", endpoint_url=endpoint or None, config=config)
                self._clients[key] = client
            return client

    def _call_sync(self, host: HostInfo, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client(host), operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate_error(exc, operation, host.secrets.values()) from exc

    async def _call(self, host: HostInfo, operation: str, **kwargs: Any) -> Any:
        """One EC2 API call (snake_case name) in a thread; errors translated."""
        return await asyncio.to_thread(self._call_sync, host, operation, **kwargs)

    async def _instances(self, host: HostInfo, filters: list[dict[str, Any]]) -> list[Any]:
        """Every instance matching `filters`, page by page (1000 per call)."""

        def collect() -> list[Any]:
            paginator = self._client(host).get_paginator("describe_instances")
            found: list[Any] = []
            try:
                for page in paginator.paginate(
                    Filters=filters, PaginationConfig={"PageSize": 1000}
                ):
                    for reservation in page.get("Reservations", []):
                        found.extend(reservation.get("Instances", []))
            except (ClientError, BotoCoreError) as exc:
                raise translate_error(exc, "describe_instances", host.secrets.values()) from exc
            return found

        return await asyncio.to_thread(collect)

    async def _instance(self, host: HostInfo, instance_id: str) -> dict[str, Any] | None:
        """One instance, or None when EC2 no longer knows it."""
        try:
            found = await self._call(host, "describe_instances", InstanceIds=[instance_id])
        except CloudError as exc:
            if exc.code in _NOT_FOUND:
                return None
            raise
        for reservation in found.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                return dict(instance)
        return None

    async def _wait(
        self, host: HostInfo, instance_id: str, wanted: Iterable[str]
    ) -> dict[str, Any]:
        """Poll until the instance reaches one of `wanted` states; CloudTimeout after
        the host's wait_timeout (default 240 s)."""
        wanted = set(wanted)
        interval = float(host.options.get("poll_interval", 2.0))
        deadline = time.monotonic() + float(host.options.get("wait_timeout", 240.0))
        while True:
            instance = await self._instance(host, instance_id)
            state = instance["State"]["Name"] if instance else "terminated"
            if state in wanted:
                return instance or {}
            if time.monotonic() >= deadline:
                raise CloudTimeout(
                    f"EC2 instance {instance_id} is {state}, not {'/'.join(sorted(wanted))}",
                    hint="the cloud is slow; check the instance in the provider's console",
                )
            await asyncio.sleep(interval)

    # -- probe -----------------------------------------------------------------------------
    def _sizes(self, host: HostInfo) -> dict[str, TypeSize]:
        return type_sizes(host.options)

    def host_defaults(self, options: Mapping[str, Any]) -> HostDefaults:
        """Capacity = the sum of the `capacity` quotas; labels PUBLIC_CLOUD, PROVIDER,
        REGION, COUNTRY, INSTANCE_TYPES."""
        if not options.get("region"):
            raise InvalidInput("an ec2 host needs a region", hint="e.g. --region eu-west-1")
        return cloud_host_defaults(options, "ec2")

    async def probe(self, host: HostInfo) -> ProbeResult:
        """Capacity from the quotas; instances = those tagged with this host's name."""
        sizes = self._sizes(host)
        try:
            defaults = self.host_defaults(host.options)
        except InvalidInput as exc:
            raise InvalidInput(f"ec2 host {host.name}: {exc.message}", hint=exc.hint) from exc
        cpu, memory = defaults.cpu, defaults.memory
        found = await self._instances(host, [{"Name": f"tag:{TAG_HOST}", "Values": [host.name]}])
        instances: dict[str, InstanceInfo] = {}
        for raw in found:
            info = _info(raw, sizes)
            if info is not None:
                instances[info.deploy_id] = info
        used = sum(i.memory_usage for i in instances.values() if i.state is InstanceState.RUNNING)
        attributes = {**defaults.labels, "HYPERVISOR": "ec2"}
        return ProbeResult(
            cpu=float(cpu),
            memory=memory,
            free_memory=max(memory - used, 0),
            attributes=attributes,
            instances=instances,
        )

    # -- deploy ----------------------------------------------------------------------------
    async def deploy(self, host: HostInfo, spec: DeploySpec) -> InstanceInfo:
        """RunInstances (or StartInstances for a stop checkpoint), then wait for running
        and associate the ELASTICIP. A retried deploy finds its instance by request id."""
        section = select_section(spec.template, str(host.options.get("region") or ""))
        if spec.checkpoint:
            instance_id = await self._start_stopped(host, spec.checkpoint)
        else:
            instance_id = await self._existing(host, spec) or await self._run(host, spec, section)
        instance = await self._wait(host, instance_id, ["running"])
        if section.get("ELASTICIP"):
            await self._associate_address(host, instance, section["ELASTICIP"])
            instance = await self._instance(host, instance_id) or instance
        info = _info(instance, self._sizes(host))
        if info is None:  # terminated between the wait and now
            raise Unsupported(f"EC2 instance {instance_id} was terminated while deploying")
        return info

    async def _existing(self, host: HostInfo, spec: DeploySpec) -> str | None:
        """The instance an earlier try of this deploy made (EC2 honours ClientToken, but
        EC2-compatible endpoints may not)."""
        found = await self._instances(
            host,
            [
                {"Name": f"tag:{TAG_REQUEST}", "Values": [spec.request_id]},
                {"Name": f"tag:{TAG_HOST}", "Values": [host.name]},
                {"Name": "instance-state-name", "Values": _LIVE},
            ],
        )
        return str(found[0]["InstanceId"]) if found else None

    async def prepare(self, host: HostInfo, spec: DeploySpec) -> None:
        """Without an AMI, import the VM's first disk image at the endpoint (a partner
        zone) before the deploy, so PROLOG is where the transfer shows."""
        section = select_section(spec.template, str(host.options.get("region") or ""))
        if not section.get("AMI") and spec.disks and not spec.checkpoint:
            await self._image_for(host, spec)

    async def _image_for(self, host: HostInfo, spec: DeploySpec) -> str:
        return await self.stage_image(host, spec.disks[0])

    async def stage_image(self, host: HostInfo, disk: DiskSpec) -> str:
        """The endpoint's AMI of the image: imported there from its link when missing."""
        wait = float(host.options.get("image_timeout", 1800.0))
        return await ensure_image(partial(self._call, host), disk, timeout=wait)

    async def _run(self, host: HostInfo, spec: DeploySpec, section: dict[str, str]) -> str:
        names, group_ids = security_group_refs(section)
        if names:
            group_ids += await self._group_ids(host, names)
        ports = authorized_ports(section)
        if ports:
            group_ids.append(await self._ensure_port_group(host, spec.vm_id, section, ports))
        user_data = section.get("USERDATA") or None
        if spec.context and "user-data" in spec.context:
            user_data = spec.context["user-data"].decode()
        image_id = None
        if not section.get("AMI") and spec.disks:
            image_id = await self._image_for(host, spec)
        request = run_instances_request(
            section,
            spec,
            host,
            security_group_ids=group_ids,
            user_data=user_data,
            image_id=image_id,
        )
        reply = await self._call(host, "run_instances", **request)
        return str(reply["Instances"][0]["InstanceId"])

    async def _group_ids(self, host: HostInfo, names: list[str]) -> list[str]:
        reply = await self._call(
            host, "describe_security_groups", Filters=[{"Name": "group-name", "Values": names}]
        )
        by_name = {g["GroupName"]: g["GroupId"] for g in reply.get("SecurityGroups", [])}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InvalidInput(
                f"security groups {', '.join(missing)} do not exist in {host.options['region']}",
                hint="create them or fix the EC2 section's SECURITYGROUPS",
            )
        return [by_name[n] for n in names]

    async def _ensure_port_group(
        self, host: HostInfo, vm_id: int, section: dict[str, str], ports: list[int]
    ) -> str:
        """The stratus-<vm id> group opening `ports` to everyone over TCP; made once."""
        name = security_group_name(vm_id)
        existing = await self._call(
            host, "describe_security_groups", Filters=[{"Name": "group-name", "Values": [name]}]
        )
        groups = existing.get("SecurityGroups", [])
        if groups:
            group_id = str(groups[0]["GroupId"])
        else:
            extra: dict[str, Any] = {}
            if section.get("SUBNETID"):
                subnets = await self._call(
                    host, "describe_subnets", SubnetIds=[section["SUBNETID"]]
                )
                extra["VpcId"] = subnets["Subnets"][0]["VpcId"]
            created = await self._call(
                host,
                "create_security_group",
                GroupName=name,
                Description=f"Stratus VM {vm_id}: AUTHORIZED_PORTS",
                TagSpecifications=[
                    {
                        "ResourceType": "security-group",
                        "Tags": [{"Key": TAG_VM, "Value": str(vm_id)}],
                    }
                ],
                **extra,
            )
            group_id = str(created["GroupId"])
        for port in ports:
            try:
                await self._call(
                    host,
                    "authorize_security_group_ingress",
                    GroupId=group_id,
                    IpPermissions=[
                        {
                            "IpProtocol": "tcp",
                            "FromPort": port,
                            "ToPort": port,
                            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                        }
                    ],
                )
            except CloudError as exc:
                if exc.code != "InvalidPermission.Duplicate":
                    raise
        return group_id

    async def _associate_address(self, host: HostInfo, instance: dict[str, Any], ip: str) -> None:
        reply = await self._call(host, "describe_addresses", PublicIps=[ip])
        address = reply["Addresses"][0]
        if address.get("InstanceId") == instance["InstanceId"]:
            return  # a retried deploy: already done
        target: dict[str, str] = {"InstanceId": instance["InstanceId"]}
        if address.get("AllocationId"):
            target["AllocationId"] = address["AllocationId"]
        else:
            target["PublicIp"] = ip
        await self._call(host, "associate_address", **target)

    async def _start_stopped(self, host: HostInfo, checkpoint: str) -> str:
        if not checkpoint.startswith(CHECKPOINT_PREFIX):
            raise Unsupported(
                "an ec2 host cannot restore a checkpoint saved by another driver",
                hint="terminate and redeploy the VM, or move it with recreate",
            )
        instance_id = checkpoint.removeprefix(CHECKPOINT_PREFIX)
        if await self._instance(host, instance_id) is None:
            raise Unsupported(
                f"EC2 instance {instance_id} is not in {host.name}'s region",
                hint="a stopped instance can only be started where it was stopped",
            )
        await self._call(host, "start_instances", InstanceIds=[instance_id])
        return instance_id

    # -- life-cycle ------------------------------------------------------------------------
    async def shutdown(self, host: HostInfo, deploy_id: str, timeout: float) -> None:
        """TerminateInstances and wait until it is terminated (EC2 shuts the guest down)."""
        await self.destroy(host, deploy_id)
        try:
            await asyncio.wait_for(self._wait(host, deploy_id, ["terminated"]), timeout)
        except TimeoutError as exc:
            raise CloudTimeout(
                f"EC2 instance {deploy_id} not terminated after {timeout:g} s"
            ) from exc

    async def destroy(self, host: HostInfo, deploy_id: str) -> None:
        """TerminateInstances; an instance EC2 no longer knows is already gone."""
        try:
            await self._call(host, "terminate_instances", InstanceIds=[deploy_id])
        except CloudError as exc:
            if exc.code not in _NOT_FOUND:
                raise

    async def reboot(self, host: HostInfo, deploy_id: str, hard: bool) -> None:
        """RebootInstances (EC2 has no separate reset: it hard-reboots a hung guest itself)."""
        await self._call(host, "reboot_instances", InstanceIds=[deploy_id])

    async def suspend(self, host: HostInfo, deploy_id: str) -> None:
        self.check_supported("suspend")

    async def resume(self, host: HostInfo, deploy_id: str) -> InstanceInfo:
        raise Unsupported(f"the ec2 driver cannot resume: {self.unsupported['suspend']}")

    async def save(self, host: HostInfo, deploy_id: str) -> str:
        """StopInstances (disks kept, memory lost) and wait; the checkpoint names it."""
        await self._call(host, "stop_instances", InstanceIds=[deploy_id])
        await self._wait(host, deploy_id, ["stopped"])
        return f"{CHECKPOINT_PREFIX}{deploy_id}"

    async def live_migrate(
        self, source: HostInfo, deploy_id: str, target: HostInfo
    ) -> InstanceInfo:
        self.check_supported("live_migrate")
        raise AssertionError("unreachable")

    async def cleanup(
        self,
        host: HostInfo,
        vm_id: int,
        request_id: str,
        deploy_id: str | None,
        *,
        keep_disks: bool = False,
    ) -> None:
        """Terminate every instance tagged with the VM and delete its port group.
        `keep_disks` (stop, undeploy) keeps a stopped instance for the next deploy."""
        if keep_disks:
            return
        found = await self._instances(
            host,
            [
                {"Name": f"tag:{TAG_VM}", "Values": [str(vm_id)]},
                {"Name": f"tag:{TAG_HOST}", "Values": [host.name]},
                {"Name": "instance-state-name", "Values": [*_LIVE, "shutting-down"]},
            ],
        )
        ids = sorted({str(i["InstanceId"]) for i in found} | ({deploy_id} if deploy_id else set()))
        for instance_id in ids:
            await self.destroy(host, instance_id)
        for instance_id in ids:  # the group cannot go while an instance still uses it
            await self._wait(host, instance_id, ["terminated"])
        await self._delete_port_group(host, vm_id)

    async def _delete_port_group(self, host: HostInfo, vm_id: int) -> None:
        reply = await self._call(
            host,
            "describe_security_groups",
            Filters=[{"Name": "group-name", "Values": [security_group_name(vm_id)]}],
        )
        for group in reply.get("SecurityGroups", []):
            try:
                await self._call(host, "delete_security_group", GroupId=group["GroupId"])
            except CloudError as exc:
                if exc.code not in _NOT_FOUND:
                    raise

    async def close(self) -> None:
        with self._lock:
            self._clients.clear()


def _info(raw: dict[str, Any], sizes: dict[str, TypeSize]) -> InstanceInfo | None:
    """An EC2 instance as Stratus sees it; None when it is gone (terminated)."""
    state = _STATES.get(raw.get("State", {}).get("Name", ""))
    if state is None:
        return None
    size = sizes.get(str(raw.get("InstanceType")))
    address = raw.get("PublicIpAddress") or raw.get("PublicDnsName") or raw.get("PrivateIpAddress")
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
    return InstanceInfo(
        deploy_id=str(raw["InstanceId"]),
        state=state,
        cpu_usage=float(size.vcpu) if size and state is InstanceState.RUNNING else 0.0,
        memory_usage=size.memory if size and state is InstanceState.RUNNING else 0,
        address=address or None,
        extra={
            "instance_type": raw.get("InstanceType"),
            "private_ip": raw.get("PrivateIpAddress"),
            "public_ip": raw.get("PublicIpAddress"),
            "public_dns": raw.get("PublicDnsName"),
            "availability_zone": raw.get("Placement", {}).get("AvailabilityZone"),
            "ec2_state": raw.get("State", {}).get("Name"),
            "vm_id": tags.get(TAG_VM),
        },
    )
