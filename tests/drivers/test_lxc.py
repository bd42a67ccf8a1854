"""The LXC driver with the appliance's root filesystem, in a network namespace of the test's
own with a bridge at 192.168.150.1/24 (tests/lxc_support.py); guests are reached only
inside that namespace. Each test's `lab` cleans up every VM it deployed and deletes the
namespace, even when the test fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stratus.drivers.base import HostInfo, InstanceState, NicSpec
from stratus.drivers.lxcconf import container_name
from stratus.model.errors import DriverError, DriverTimeout, Unsupported
from tests.lxc_support import BRIDGE, Lab, lxc_lab
from tests.sshd import ssh_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with lxc_lab(tmp_path) as made:
        yield made


@pytest.mark.slow
async def test_twenty_containers_from_one_image_answer_with_their_own_name_and_ip(
    lab: Lab,
) -> None:
    started = time.monotonic()
    await asyncio.gather(*(lab.up(lab.spec(i)) for i in range(1, 21)))
    deployed = time.monotonic() - started
    answers = await asyncio.gather(*(lab.answer(i) for i in range(1, 21)))
    elapsed = time.monotonic() - started
    print(f"\n20 containers: deployed in {deployed:.2f} s, all answering in {elapsed:.2f} s")
    for i, got in enumerate(answers, start=1):
        assert got["name"] == f"web{i}"
        assert got["ip"] == f"192.168.150.{100 + i}"
        assert str(got["vmid"]) == str(i)
    assert elapsed < 30
    # One extraction, shared by all: the cache holds the rootfs and no leftovers.
    assert sorted(p.name for p in (lab.ds / ".images" / "1").iterdir()) == [".lock", "rootfs"]


async def test_one_deploy_takes_well_under_a_second(lab: Lab) -> None:
    spec = lab.spec(1)
    lab.track(spec)
    await lab.driver.prepare(lab.host, spec)
    started = time.monotonic()
    info = await lab.driver.deploy(lab.host, spec)
    took = time.monotonic() - started
    print(f"\none deploy (image cached): {took * 1000:.0f} ms")
    assert info.state is InstanceState.RUNNING
    assert took < 1.0
    assert (await lab.answer(1))["name"] == "web1"
    log = await lab.driver.console_log(lab.host, info.deploy_id, 4096)
    assert b"HTTP server on port 80" in log


async def test_a_retried_deploy_finds_the_running_container(lab: Lab) -> None:
    spec = lab.spec(2)
    first = await lab.up(spec)
    probe = await lab.driver.probe(lab.host)
    again = await lab.driver.deploy(lab.host, spec)
    assert again.deploy_id == first == container_name(2, "vm-2-1")
    assert lab.containers() == [first]
    assert probe.instances[first].state is InstanceState.RUNNING


async def test_suspended_container_is_silent_and_answers_again_after_resume(lab: Lab) -> None:
    deploy_id = await lab.up(lab.spec(3))
    before = await lab.answer(3)
    await lab.driver.suspend(lab.host, deploy_id)
    assert (await lab.driver.probe(lab.host)).instances[deploy_id].state is InstanceState.PAUSED
    assert await asyncio.to_thread(lab.get, 3, 1.0) is None
    info = await lab.driver.resume(lab.host, deploy_id)
    assert info.state is InstanceState.RUNNING
    after = await lab.answer(3, within=5)
    assert float(str(after["uptime"])) > float(str(before["uptime"]))


@pytest.mark.slow
async def test_graceful_shutdown_stops_it_and_keeps_the_vm_directory(lab: Lab) -> None:
    deploy_id = await lab.up(lab.spec(4))
    await lab.answer(4)
    (lab.ds / "4" / "upper" / "root").mkdir(parents=True, exist_ok=True)
    await lab.driver.shutdown(lab.host, deploy_id, timeout=20)
    probe = await lab.driver.probe(lab.host)
    assert probe.instances[deploy_id].state is InstanceState.OFF
    await lab.driver.destroy(lab.host, deploy_id)
    assert deploy_id not in (await lab.driver.probe(lab.host)).instances
    assert (lab.ds / "4" / "upper" / "root").is_dir()  # poweroff keeps the disk
    assert b"going down" in (lab.ds / "4" / "console.log").read_bytes()


async def test_shutdown_of_a_frozen_container_times_out(lab: Lab) -> None:
    deploy_id = await lab.up(lab.spec(5))
    await lab.driver.suspend(lab.host, deploy_id)
    with pytest.raises(DriverTimeout, match="still running"):
        await lab.driver.shutdown(lab.host, deploy_id, timeout=1)
    await lab.driver.destroy(lab.host, deploy_id)
    assert lab.containers() == []


@pytest.mark.slow
async def test_soft_and_hard_reboot_start_the_guest_again(lab: Lab) -> None:
    deploy_id = await lab.up(lab.spec(6))
    for hard in (False, True):
        await lab.answer(6)
        before = (await lab.driver.probe(lab.host)).instances[deploy_id].extra["pid"]
        await lab.driver.reboot(lab.host, deploy_id, hard=hard)
        assert (await lab.answer(6))["name"] == "web6"
        after = (await lab.driver.probe(lab.host)).instances[deploy_id]
        assert after.state is InstanceState.RUNNING
        assert after.extra["pid"] != before, f"{hard=}: the same init is still running"
    assert b"Requesting system reboot" in (lab.ds / "6" / "console.log").read_bytes()


async def test_cleanup_leaves_no_container_veth_or_vm_directory(lab: Lab) -> None:
    specs = [lab.spec(7), lab.spec(8)]
    ids = [await lab.up(spec) for spec in specs]
    assert sorted(lab.ns.links("veth")) == ["sve7n0", "sve8n0"]
    await lab.driver.suspend(lab.host, ids[1])  # cleanup copes with a frozen one too
    for spec, deploy_id in zip(specs, ids, strict=True):
        await lab.driver.cleanup(lab.host, spec.vm_id, spec.request_id, deploy_id)
        await lab.driver.cleanup(lab.host, spec.vm_id, spec.request_id, deploy_id)  # again
    assert lab.containers() == []
    assert lab.ns.links("veth") == []
    assert not (lab.ds / "7").exists() and not (lab.ds / "8").exists()
    assert (await lab.driver.probe(lab.host)).instances == {}


async def test_probe_reports_lxc_and_the_bridges_of_the_host_namespace(lab: Lab) -> None:
    deploy_id = await lab.up(lab.spec(9))
    probe = await lab.driver.probe(lab.host)
    assert probe.attributes["HYPERVISOR"] == "lxc"
    assert probe.attributes["LXC_VERSION"][0].isdigit()
    assert probe.attributes["BRIDGES"] == BRIDGE
    assert probe.cpu >= 1 and probe.memory > probe.free_memory > 0
    assert probe.instances[deploy_id].memory_usage <= 128


async def test_memory_and_cpu_limits_reach_the_container_cgroup(lab: Lab) -> None:
    deploy_id = await lab.up(lab.spec(10, memory=96, cpu=0.25))
    await lab.answer(10)
    info = (await lab.driver.probe(lab.host)).instances[deploy_id]
    group = Path(str(info.extra["cgroup"]))  # where the probe read the usage figures
    assert 0 < info.memory_usage <= 96
    if group.parts[:5] == ("/", "sys", "fs", "cgroup", "memory"):  # cgroup v1
        assert int((group / "memory.limit_in_bytes").read_text()) == 96 << 20
        cpu = Path("/sys/fs/cgroup/cpu", *group.parts[5:])
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 25_000
    else:
        assert int((group / "memory.max").read_text()) == 96 << 20
        assert (group / "cpu.max").read_text().split() == ["25000", "100000"]
    # A busy guest is held to its quarter of a CPU, as the probe measures it.
    lab.attach(deploy_id, "(while :; do :; done) >/dev/null 2>&1 &")
    await lab.driver.probe(lab.host)
    await asyncio.sleep(1.5)
    busy = (await lab.driver.probe(lab.host)).instances[deploy_id].cpu_usage
    assert 0.15 < busy < 0.35, busy


async def test_two_host_entries_on_one_machine_see_only_their_own_containers(lab: Lab) -> None:
    other = HostInfo(id=2, name="h2", options={"netns": lab.ns.name}, labels={})
    mine = await lab.up(lab.spec(11))
    theirs = await lab.up(lab.spec(12), other)
    assert set((await lab.driver.probe(lab.host)).instances) == {mine}
    assert set((await lab.driver.probe(other)).instances) == {theirs}
    assert lab.containers(other) == [theirs]


async def test_a_user_network_nic_is_refused_with_the_reason(lab: Lab) -> None:
    nic = NicSpec(index=0, network="outside", driver="user", mac="02:00:00:00:00:01")
    spec = lab.spec(13, nics=(nic,))
    with pytest.raises(DriverError, match="outside uses QEMU user networking"):
        await lab.driver.prepare(lab.host, spec)
    with pytest.raises(DriverError, match="containers need a bridge network"):
        await lab.driver.deploy(lab.host, spec)


async def test_save_and_live_migration_are_unsupported_with_a_reason(lab: Lab) -> None:
    for operation in ("save", "live_migrate"):
        with pytest.raises(Unsupported, match="CRIU"):
            lab.driver.check_supported(operation)
    with pytest.raises(Unsupported):
        await lab.driver.save(lab.host, container_name(1, "vm-1-1"))


async def test_operations_on_a_missing_container_say_so(lab: Lab) -> None:
    missing = container_name(14, "vm-14-1")
    with pytest.raises(DriverError, match="does not exist"):
        await lab.driver.suspend(lab.host, missing)
    await lab.driver.destroy(lab.host, missing)  # already gone: success
    await lab.driver.shutdown(lab.host, missing, timeout=1)
    await lab.driver.cleanup(lab.host, 14, "vm-14-1", None)


async def test_a_container_without_nics_runs_in_the_host_namespace(lab: Lab) -> None:
    deploy_id = await lab.up(lab.spec(15, nics=()))
    info = (await lab.driver.probe(lab.host)).instances[deploy_id]
    assert info.state is InstanceState.RUNNING
    netns = (lab.ds / ".hosts" / "h1" / deploy_id / "netns").read_text()
    assert netns == ""
    await lab.driver.destroy(lab.host, deploy_id)
    assert deploy_id not in (await lab.driver.probe(lab.host)).instances


async def test_a_failed_start_names_lxcs_reason(lab: Lab) -> None:
    spec = lab.spec(16)
    lab.track(spec)
    await lab.driver.prepare(lab.host, spec)
    (lab.ds / "16" / "upper" / "sbin" / "init").mkdir(parents=True)  # hides the image's init
    with pytest.raises(DriverError, match="start of container stratus-16-vm-16-1 failed") as err:
        await lab.driver.deploy(lab.host, spec)
    assert "/sbin/init" in str(err.value)


async def test_deploy_without_prepare_says_to_run_it(lab: Lab) -> None:
    spec = lab.spec(17)
    lab.track(spec)
    with pytest.raises(DriverError, match="run prepare"):
        await lab.driver.deploy(lab.host, spec)


async def test_after_a_guest_poweroff_a_new_deploy_keeps_the_root_filesystem(lab: Lab) -> None:
    first = await lab.up(lab.spec(18))
    await lab.answer(18)
    lab.attach(first, "echo kept > /root/mark && poweroff")
    deadline = time.monotonic() + 15
    while (await lab.driver.probe(lab.host)).instances[first].state is not InstanceState.OFF:
        assert time.monotonic() < deadline, "the guest did not power off"
        await asyncio.sleep(0.1)
    again = await lab.driver.deploy(lab.host, lab.spec(18, request=2))
    assert lab.containers() == [again.deploy_id] != [first]  # the stopped one is gone
    assert lab.attach(again.deploy_id, "cat /root/mark") == "kept\n"


async def test_a_container_on_an_ssh_host_gets_the_image_pushed_once(
    lab: Lab, tmp_path: Path
) -> None:
    with ssh_server() as sshd:
        remote_ds = tmp_path / "remote-ds"
        options = dict(sshd.options) | {"netns": lab.ns.name, "datastore": str(remote_ds)}
        remote = HostInfo(id=3, name="remote", options=options, labels={})
        try:
            deploy_id = await lab.up(lab.spec(19), remote)
            assert (await lab.answer(19))["name"] == "web19"
            probe = await lab.driver.probe(remote)
            assert probe.instances[deploy_id].state is InstanceState.RUNNING
            assert (remote_ds / ".images" / "1" / lab.rootfs.name).is_file()  # pushed
            assert (remote_ds / ".images" / "1" / "rootfs" / "sbin").is_dir()
        finally:
            await lab.cleanup()  # while SSH is still up
        assert not (remote_ds / "19").exists()
