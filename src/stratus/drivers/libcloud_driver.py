"""Any compute provider Apache Libcloud supports (OpenStack, GCE, Azure, CloudSigma, EC2...)
as a Stratus host, with the same quota model as the ec2 driver.

Host options (all plain text; credentials never go here):

    provider     a libcloud compute Provider name: ec2, openstack, gce... (required)
    region       the provider's region, passed as `region=`
    endpoint     URL of the API: host, port and secure (https) are derived from it
    capacity     instance quota per size, "m1.small=4,m1.large=1" (required)
    driver_args  JSON object of extra keyword arguments for the libcloud driver
    timeout      seconds per HTTP call (default 30); boot_wait: seconds a deploy waits for
                 the node to run and get an address (default 60); poll_interval (2)

Secrets (HostInfo.secrets): `key` and `secret` (aliases access_key_id, secret_access_key);
any other secret is passed to the libcloud driver as a keyword argument (e.g. `token`).

Every node Stratus creates carries the metadata/tags TAG_VM, TAG_HOST and TAG_REQUEST:
a deploy finds its node again by request id (idempotency), a probe lists its host's nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.drivers.ec2 import BaseEC2NodeDriver
from libcloud.compute.types import NodeState

from stratus.drivers.base import (
    DeploySpec,
    Driver,
    HostInfo,
    InstanceInfo,
    InstanceState,
    ProbeResult,
)
from stratus.drivers.cloud_errors import CloudError, CloudTimeout
from stratus.drivers.ec2_spec import TypeSize
from stratus.drivers.libcloud_spec import (
    CHECKPOINT_PREFIX,
    TAG_HOST,
    TAG_REQUEST,
    TAG_VM,
    LibcloudHost,
    create_arguments,
    driver_class,
    parse_host_options,
    select_section,
    size_of,
    translate_error,
)
from stratus.model.errors import DriverError, StratusError, Unsupported

__all__ = ["LibcloudDriver"]

T = TypeVar("T")

#: libcloud's node states -> Stratus instance states (TERMINATED nodes count as gone)
NODE_STATE_MAP: dict[NodeState, InstanceState] = {
    NodeState.RUNNING: InstanceState.RUNNING,
    NodeState.PENDING: InstanceState.RUNNING,  # booting: the instance exists and is paid for
    NodeState.STARTING: InstanceState.RUNNING,
    NodeState.REBOOTING: InstanceState.RUNNING,
    NodeState.MIGRATING: InstanceState.RUNNING,
    NodeState.RECONFIGURING: InstanceState.RUNNING,
    NodeState.STOPPING: InstanceState.OFF,
    NodeState.STOPPED: InstanceState.OFF,
    NodeState.SUSPENDED: InstanceState.PAUSED,
    NodeState.PAUSED: InstanceState.PAUSED,
    NodeState.ERROR: InstanceState.ERROR,
    NodeState.UNKNOWN: InstanceState.ERROR,  # EC2's shutting-down maps here
}
_SIZE_CACHE_SECONDS = 3600.0


def _tags(node: Node) -> dict[str, str]:
    """A node's tags (EC2, Azure) or metadata (OpenStack; GCE's list of items)."""
    extra = node.extra or {}
    for name in ("tags", "metadata"):
        value = extra.get(name)
        if isinstance(value, dict) and isinstance(value.get("items"), list):  # GCE
            return {str(i.get("key")): str(i.get("value")) for i in value["items"]}
        if isinstance(value, dict) and value:
            return {str(k): str(v) for k, v in value.items()}
    return {}


def _gone(node: Node) -> bool:
    return bool(node.state == NodeState.TERMINATED)


def _nodes(drv: NodeDriver, tags: Mapping[str, str], node_id: str | None = None) -> list[Node]:
    """Nodes carrying all `tags` (and id `node_id`), filtered by the provider where it can."""
    if isinstance(drv, BaseEC2NodeDriver):  # server-side filters: no full listing
        filters = {f"tag:{k}": v for k, v in tags.items()}
        if node_id:
            filters["instance-id"] = node_id
        found = drv.list_nodes(ex_filters=filters)  # type: ignore[arg-type] # libcloud's comment types it str
    else:
        found = drv.list_nodes()
    return [
        n
        for n in found
        if (node_id is None or n.id == node_id)
        and all(_tags(n).get(k) == v for k, v in tags.items())
    ]


def _node(drv: NodeDriver, host: HostInfo, deploy_id: str) -> Node | None:
    """This host's node `deploy_id`, None when it is gone (or belongs to another host)."""
    live = [n for n in _nodes(drv, {TAG_HOST: host.name}, deploy_id) if not _gone(n)]
    return live[0] if live else None


def _info(node: Node, sizes: Mapping[str, TypeSize] | None = None) -> InstanceInfo:
    state = NODE_STATE_MAP.get(node.state, InstanceState.ERROR)
    size = _node_size(node)
    known = (sizes or {}).get(size or "")
    address = next(iter(node.public_ips or []), None) or next(iter(node.private_ips or []), None)
    return InstanceInfo(
        deploy_id=str(node.id),
        state=state,
        cpu_usage=float(known.vcpu) if known and state is InstanceState.RUNNING else 0.0,
        memory_usage=known.memory if known and state is not InstanceState.OFF else 0,
        address=address,
        extra={"provider_state": str(node.state), **({"size": size} if size else {})},
    )


def _has_address(node: Node) -> bool:
    return bool(node.public_ips or node.private_ips)


def _node_size(node: Node) -> str | None:
    extra = node.extra or {}
    for key in ("instance_type", "flavorId", "machineType", "size"):
        if extra.get(key):
            return str(extra[key]).rsplit("/", 1)[-1]
    return str(node.size) if isinstance(node.size, str) else None


class LibcloudDriver(Driver):
    """A public or private cloud through Apache Libcloud; one object serves every host."""

    name = "libcloud"
    unsupported = {
        "suspend": "libcloud has no portable way to keep an instance's memory; use stop "
        "(the provider's stop_node keeps the disks) or poweroff",
        "live_migrate": "a cloud instance cannot move to another host while running; use a "
        "cold migration",
    }

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self._sizes: dict[str, tuple[float, dict[str, TypeSize]]] = {}

    # -- plumbing --------------------------------------------------------------------------
    def _connect(self, cfg: LibcloudHost, host: HostInfo) -> NodeDriver:
        """A libcloud driver for the host (cheap: no network until the first call)."""
        secrets = dict(host.secrets)
        key, key_alias = secrets.pop("key", None), secrets.pop("access_key_id", None)
        secret, secret_alias = secrets.pop("secret", None), secrets.pop("secret_access_key", None)
        key, secret = key or key_alias, secret or secret_alias
        if not key:
            raise CloudError(
                f"host {host.name} has no credential 'key' for libcloud {cfg.provider}",
                code="AuthFailure",
                failover=False,
                hint="give the host its key and secret: stratus host credentials",
            )
        return driver_class(cfg.provider)(key, secret, **cfg.connection_kwargs(secrets))

    async def _call(self, host: HostInfo, action: str, work: Callable[[NodeDriver], T]) -> T:
        """Run blocking libcloud work in a thread; its exceptions become Stratus errors."""
        cfg = parse_host_options(host.options)

        def run() -> T:
            return work(self._connect(cfg, host))

        try:
            return await asyncio.to_thread(run)
        except StratusError:
            raise
        except Exception as exc:  # libcloud raises plain Exception subclasses of all kinds
            raise translate_error(exc, action, cfg.provider, host.secrets.values()) from exc

    def _size_table(
        self, drv: NodeDriver, cfg: LibcloudHost, host: HostInfo
    ) -> dict[str, TypeSize]:
        """vCPU and memory of the capacity's sizes: the provider's list_sizes, else the table."""
        cache_key = f"{host.name}:{sorted(cfg.capacity)}"
        cached = self._sizes.get(cache_key)
        if cached and time.monotonic() - cached[0] < _SIZE_CACHE_SECONDS:
            return cached[1]
        listed = {str(s.id): s for s in drv.list_sizes()}
        listed.update({str(s.name): s for s in listed.values() if s.name and s.name not in listed})
        table = {name: size_of(name, listed.get(name)) for name in cfg.capacity}
        self._sizes[cache_key] = (time.monotonic(), table)
        return table

    async def _wait(
        self, host: HostInfo, deploy_id: str, done: Callable[[Node | None], bool], seconds: float
    ) -> Node | None:
        """Poll the node until `done(node)` (None = gone) or `seconds` pass; the last node."""
        cfg = parse_host_options(host.options)
        deadline = time.monotonic() + seconds
        while True:
            node = await self._call(host, "describe", lambda d: _node(d, host, deploy_id))
            if done(node) or time.monotonic() >= deadline:
                return node
            await asyncio.sleep(min(cfg.poll_interval, max(deadline - time.monotonic(), 0.0)))

    async def _settled(self, host: HostInfo, node: Node) -> InstanceInfo:
        """Wait (up to boot_wait) until the node runs with an address; its InstanceInfo."""
        cfg = parse_host_options(host.options)

        def ready(n: Node | None) -> bool:
            return n is None or (n.state != NodeState.PENDING and _has_address(n))

        if not (node.state == NodeState.RUNNING and _has_address(node)):
            found = await self._wait(host, str(node.id), ready, cfg.boot_wait)
            if found is None:
                raise CloudError(
                    f"instance {node.id} vanished while booting on {host.name}",
                    code="InstanceTerminated",
                    failover=True,
                    hint="the provider terminated it; see its console for the reason",
                )
            node = found
        return _info(node)

    # -- Driver ----------------------------------------------------------------------------
    async def probe(self, host: HostInfo) -> ProbeResult:
        cfg = parse_host_options(host.options)

        def work(drv: NodeDriver) -> tuple[dict[str, TypeSize], list[Node], str]:
            sizes = self._size_table(drv, cfg, host)
            nodes = [n for n in _nodes(drv, {TAG_HOST: host.name}) if not _gone(n)]
            return sizes, nodes, str(getattr(drv, "country", "") or "")

        sizes, nodes, country = await self._call(host, "probe", work)
        cpu = sum(sizes[name].vcpu * count for name, count in cfg.capacity.items())
        memory = sum(sizes[name].memory * count for name, count in cfg.capacity.items())
        instances = {str(n.id): _info(n, sizes) for n in nodes}
        used = sum(i.memory_usage for i in instances.values())
        attributes = {
            "PUBLIC_CLOUD": "YES",
            "PROVIDER": cfg.provider,
            "HYPERVISOR": f"libcloud-{cfg.provider}",
        }
        if cfg.region:
            attributes["REGION"] = cfg.region
        if country:
            attributes["COUNTRY"] = country
        return ProbeResult(
            cpu=float(cpu),
            memory=memory,
            free_memory=max(memory - used, 0),
            attributes=attributes,
            instances=instances,
        )

    async def deploy(self, host: HostInfo, spec: DeploySpec) -> InstanceInfo:
        if spec.checkpoint is not None:
            return await self._restore(host, spec.checkpoint)
        cfg = parse_host_options(host.options)
        section = select_section(spec.template, cfg.provider, cfg.region)

        def work(drv: NodeDriver) -> Node:
            mine = {TAG_HOST: host.name, TAG_REQUEST: spec.request_id}
            existing = _nodes(drv, mine)
            live = [n for n in existing if not _gone(n)]
            if live:  # a retried deploy: never a second node
                return live[0]
            if existing:
                raise DriverError(
                    f"the instance of request {spec.request_id} was terminated outside Stratus",
                    hint="recover the VM with --recreate to deploy a new one",
                )
            sizes = {str(s.id): s for s in drv.list_sizes()}
            kwargs = create_arguments(drv, cfg, section, spec, host.name)
            size_id = kwargs.pop("size")
            kwargs["size"] = sizes.get(size_id) or NodeSize(
                id=size_id, name=size_id, ram=0, disk=0, bandwidth=None, price=0.0, driver=drv
            )
            image_id = kwargs.pop("image")
            kwargs["image"] = NodeImage(id=image_id, name=image_id, driver=drv)
            node = drv.create_node(**kwargs)
            return node[0] if isinstance(node, list) else node

        return await self._settled(host, await self._call(host, "deploy", work))

    async def _restore(self, host: HostInfo, checkpoint: str) -> InstanceInfo:
        """Start the node a save() stopped (the checkpoint names it)."""
        if not checkpoint.startswith(CHECKPOINT_PREFIX):
            raise DriverError(f"checkpoint {checkpoint!r} is not a libcloud stopped node")
        deploy_id = checkpoint.removeprefix(CHECKPOINT_PREFIX)

        def work(drv: NodeDriver) -> Node:
            node = _node(drv, host, deploy_id)
            if node is None:
                raise DriverError(
                    f"the stopped instance {deploy_id} is not on {host.name}",
                    hint="a stopped cloud instance restarts only where it was; recover the VM "
                    "with --recreate to deploy a new one",
                )
            if node.state in (NodeState.STOPPED, NodeState.STOPPING):
                drv.start_node(node)
            return node

        node = await self._call(host, "start", work)
        cfg = parse_host_options(host.options)
        found = await self._wait(
            host, str(node.id), lambda n: n is None or n.state == NodeState.RUNNING, cfg.boot_wait
        )
        if found is None:
            raise DriverError(f"instance {deploy_id} vanished while starting on {host.name}")
        return _info(found)

    async def shutdown(self, host: HostInfo, deploy_id: str, timeout: float) -> None:
        await self.destroy(host, deploy_id)
        last = await self._wait(host, deploy_id, lambda n: n is None, timeout)
        if last is not None:
            raise CloudTimeout(f"instance {deploy_id} is still {last.state} after {timeout:g} s")

    async def destroy(self, host: HostInfo, deploy_id: str) -> None:
        def work(drv: NodeDriver) -> None:
            node = _node(drv, host, deploy_id)
            if node is not None:  # gone already: success
                drv.destroy_node(node)

        await self._call(host, "destroy", work)

    async def reboot(self, host: HostInfo, deploy_id: str, hard: bool) -> None:
        # libcloud's reboot_node has no hard/soft switch: the provider decides
        def work(drv: NodeDriver) -> None:
            node = _node(drv, host, deploy_id)
            if node is None:
                raise DriverError(f"instance {deploy_id} does not exist on {host.name}")
            drv.reboot_node(node)

        await self._call(host, "reboot", work)

    async def suspend(self, host: HostInfo, deploy_id: str) -> None:
        self.check_supported("suspend")

    async def resume(self, host: HostInfo, deploy_id: str) -> InstanceInfo:
        raise Unsupported("the libcloud driver cannot resume: it never suspends")

    async def save(self, host: HostInfo, deploy_id: str) -> str:
        def work(drv: NodeDriver) -> None:
            if type(drv).stop_node is NodeDriver.stop_node:
                raise Unsupported(
                    f"libcloud's {drv.name} driver cannot stop a node (no stop_node)",
                    hint="use poweroff or terminate",
                )
            node = _node(drv, host, deploy_id)
            if node is None:
                raise DriverError(f"instance {deploy_id} does not exist on {host.name}")
            if node.state not in (NodeState.STOPPED, NodeState.STOPPING):  # a retried save
                drv.stop_node(node)

        await self._call(host, "stop", work)
        cfg = parse_host_options(host.options)
        last = await self._wait(
            host, deploy_id, lambda n: n is None or n.state == NodeState.STOPPED, cfg.boot_wait
        )
        if last is None or last.state != NodeState.STOPPED:
            raise CloudTimeout(f"instance {deploy_id} did not stop within {cfg.boot_wait:g} s")
        return CHECKPOINT_PREFIX + deploy_id

    async def live_migrate(
        self, source: HostInfo, deploy_id: str, target: HostInfo
    ) -> InstanceInfo:
        self.check_supported("live_migrate")
        raise AssertionError("unreachable")  # check_supported raised

    async def cleanup(
        self,
        host: HostInfo,
        vm_id: int,
        request_id: str,
        deploy_id: str | None,
        *,
        keep_disks: bool = False,
    ) -> None:
        """Destroy every node of the VM on this host; `keep_disks` spares stopped ones (a
        save's checkpoint, restarted by the next deploy)."""

        def work(drv: NodeDriver) -> None:
            for node in _nodes(drv, {TAG_HOST: host.name, TAG_VM: str(vm_id)}):
                if _gone(node) or (keep_disks and node.state == NodeState.STOPPED):
                    continue
                drv.destroy_node(node)

        await self._call(host, "cleanup", work)
