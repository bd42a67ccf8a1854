"""The instance metadata service, as the engine runs it: the server on the data dir's unix
socket, and one proxy per network namespace whose bridge has guests of a local host.

A proxy is started before a VM on a bridge network of a local QEMU or LXC host boots (its
namespace and bridge are made first if missing, as the driver would), and again at start
for the namespaces that already hold leased guests; all stop with the engine. Each time,
the namespace's nftables guard is reloaded from the store: only the address leased to a
bridge port may reach 169.254.169.254 through it (no guest passes for another). Guests on
remote (SSH) hosts get no metadata service: their namespaces are on another machine.
Bridge networks without NETNS get none either: adding 169.254.169.254 to this machine's
own namespace would hide its cloud's metadata service from the host itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from stratus.drivers.access import LocalAccess
from stratus.drivers.base import NicSpec
from stratus.drivers.metadata_proxy import (
    Preamble,
    guard_script,
    guest_ports,
    metadata_socket_path,
    proxy_argv,
)
from stratus.drivers.netdev import ensure_bridge, gateway_cidr
from stratus.engine.metadata_http import MetadataServer, MetadataTokens
from stratus.engine.metadata_tree import (
    InstanceView,
    find_vm_at,
    instance_view,
    namespace_leases,
)
from stratus.engine.runner import DbRunner
from stratus.model.errors import DriverError, StratusError
from stratus.model.records import Host

__all__ = ["MetadataProxies", "MetadataService"]

log = logging.getLogger(__name__)

#: the drivers that put guests on this machine's bridges (others have no bridge here)
BRIDGING_DRIVERS = frozenset({"qemu", "lxc"})
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0
_GUARD_TIMEOUT = 10.0


class MetadataProxies:
    """One proxy process per network namespace, started on demand, stopped together."""

    def __init__(self, socket_path: Path) -> None:
        self._socket = socket_path
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._logs: set[asyncio.Task[None]] = set()

    def running(self, netns: str) -> bool:
        proc = self._procs.get(netns)
        return proc is not None and proc.returncode is None

    async def ensure(self, netns: str) -> None:
        """A proxy listening in `netns` (which must exist); DriverError if it cannot start."""
        async with self._locks.setdefault(netns, asyncio.Lock()):
            if self.running(netns):
                return
            proc = await asyncio.create_subprocess_exec(
                *proxy_argv(netns, self._socket),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C of the daemon's terminal is for the daemon
            )
            assert proc.stdout is not None and proc.stderr is not None
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), _START_TIMEOUT)
            except TimeoutError:
                line = b""
            if line.strip() != b"listening":
                await _end(proc)
                detail = (await proc.stderr.read(2000)).decode(errors="replace").strip()
                raise DriverError(
                    f"the metadata proxy of namespace {netns} did not start: "
                    f"{detail[-400:] or 'no output'}"
                )
            self._procs[netns] = proc
            task = asyncio.create_task(_log_lines(netns, proc.stderr), name=f"imds-{netns}")
            self._logs.add(task)
            task.add_done_callback(self._logs.discard)
            log.info("metadata proxy of namespace %s started (pid %d)", netns, proc.pid)

    async def stop(self) -> None:
        procs, self._procs = list(self._procs.values()), {}
        await asyncio.gather(*(_end(proc) for proc in procs))
        for task in list(self._logs):
            task.cancel()
        await asyncio.gather(*self._logs, return_exceptions=True)


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it is still there after a few seconds."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _log_lines(netns: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        log.warning("metadata proxy %s: %s", netns, line.decode(errors="replace").rstrip()[:300])


class MetadataService:
    """The server and its proxies; `before_boot` is the dispatcher's hook."""

    def __init__(
        self,
        db: DbRunner,
        data_dir: Path,
        default_zone: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._zone = default_zone
        self.socket_path = metadata_socket_path(data_dir)
        self.tokens = MetadataTokens(data_dir, clock)  # the clock: token expiry
        self.server = MetadataServer(self.socket_path, self.tokens, self._identify, self._view)
        self.proxies = MetadataProxies(self.socket_path)
        self._restore: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        """Serve on the socket (an error is logged: the engine runs on without it)."""
        try:
            await self.server.start()
        except OSError as exc:
            log.error("metadata service not started: %s on %s", exc, self.socket_path)
            return
        self._started = True
        self._restore = asyncio.create_task(self._restore_proxies(), name="imds-restore")

    async def stop(self) -> None:
        if self._restore is not None:
            self._restore.cancel()
            await asyncio.gather(self._restore, return_exceptions=True)
        await self.proxies.stop()
        await self.server.stop()
        self._started = False

    async def before_boot(self, host: Host, nics: tuple[NicSpec, ...]) -> None:
        """Make sure the namespaces of a VM's bridge NICs have their proxy and an up-to-date
        guard before it boots; a failure is logged (the VM boots anyway)."""
        if not self._started or host.driver not in BRIDGING_DRIVERS:
            return
        if host.options.get("ssh_host"):
            return
        for nic in nics:
            if nic.driver != "bridge" or not nic.bridge:
                continue
            if not nic.netns:
                log.info("network %s has no NETNS: no metadata service there", nic.network)
                continue
            try:
                if not self.proxies.running(nic.netns):
                    await ensure_bridge(
                        LocalAccess(), nic.bridge, nic.netns, gateway_cidr(nic.gateway, nic.mask)
                    )
                    await self.proxies.ensure(nic.netns)
                await self.guard(nic.netns)
            except (StratusError, OSError) as exc:
                log.warning("no metadata service in namespace %s: %s", nic.netns, exc)

    async def guard(self, netns: str) -> bool:
        """Let only each bridge port's own leased address reach 169.254.169.254 in `netns`
        (nftables); False, logged, when nft is missing or refuses."""
        leases = await self._db.call(namespace_leases, self._db.store, netns)
        ports = [
            (lease.ip, port)
            for lease in leases
            if lease.ip and lease.vm_id is not None
            for port in guest_ports(lease.vm_id, lease.nic_index or 0)
        ]
        result = await LocalAccess().run(
            ["ip", "netns", "exec", netns, "nft", "-f", "-"],
            input=guard_script(ports).encode(),
            timeout=_GUARD_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()[-300:]
            log.warning("no anti-spoofing guard in namespace %s: %s", netns, detail)
        return result.returncode == 0

    async def _restore_proxies(self) -> None:
        """Proxies for the namespaces that hold leased guests already (after a restart)."""
        vnets = await self._db.call(self._db.store.list_vnets, limit=10000)
        for netns in sorted(
            {v.netns for v in vnets if v.driver == "bridge" and v.netns and v.used}
        ):
            if not Path("/run/netns", netns).exists():
                continue
            try:
                await self.proxies.ensure(netns)
                await self.guard(netns)
            except (StratusError, OSError) as exc:
                log.warning("no metadata service in namespace %s: %s", netns, exc)

    async def _identify(self, preamble: Preamble) -> int | None:
        if preamble.vm_id is not None:
            return preamble.vm_id
        assert preamble.src is not None
        return await self._db.call(find_vm_at, self._db.store, preamble.netns, preamble.src)

    async def _view(self, vm_id: int) -> InstanceView:
        return await self._db.call(instance_view, self._db.store, vm_id, self._zone)
