"""The QEMU driver against the real appliance (TCG when KVM does not work here).

Three guests boot together once for the module, and the tests walk them through their
lives in file order; each test says what state it expects and leaves:

  web1   user networking, port 80 forwarded to 127.0.0.1. Host entries qa and qb are this
         machine and share its datastore; qc is reached over SSH (an sshd on 127.0.0.1)
         and has a datastore of its own. web1 goes qa -> suspend/resume -> live
         migration -> qb -> save -> cold migration (a copy) -> qc -> graceful shutdown
         -> cleanup.
  stub2  ignores the ACPI power button (START_SCRIPT="killall acpid"): pause, a soft
         reboot, a graceful shutdown that times out, destroy.
  br3    on a bridge inside a network namespace of the test's own: a hard reboot, destroy.

The module's finalizer cleans every VM up on every host entry, kills any QEMU left with the
test's data directory on its command line, and deletes the namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from stratus.appliance import Appliance
from stratus.drivers.access import LocalAccess
from stratus.drivers.base import (
    BootSpec,
    DeploySpec,
    DiskSpec,
    HostInfo,
    InstanceInfo,
    InstanceState,
    NicSpec,
)
from stratus.drivers.qemu import QemuDriver
from stratus.drivers.qmp import qmp_session
from stratus.model.errors import DriverError, DriverTimeout
from tests.appliance_support import ensure_appliance
from tests.netns import Netns, new_netns
from tests.sshd import ssh_server

pytestmark = pytest.mark.slow

T = TypeVar("T")
MASK, GATEWAY = "255.255.255.0", "192.168.150.1"
BOOT_TIMEOUT = 120.0  # TCG on a busy 2-core machine


@dataclass
class Vm:
    """A guest of the module and where it is now."""

    spec: DeploySpec
    host: HostInfo
    info: InstanceInfo

    @property
    def deploy_id(self) -> str:
        return self.info.deploy_id


@dataclass
class Lab:
    driver: QemuDriver
    data_dir: Path
    appliance: Appliance
    ns: Netns
    qa: HostInfo
    qb: HostInfo
    qc: HostInfo
    vms: dict[str, Vm] = field(default_factory=dict)
    #: one event loop for the module: the driver keeps SSH connections bound to it
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def spec(self, vm_id: int, name: str, *, driver: str = "user", extra: str = "") -> DeploySpec:
        ip, mac = f"192.168.150.{100 + vm_id}", f"02:00:c0:a8:96:{100 + vm_id:02x}"
        context = (
            f"VMID='{vm_id}'\nNAME='{name}'\nSET_HOSTNAME='{name}'\nETH0_MAC='{mac}'\n"
            f"ETH0_IP='{ip}'\nETH0_MASK='{MASK}'\nETH0_GATEWAY='{GATEWAY}'\n{extra}"
        )
        app = self.appliance
        nic = NicSpec(
            index=0, network="net", driver=driver, mac=mac, ip=ip,
            network_address="192.168.150.0", mask=MASK, gateway=GATEWAY,
            ports=(80,) if driver == "user" else (),
            bridge="sqbr0" if driver == "bridge" else None,
            netns=self.ns.name if driver == "bridge" else None,
        )  # fmt: skip
        return DeploySpec(
            request_id=f"vm-{vm_id}-1", vm_id=vm_id, name=name, cpu=0.5, vcpu=1, memory=192,
            template={},
            disks=(DiskSpec(0, 1, "appliance", str(app.disk), "qcow2", "OS", False),),
            nics=(nic,),
            boot=BootSpec(str(app.kernel), str(app.initrd), app.cmdline),
            context={"context.sh": context.encode()},
        )  # fmt: skip

    def vm_dir(self, vm_id: int, host: HostInfo | None = None) -> Path:
        if host is not None and host.options.get("datastore"):
            return Path(host.options["datastore"]) / str(vm_id)
        return self.data_dir / "datastores" / "system" / str(vm_id)


async def http_get(address: str) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            answer = await client.get(f"http://{address}/")
        return dict(answer.json()) if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


async def wait_answer(address: str, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await http_get(address)
        if answer is not None:
            return answer
        await asyncio.sleep(0.3)
    raise AssertionError(f"nothing answered HTTP on {address} within {timeout:g} s")


def uptime(lab: Lab, vm: Vm) -> float:
    assert vm.info.address
    return float(lab.run(wait_answer(vm.info.address, 30))["uptime"])


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def qemu_pids(data_dir: Path) -> list[int]:
    """QEMU processes whose command line names the test's data directory."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline and str(data_dir).encode() in cmdline:
                pids.append(int(entry))
    return pids


def _boot_all(lab: Lab) -> None:
    async def boot(key: str, host: HostInfo, spec: DeploySpec) -> None:
        await lab.driver.prepare(host, spec)
        info = await lab.driver.deploy(host, spec)
        lab.vms[key] = Vm(spec, host, info)
        if info.address:
            await wait_answer(info.address)

    async def all_three() -> None:
        await asyncio.gather(
            lab.driver.probe(lab.qc),  # qc's acceleration probe, while the guests boot
            boot("web1", lab.qa, lab.spec(1, "web1")),
            boot("stub2", lab.qa, lab.spec(2, "stub2", extra="START_SCRIPT='killall acpid'\n")),
            boot("br3", lab.qa, lab.spec(3, "br3", driver="bridge")),
        )

    lab.run(all_three())


def _clean_up(lab: Lab) -> None:
    async def cleanup() -> None:
        for host in (lab.qa, lab.qb, lab.qc):
            for vm_id in (1, 2, 3):
                try:
                    await lab.driver.cleanup(host, vm_id, f"vm-{vm_id}-1", None)
                except DriverError as exc:  # keep going: the kill below is the backstop
                    print(f"cleanup of VM {vm_id} on {host.name} failed: {exc}")
        await lab.driver.close()

    try:
        lab.run(cleanup())
    finally:
        lab.loop.close()
        for pid in qemu_pids(lab.data_dir):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    appliance = ensure_appliance()
    data_dir = Path(tempfile.mkdtemp(prefix="stq-", dir="/tmp"))  # short: QMP socket paths
    with new_netns("sq") as ns, ssh_server() as sshd:
        lab = Lab(
            driver=QemuDriver(data_dir),
            data_dir=data_dir,
            appliance=appliance,
            ns=ns,
            qa=HostInfo(1, "qa", {}, {}),
            qb=HostInfo(2, "qb", {}, {}),
            qc=HostInfo(3, "qc", {**sshd.options, "datastore": str(data_dir / "ds-c")}, {}),
        )
        try:
            _boot_all(lab)
            yield lab
        finally:
            try:
                _clean_up(lab)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)


# -- web1: user networking, suspend, migrations, shutdown, cleanup ------------------------
def test_a_deployed_vm_serves_its_context_on_a_forwarded_loopback_port(lab: Lab) -> None:
    web = lab.vms["web1"]
    ports = web.info.extra["ports"]
    assert web.info.address == ports["80"] and ports["80"].startswith("127.0.0.1:")
    answer = lab.run(wait_answer(ports["80"]))
    assert answer["name"] == "web1" and answer["ip"] == "192.168.150.101"
    assert answer["vmid"] == "1"
    assert sorted(os.listdir(lab.vm_dir(1))) == ["console.log", "context.iso", "disk.0"]


def test_deploying_the_same_request_again_returns_the_running_instance(lab: Lab) -> None:
    web = lab.vms["web1"]
    again = lab.run(lab.driver.deploy(web.host, web.spec))
    assert again.deploy_id == web.deploy_id
    probe = lab.run(lab.driver.probe(lab.qa))
    assert sorted(probe.instances) == sorted(vm.deploy_id for vm in lab.vms.values())


def test_probe_reports_the_host_and_its_running_and_paused_instances(lab: Lab) -> None:
    stub = lab.vms["stub2"]
    probe = lab.run(lab.driver.probe(lab.qa))
    assert probe.cpu >= 1 and probe.memory > probe.free_memory > 0
    attrs = probe.attributes
    assert attrs["HYPERVISOR"] == "qemu" and attrs["ACCEL"] in ("kvm", "tcg")
    assert attrs["QEMU_VERSION"][0].isdigit() and "DISK_FREE_MB" in attrs
    running = probe.instances[stub.deploy_id]
    assert running.state is InstanceState.RUNNING and 50 < running.memory_usage < 400
    lab.run(_qmp(lab, stub, "stop"))
    try:
        paused = lab.run(lab.driver.probe(lab.qa)).instances[stub.deploy_id]
        assert paused.state is InstanceState.PAUSED and paused.extra["status"] == "paused"
    finally:
        lab.run(_qmp(lab, stub, "cont"))
    assert (
        lab.run(lab.driver.probe(lab.qa)).instances[stub.deploy_id].state is InstanceState.RUNNING
    )


async def _qmp(lab: Lab, vm: Vm, command: str) -> None:
    run_dir = lab.data_dir / "datastores" / "system" / ".hosts" / vm.host.name
    socket = run_dir / f"{vm.deploy_id}.qmp"
    async with qmp_session(LocalAccess(), str(socket)) as qmp:
        await qmp.execute(command)


def test_suspend_and_resume_continue_the_guest_where_it_stopped(lab: Lab) -> None:
    web = lab.vms["web1"]
    before = uptime(lab, web)
    lab.run(lab.driver.suspend(web.host, web.deploy_id))
    state_file = lab.vm_dir(1) / "suspend.state"
    assert state_file.is_file()
    suspended = lab.run(lab.driver.probe(web.host)).instances[web.deploy_id]
    assert suspended.state is InstanceState.PAUSED and suspended.extra["suspended"] is True
    lab.run(lab.driver.suspend(web.host, web.deploy_id))  # again: already done
    web.info = lab.run(lab.driver.resume(web.host, web.deploy_id))
    assert web.info.state is InstanceState.RUNNING and not state_file.exists()
    after = uptime(lab, web)
    assert before < after < before + 30  # the same boot, not a new one


def test_live_migration_needs_shared_storage(lab: Lab) -> None:
    web = lab.vms["web1"]
    with pytest.raises(DriverError, match="do not share storage"):
        lab.run(lab.driver.live_migrate(web.host, web.deploy_id, lab.qc))
    assert uptime(lab, web) > 0  # still running where it was


def test_live_migration_between_host_entries_keeps_the_guest_answering(lab: Lab) -> None:
    web = lab.vms["web1"]
    target = lab.qb if web.host is lab.qa else lab.qa  # the other entry of this machine
    before, started = uptime(lab, web), time.monotonic()
    old = web.host, web.deploy_id
    web.info, web.host = lab.run(lab.driver.live_migrate(*old, target)), target
    elapsed = time.monotonic() - started
    assert web.deploy_id != old[1]
    after = uptime(lab, web)
    assert before < after < before + elapsed + 30
    assert old[1] not in lab.run(lab.driver.probe(old[0])).instances
    moved = lab.run(lab.driver.probe(target)).instances[web.deploy_id]
    assert moved.state is InstanceState.RUNNING


def test_cold_migration_without_shared_storage_restores_on_the_target(lab: Lab) -> None:
    web = lab.vms["web1"]
    before = uptime(lab, web)
    checkpoint = lab.run(lab.driver.save(web.host, web.deploy_id))
    assert checkpoint == str(lab.vm_dir(1) / "checkpoint.state") and Path(checkpoint).is_file()
    assert lab.run(lab.driver.save(web.host, web.deploy_id)) == checkpoint  # again: the same
    assert web.deploy_id not in lab.run(lab.driver.probe(web.host)).instances
    spec = replace(web.spec, request_id="vm-1-1-m", checkpoint=checkpoint, source=web.host)
    web.info, web.host = lab.run(lab.driver.deploy(lab.qc, spec)), lab.qc
    after = uptime(lab, web)
    assert before < after < before + 60
    assert not lab.vm_dir(1).exists()  # moved, not copied
    moved = lab.vm_dir(1, lab.qc)
    assert sorted(os.listdir(moved)) == ["console.log", "context.iso", "disk.0"]
    backing = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(moved / "disk.0")],
            capture_output=True, timeout=30, check=True,
        ).stdout
    )["backing-filename"]  # fmt: skip
    assert backing == str(moved.parent / ".images" / "1" / "appliance.qcow2")


def test_graceful_shutdown_returns_when_the_guest_powers_off(lab: Lab) -> None:
    web = lab.vms["web1"]
    started = time.monotonic()
    lab.run(lab.driver.shutdown(web.host, web.deploy_id, 60))
    assert time.monotonic() - started < 60
    off = lab.run(lab.driver.probe(web.host)).instances[web.deploy_id]
    assert off.state is InstanceState.OFF
    log = lab.run(lab.driver.console_log(web.host, web.deploy_id, 4096))
    assert b"reboot: Power down" in log
    lab.run(lab.driver.destroy(web.host, web.deploy_id))
    assert web.deploy_id not in lab.run(lab.driver.probe(web.host)).instances


def test_cleanup_leaves_no_process_and_no_vm_directory(lab: Lab) -> None:
    web = lab.vms["web1"]
    lab.run(lab.driver.cleanup(web.host, 1, web.spec.request_id, web.deploy_id))
    lab.run(lab.driver.cleanup(web.host, 1, web.spec.request_id, None))  # again: fine
    assert not lab.vm_dir(1, web.host).exists()
    assert not any(b"/1/disk.0" in Path(f"/proc/{p}/cmdline").read_bytes()
                   for p in qemu_pids(lab.data_dir))  # fmt: skip


# -- stub2: reboots and a guest that ignores the power button -------------------------------
def _boots(lab: Lab, vm: Vm) -> int:
    log = lab.run(lab.driver.console_log(vm.host, vm.deploy_id, 1 << 20))
    return log.count(b"booting the Stratus appliance")


def test_soft_and_hard_reboots_restart_the_guest(lab: Lab) -> None:
    """stub2 reboots through ctrl-alt-delete, br3 by reset, both at once (to save time)."""
    soft, hard = lab.vms["stub2"], lab.vms["br3"]
    boots = {vm.deploy_id: _boots(lab, vm) for vm in (soft, hard)}
    lab.run(lab.driver.reboot(soft.host, soft.deploy_id, False))
    lab.run(lab.driver.reboot(hard.host, hard.deploy_id, True))
    for vm in (soft, hard):
        wait_for(
            lambda vm=vm: _boots(lab, vm) > boots[vm.deploy_id],
            BOOT_TIMEOUT,
            f"{vm.spec.name} to boot again",
        )
    assert uptime(lab, soft) < 60


def test_shutdown_times_out_when_the_guest_ignores_acpi(lab: Lab) -> None:
    stub = lab.vms["stub2"]

    def start_script_ran() -> bool:
        log = lab.run(lab.driver.console_log(stub.host, stub.deploy_id, 1 << 20))
        return b"START_SCRIPT exited" in log.rsplit(b"booting the Stratus appliance", 1)[-1]

    wait_for(start_script_ran, BOOT_TIMEOUT, "START_SCRIPT (killall acpid) to run")
    with pytest.raises(DriverTimeout, match="ACPI"):
        lab.run(lab.driver.shutdown(stub.host, stub.deploy_id, 3))
    assert uptime(lab, stub) > 0  # still up
    lab.run(lab.driver.destroy(stub.host, stub.deploy_id))
    lab.run(lab.driver.destroy(stub.host, stub.deploy_id))  # gone already: fine
    assert stub.deploy_id not in lab.run(lab.driver.probe(stub.host)).instances
    assert (lab.vm_dir(2) / "disk.0").exists()  # destroy keeps the VM directory


# -- br3: bridge networking in the test's namespace ----------------------------------------
def test_a_vm_on_a_bridge_answers_inside_its_namespace(lab: Lab) -> None:
    br = lab.vms["br3"]
    answer = wait_for(
        lambda: lab.ns.http_get("http://192.168.150.103/"), BOOT_TIMEOUT, "br3 to answer"
    )
    assert json.loads(answer)["name"] == "br3"
    assert "stp3n0" in lab.ns.links("tun")
    lab.run(lab.driver.destroy(br.host, br.deploy_id))
    assert "stp3n0" not in lab.ns.links()
