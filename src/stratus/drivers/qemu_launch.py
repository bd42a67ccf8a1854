"""Starting QEMU instances on a host: staging, the run record, the process, its ports.

`stage` puts what an instance needs in its VM directory (idempotent: prepare and
deploy both call it). `Launcher.start` records the instance in its run file first, then
starts QEMU daemonized, so a crash at any point leaves a run file that names the process
(or a dead attempt that the next deploy clears).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from stratus.drivers.access import HostAccess, command_error
from stratus.drivers.base import DeploySpec, HostInfo
from stratus.drivers.contextiso import build_context_iso
from stratus.drivers.netdev import add_tap, delete_link, ensure_bridge, gateway_cidr, tap_name
from stratus.drivers.qemu_argv import (
    Drive,
    Launch,
    Nic,
    build_argv,
    incoming_from_file,
)
from stratus.drivers.qemu_host import (
    LiveRecord,
    RunRecord,
    qmp_socket_path,
    remove_run_files,
    write_record,
)
from stratus.drivers.qemu_ops import kill_instance, read_forwards, start_when_loaded
from stratus.drivers.qmp import qmp_session
from stratus.drivers.transfer import prepare_disks, qemu_format, stage_file
from stratus.model.errors import DriverError, InvalidInput

__all__ = ["Incoming", "Launcher", "Place", "Staged", "launch_for", "remove_instance", "stage"]

_START_TIMEOUT = 60.0  # QEMU daemonizes once its devices are set up
_LOAD_TIMEOUT = 600.0  # loading a saved state


@dataclass(frozen=True)
class Place:
    """A host entry as the driver sees it: its access, datastore and run directory."""

    host: HostInfo
    access: HostAccess
    ds: str

    @property
    def run_dir(self) -> str:
        return f"{self.ds}/.hosts/{self.host.name.replace('/', '_')}"

    def vm_dir(self, vm_id: int) -> str:
        return f"{self.ds}/{vm_id}"


@dataclass(frozen=True)
class Staged:
    """What stage() made ready on the host: disks in guest order, kernel and initrd."""

    drives: tuple[Drive, ...]
    kernel: str | None
    initrd: str | None


@dataclass(frozen=True)
class Incoming:
    """A QEMU waiting for a live migration, and the URI the source sends to."""

    live: LiveRecord
    uri: str


def launch_for(
    spec: DeploySpec,
    staged: Staged,
    deploy_id: str,
    place: Place,
    accel: str,
    metadata_relay: str | None = None,
) -> Launch:
    """The Launch of a new instance of `spec` on `place`; user NICs get `metadata_relay`
    (the command relaying guest connections to the metadata service) when given."""
    nics = tuple(
        Nic(
            index=nic.index,
            driver=nic.driver,
            mac=nic.mac,
            ip=nic.ip,
            network_address=nic.network_address,
            mask=nic.mask,
            gateway=nic.gateway,
            ports=tuple(nic.ports),
            tap=tap_name(spec.vm_id, nic.index) if nic.driver == "bridge" else None,
            bridge=nic.bridge,
            metadata_relay=metadata_relay if nic.driver == "user" else None,
        )
        for nic in spec.nics
    )
    namespaces = {nic.netns for nic in spec.nics if nic.driver == "bridge" and nic.netns}
    if len(namespaces) > 1:
        raise InvalidInput(
            f"VM {spec.vm_id} has NICs in several network namespaces ({', '.join(namespaces)})",
            hint="a QEMU process lives in one namespace: use networks of one namespace",
        )
    return Launch(
        deploy_id=deploy_id,
        vm_id=spec.vm_id,
        vm_dir=place.vm_dir(spec.vm_id),
        accel=accel,
        memory=spec.memory,
        vcpu=spec.vcpu,
        machine=str(place.host.options.get("machine") or "q35"),
        drives=staged.drives,
        nics=nics,
        kernel=staged.kernel,
        initrd=staged.initrd,
        append=spec.boot.cmdline if spec.boot else "",
        netns=namespaces.pop() if namespaces else None,
    )


async def stage(place: Place, spec: DeploySpec) -> Staged:
    """Disks, context CD-ROM, kernel and initrd in place; what exists is kept (the
    context CD-ROM is written again: it follows the current spec)."""
    access, ds, vm_dir = place.access, place.ds, place.vm_dir(spec.vm_id)
    paths = await prepare_disks(access, ds, vm_dir, spec.disks)
    drives = [
        Drive(
            path,
            qemu_format(disk) if disk.persistent or disk.type == "CDROM" else "qcow2",
            readonly=disk.readonly or disk.type == "CDROM",
        )
        for path, disk in zip(paths, spec.disks, strict=True)
    ]
    if spec.context is not None:
        iso = f"{vm_dir}/context.iso"
        await access.write_file(iso, build_context_iso(spec.context), mode=0o600)
        drives.append(Drive(iso, "raw", readonly=True))
    boot = spec.boot
    kernel = await stage_file(access, ds, boot.kernel) if boot and boot.kernel else None
    initrd = await stage_file(access, ds, boot.initrd) if boot and boot.initrd else None
    return Staged(tuple(drives), kernel, initrd)


class Launcher:
    """Starts instances on one place with one accelerator."""

    def __init__(self, place: Place, accel: str) -> None:
        self.place = place
        self.accel = accel

    def new_record(self, launch: Launch, request_id: str) -> RunRecord:
        taps = tuple(nic.tap for nic in launch.nics if nic.tap)
        return RunRecord(
            deploy_id=launch.deploy_id,
            request_id=request_id,
            vm_id=launch.vm_id,
            launch=launch,
            qmp=qmp_socket_path(self.place.run_dir, launch.deploy_id),
            taps=taps,
        )

    async def start(
        self, launch: Launch, request_id: str, *, checkpoint: str | None = None
    ) -> LiveRecord:
        """A new instance of `launch`, booted, or restored from `checkpoint` and running."""
        record = self.new_record(launch, request_id)
        return await self.start_record(
            record, incoming_from_file(checkpoint) if checkpoint else None
        )

    async def start_record(self, record: RunRecord, incoming: str | None) -> LiveRecord:
        """Start QEMU for a run record (written first); running when `incoming` restores a
        file, waiting for a migration when it is "defer"."""
        access, run_dir = self.place.access, self.place.run_dir
        await self._make_taps(record.launch)
        await write_record(access, run_dir, record)
        pid_path = f"{run_dir}/{record.deploy_id}.pid"
        socket_dir = record.qmp.rsplit("/", 1)[0]
        if socket_dir != run_dir:  # the short socket folder (deep data directories)
            await access.run(["mkdir", "-p", socket_dir])
        argv = build_argv(record.launch, record.qmp, pid_path, incoming)
        result = await access.run(argv, timeout=_START_TIMEOUT, check=False)
        if result.returncode != 0:
            await remove_run_files(access, run_dir, record)
            raise command_error(argv, access.where, result)
        pid = int((await access.read_file(pid_path)).decode().strip() or 0)
        live = LiveRecord(record, pid, True)
        try:
            if incoming and incoming != "defer":
                await start_when_loaded(access, record.qmp, _LOAD_TIMEOUT)
            return await self.settle(live)
        except BaseException:
            await remove_instance(access, run_dir, live)
            raise

    async def settle(self, live: LiveRecord) -> LiveRecord:
        """Read the forwarded ports QEMU bound and keep them in the run record."""
        ports = {}
        if any(nic.driver == "user" and nic.ports for nic in live.record.launch.nics):
            ports = await read_forwards(self.place.access, live.record.qmp)
        record = replace(live.record, ports=ports)
        await write_record(self.place.access, self.place.run_dir, record)
        return replace(live, record=record)

    def relaunch(self, source: RunRecord, deploy_id: str) -> Launch:
        """The launch of a migration target: same machine and disks, a new deploy id, this
        host's accelerator, and taps other than the source's (the source may be on this
        machine and still holds its own)."""
        nics = tuple(
            replace(nic, tap=_other_tap(nic.tap, source.taps)) if nic.tap else nic
            for nic in source.launch.nics
        )
        return replace(source.launch, deploy_id=deploy_id, accel=self.accel, nics=nics)

    async def start_incoming(self, launch: Launch, request_id: str, address: str) -> Incoming:
        """A QEMU listening for a live migration on `address` (a port its kernel picks)."""
        live = await self.start_record(self.new_record(launch, request_id), "defer")
        try:
            async with qmp_session(self.place.access, live.record.qmp) as qmp:
                await qmp.execute("migrate-incoming", {"uri": f"tcp:{address}:0"})
                info = await qmp.execute("query-migrate") or {}
            sockets = info.get("socket-address") or []
            if not sockets:
                raise DriverError(f"the migration target on {self.place.host.name} listens nowhere")
            port = sockets[0]["port"]
        except BaseException:
            await remove_instance(self.place.access, self.place.run_dir, live)
            raise
        return Incoming(live, f"tcp:{address}:{port}")

    async def _make_taps(self, launch: Launch) -> None:
        access = self.place.access
        for nic in launch.nics:
            if nic.tap and nic.bridge:
                await ensure_bridge(
                    access, nic.bridge, launch.netns, gateway_cidr(nic.gateway, nic.mask)
                )
                await add_tap(access, nic.tap, nic.bridge, launch.netns)
            elif nic.tap:
                raise InvalidInput(f"NIC {nic.index} is on a bridge network without a bridge")


def _other_tap(tap: str, taken: tuple[str, ...]) -> str:
    """A tap name for a migration target: `stq...` when the source uses `stp...`."""
    if tap not in taken:
        return tap
    return ("stq" if tap.startswith("stp") else "stp") + tap[3:]


async def remove_instance(access: HostAccess, run_dir: str, live: LiveRecord) -> None:
    """End an instance's process, delete its taps and run files; gone already is fine."""
    record = live.record
    await kill_instance(access, record.qmp, live.pid, record.deploy_id)
    for tap in record.taps:
        await delete_link(access, tap, record.launch.netns)
    await remove_run_files(access, run_dir, record)
