"""The QEMU driver: virtual machines on this machine or on SSH hosts.

One driver object serves every host; it reaches a host only through its `HostAccess`.
On a host, VM directories live in the system datastore (`<ds>/<vm_id>/`: disks, context
CD-ROM, console log, saved states) and each host entry keeps its instances' run files in
`<ds>/.hosts/<host name>/`, so two host entries on one machine (sharing the datastore,
which live migration between them needs) never see each other's instances.

Host options: the AccessPool's (ssh_host, datastore...), `accel=kvm|tcg` to skip the
acceleration probe, `machine=q35|pc`, and `shared_storage=NAME`: hosts naming the same
shared storage see the same VM directories (live migration, cold migration without copy).

Instances are `vm<id>-<hex>`; InstanceInfo.extra holds `ports` (guest port -> forwarded
"127.0.0.1:PORT", user networks), `accel`, `vm_dir`, `pid`, `suspended`, and, for a live
process, `status` (QEMU's run state; "busy" while another QMP client holds the socket).
A checkpoint (save) is the path of `<vm_dir>/checkpoint.state` on the host.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import replace
from pathlib import Path

from stratus.drivers.access import AccessPool, system_datastore
from stratus.drivers.base import (
    DeploySpec,
    Driver,
    HostInfo,
    InstanceInfo,
    InstanceState,
    ProbeResult,
)
from stratus.drivers.hostprobe import read_figures
from stratus.drivers.metadata_proxy import metadata_socket_path, relay_command
from stratus.drivers.qemu_argv import incoming_from_file
from stratus.drivers.qemu_host import (
    AccelInfo,
    AccelProber,
    CpuMeter,
    LiveRecord,
    list_records,
    write_record,
)
from stratus.drivers.qemu_launch import Launcher, Place, launch_for, remove_instance, stage
from stratus.drivers.qemu_ops import (
    STATE_OF_STATUS,
    kill_instance,
    query_status,
    save_state,
    start_migration,
    start_when_loaded,
    wait_gone,
    wait_migration,
)
from stratus.drivers.qmp import qmp_session
from stratus.drivers.transfer import copy_vm_dir, rebase_clones, remove_vm_dir
from stratus.drivers.transfer import save_disk as transfer_save_disk
from stratus.model.errors import DriverError, DriverTimeout, InvalidInput

__all__ = ["QemuDriver"]

_DEPLOY_ID = re.compile(r"^vm(\d+)-[0-9a-f]+$")
_SAVE_TIMEOUT = 600.0
_MIGRATE_TIMEOUT = 600.0
_PROBE_QMP_TIMEOUT = 3.0
_CTRL_ALT_DEL = [{"type": "qcode", "data": key} for key in ("ctrl", "alt", "delete")]


def new_deploy_id(vm_id: int) -> str:
    """A fresh instance id: vm<id>-<6 hex digits>."""
    return f"vm{vm_id}-{secrets.token_hex(3)}"


def vm_id_of(deploy_id: str) -> int:
    """The VM id a deploy id names (its VM directory outlives the instance)."""
    match = _DEPLOY_ID.match(deploy_id)
    if not match:
        raise InvalidInput(f"{deploy_id!r} is not a deploy id of the qemu driver (vm<id>-<hex>)")
    return int(match.group(1))


class QemuDriver(Driver):
    """QEMU virtual machines (KVM when the host has a working one, else TCG)."""

    name = "qemu"

    def __init__(self, data_dir: Path, *, accel_ttl: float = 600.0) -> None:
        super().__init__(Path(data_dir))
        self._pool = AccessPool()
        self._accel = AccelProber(ttl=accel_ttl)
        self._cpu = CpuMeter()

    async def close(self) -> None:
        await self._pool.close()

    # -- where things are --------------------------------------------------------------
    async def _place(self, host: HostInfo) -> Place:
        access = await self._pool.get(host)
        return Place(host, access, system_datastore(host, self.data_dir))

    async def _accel_info(self, place: Place) -> AccelInfo:
        forced = str(place.host.options.get("accel") or "") or None
        return await self._accel.get(place.access, forced)

    async def _launcher(self, place: Place) -> Launcher:
        return Launcher(place, (await self._accel_info(place)).accel)

    async def _find(self, place: Place, deploy_id: str) -> LiveRecord | None:
        for live in await list_records(place.access, place.run_dir):
            if live.record.deploy_id == deploy_id:
                return live
        return None

    async def _running(self, place: Place, deploy_id: str) -> LiveRecord:
        live = await self._find(place, deploy_id)
        if live is None or not live.alive:
            raise DriverError(
                f"instance {deploy_id} is not running on {place.host.name}",
                hint="the monitor will notice; recover the VM if it stays so",
            )
        return live

    # -- life-cycle --------------------------------------------------------------------
    async def prepare(self, host: HostInfo, spec: DeploySpec) -> None:
        await stage(await self._place(host), spec)

    async def deploy(self, host: HostInfo, spec: DeploySpec) -> InstanceInfo:
        place = await self._place(host)
        for live in await list_records(place.access, place.run_dir):
            if live.record.request_id == spec.request_id and live.alive:
                return await self._info(place, live)
            if live.record.vm_id == spec.vm_id and not live.alive and not live.record.suspended:
                await remove_instance(place.access, place.run_dir, live)  # a dead attempt
        launcher = await self._launcher(place)
        source = await self._take_over(spec.source, place, spec.vm_id) if spec.source else None
        staged = await stage(place, spec)
        if source is not None:
            await rebase_clones(place.access, place.ds, place.vm_dir(spec.vm_id), spec.disks)
        relay = self._metadata_relay(place, spec.vm_id)
        launch = launch_for(spec, staged, new_deploy_id(spec.vm_id), place, launcher.accel, relay)
        checkpoint = self._checkpoint_path(place, spec)
        live = await launcher.start(launch, spec.request_id, checkpoint=checkpoint)
        if checkpoint:
            await place.access.run(["rm", "-f", checkpoint])
        if source is not None:
            await remove_vm_dir(source.access, source.vm_dir(spec.vm_id))
        return await self._info(place, live)

    def _metadata_relay(self, place: Place, vm_id: int) -> str | None:
        """The metadata relay of a user-networked VM: only on this machine, where the
        daemon's metadata socket is, and only while it serves."""
        socket_path = metadata_socket_path(self.data_dir)
        if not place.access.is_local or not socket_path.exists():
            return None
        return relay_command(socket_path, vm_id)

    async def _take_over(self, host: HostInfo, place: Place, vm_id: int) -> Place | None:
        """Cold migration: copy the VM directory from the source host unless both see the
        same storage; returns the source place when a copy was made."""
        source = await self._place(host)
        if shares_storage(source, place):
            return None
        await copy_vm_dir(source.access, source.vm_dir(vm_id), place.access, place.vm_dir(vm_id))
        return source

    def _checkpoint_path(self, place: Place, spec: DeploySpec) -> str | None:
        """The checkpoint is a file of the VM directory (copied with it on cold migration)."""
        if not spec.checkpoint:
            return None
        return f"{place.vm_dir(spec.vm_id)}/{os.path.basename(spec.checkpoint)}"

    async def shutdown(self, host: HostInfo, deploy_id: str, timeout: float) -> None:
        place = await self._place(host)
        live = await self._find(place, deploy_id)
        if live is None or not live.alive:
            return
        async with qmp_session(place.access, live.record.qmp) as qmp:
            await qmp.execute("system_powerdown")
        if not await wait_gone(place.access, live.pid, deploy_id, timeout):
            raise DriverTimeout(
                f"instance {deploy_id} still runs {timeout:g} s after the ACPI power button",
                hint="the guest ignores ACPI (no acpid?); it will be powered off hard",
            )

    async def destroy(self, host: HostInfo, deploy_id: str) -> None:
        place = await self._place(host)
        live = await self._find(place, deploy_id)
        if live is not None:
            await remove_instance(place.access, place.run_dir, live)

    async def reboot(self, host: HostInfo, deploy_id: str, hard: bool) -> None:
        place = await self._place(host)
        live = await self._running(place, deploy_id)
        async with qmp_session(place.access, live.record.qmp) as qmp:
            if hard:
                await qmp.execute("system_reset")
            else:
                await qmp.execute("send-key", {"keys": _CTRL_ALT_DEL})

    async def suspend(self, host: HostInfo, deploy_id: str) -> None:
        place = await self._place(host)
        live = await self._find(place, deploy_id)
        if live is not None and live.record.suspended and not live.alive:
            return  # already done
        live = await self._running(place, deploy_id)
        state_file = f"{live.record.launch.vm_dir}/suspend.state"
        await save_state(place.access, live.record.qmp, state_file, _SAVE_TIMEOUT)
        suspended = replace(live.record, suspended=state_file, ports={})
        await write_record(place.access, place.run_dir, suspended)
        await kill_instance(place.access, live.record.qmp, live.pid, deploy_id)

    async def resume(self, host: HostInfo, deploy_id: str) -> InstanceInfo:
        place = await self._place(host)
        live = await self._find(place, deploy_id)
        if live is None:
            raise DriverError(f"instance {deploy_id} is not on {host.name}: nothing to resume")
        state_file = live.record.suspended
        if not live.alive:
            if not state_file:
                raise DriverError(f"instance {deploy_id} is off, not suspended: boot it again")
            launcher = Launcher(place, live.record.launch.accel)
            restart = replace(live.record, ports={})  # still marked suspended until restored
            live = await launcher.start_record(restart, incoming_from_file(state_file))
        if state_file:  # restored (now, or before a crash): the state file is spent
            await place.access.run(["rm", "-f", state_file])
            live = replace(live, record=replace(live.record, suspended=None))
            await write_record(place.access, place.run_dir, live.record)
        return await self._info(place, live)

    async def save(self, host: HostInfo, deploy_id: str) -> str:
        place = await self._place(host)
        checkpoint = f"{place.vm_dir(vm_id_of(deploy_id))}/checkpoint.state"
        live = await self._find(place, deploy_id)
        if live is not None and not live.alive and live.record.suspended:
            await place.access.run(["mv", "-f", live.record.suspended, checkpoint])
        elif live is not None and live.alive:
            await save_state(place.access, live.record.qmp, checkpoint, _SAVE_TIMEOUT)
        if live is not None:
            await remove_instance(place.access, place.run_dir, live)
        if (await place.access.run(["test", "-e", checkpoint], check=False)).returncode != 0:
            raise DriverError(f"instance {deploy_id} is off and left no saved state to restore")
        return checkpoint

    async def live_migrate(
        self, source: HostInfo, deploy_id: str, target: HostInfo
    ) -> InstanceInfo:
        src, dst = await self._place(source), await self._place(target)
        if not shares_storage(src, dst):
            raise DriverError(
                f"cannot live-migrate from {source.name} to {target.name}: they do not share "
                "storage",
                hint="give both hosts the same shared_storage option (on a shared datastore), "
                "or migrate cold",
            )
        live = await self._running(src, deploy_id)
        launcher = await self._launcher(dst)
        if launcher.accel != live.record.launch.accel:
            raise DriverError(
                f"cannot live-migrate a {live.record.launch.accel} guest to {target.name}, "
                f"which runs {launcher.accel}",
                hint="migrate cold, or set the same accel option on both hosts",
            )
        launch = launcher.relaunch(live.record, new_deploy_id(live.record.vm_id))
        address = "127.0.0.1" if dst.access.is_local else str(target.options["ssh_host"])
        incoming = await launcher.start_incoming(launch, live.record.request_id, address)
        try:
            uri = incoming.uri
            await start_migration(src.access, live.record.qmp, uri, stop_first=False)
            await wait_migration(src.access, live.record.qmp, _MIGRATE_TIMEOUT)
        except BaseException:
            await remove_instance(dst.access, dst.run_dir, incoming.live)
            raise
        await remove_instance(src.access, src.run_dir, live)
        await start_when_loaded(dst.access, incoming.live.record.qmp, _SAVE_TIMEOUT)
        return await self._info(dst, incoming.live)

    async def cleanup(
        self,
        host: HostInfo,
        vm_id: int,
        request_id: str,
        deploy_id: str | None,
        *,
        keep_disks: bool = False,
    ) -> None:
        place = await self._place(host)
        for live in await list_records(place.access, place.run_dir):
            if live.record.vm_id == vm_id or live.record.deploy_id == deploy_id:
                await remove_instance(place.access, place.run_dir, live)
        if not keep_disks:
            await remove_vm_dir(place.access, place.vm_dir(vm_id))

    async def console_log(self, host: HostInfo, deploy_id: str, max_bytes: int) -> bytes:
        place = await self._place(host)
        path = f"{place.vm_dir(vm_id_of(deploy_id))}/console.log"
        if (await place.access.run(["test", "-e", path], check=False)).returncode != 0:
            return b""
        return await place.access.read_file(path, max_bytes=max_bytes)

    async def save_disk(self, host: HostInfo, vm_id: int, disk_index: int, dest: str) -> None:
        place = await self._place(host)
        await transfer_save_disk(place.access, place.vm_dir(vm_id), disk_index, dest)

    # -- probe -------------------------------------------------------------------------
    async def probe(self, host: HostInfo) -> ProbeResult:
        place = await self._place(host)
        figures = await read_figures(place.access, place.ds)
        accel = await self._accel_info(place)
        instances = {}
        for live in await list_records(place.access, place.run_dir):
            instances[live.record.deploy_id] = await self._info(place, live)
        self._cpu.forget(host.id, set(instances))
        attributes = figures.attributes() | {
            "HYPERVISOR": "qemu",
            "ACCEL": accel.accel,
            "QEMU_VERSION": accel.version.removeprefix("QEMU emulator version ").split()[0],
        }
        return ProbeResult(
            cpu=figures.cpus,
            memory=figures.memory_mb,
            free_memory=figures.free_memory_mb,
            load=figures.load1,
            attributes=attributes,
            instances=instances,
        )

    async def _info(self, place: Place, live: LiveRecord) -> InstanceInfo:
        record = live.record
        extra: dict[str, object] = {
            "ports": dict(record.ports),
            "accel": record.launch.accel,
            "vm_dir": record.launch.vm_dir,
            "pid": live.pid,
            "suspended": bool(record.suspended),
        }
        if not live.alive:
            state = InstanceState.PAUSED if record.suspended else InstanceState.OFF
            return InstanceInfo(record.deploy_id, state, extra=extra)
        try:
            status = await query_status(place.access, record.qmp, _PROBE_QMP_TIMEOUT)
        except DriverTimeout:
            status = "busy"  # another QMP client (a save or migration) holds the socket
        except DriverError as exc:
            status, extra["error"] = "error", str(exc)
        extra["status"] = status
        return InstanceInfo(
            record.deploy_id,
            STATE_OF_STATUS.get(status, InstanceState.RUNNING),
            cpu_usage=self._cpu.usage(place.host.id, live),
            memory_usage=live.rss_kb // 1024,
            address=record.ports.get("80"),
            extra=extra,
        )


def shares_storage(a: Place, b: Place) -> bool:
    """Both hosts see the same VM directories: one machine and one datastore, or the same
    non-empty shared_storage option."""
    if a.access.is_local and b.access.is_local and os.path.realpath(a.ds) == os.path.realpath(b.ds):
        return True
    name_a, name_b = a.host.options.get("shared_storage"), b.host.options.get("shared_storage")
    return bool(name_a) and name_a == name_b
