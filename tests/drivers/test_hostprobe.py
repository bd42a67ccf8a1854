"""Host figures read through a HostAccess: true to this machine, the same locally and over SSH."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratus.drivers.access import LocalAccess
from stratus.drivers.base import HostInfo
from stratus.drivers.hostprobe import read_figures
from stratus.drivers.ssh import SshAccess, ssh_params
from stratus.model.errors import DriverError
from tests.sshd import SshServer, ssh_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with ssh_server() as server:
        yield server


def meminfo_mb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0]) // 1024
    raise AssertionError(f"{key} not in /proc/meminfo")


async def test_local_figures_are_this_machines(tmp_path: Path) -> None:
    datastore = tmp_path / "datastores" / "system"
    figures = await read_figures(LocalAccess(), str(datastore))
    assert datastore.is_dir()  # created, so df has something to measure
    assert figures.cpus == len(os.sched_getaffinity(0))
    assert figures.memory_mb == meminfo_mb("MemTotal")
    assert 0 < figures.free_memory_mb <= figures.memory_mb
    assert figures.load1 >= 0
    disk = os.statvfs(datastore)
    assert figures.disk_total_mb == pytest.approx(disk.f_blocks * disk.f_frsize / 2**20, abs=2)
    assert 0 <= figures.disk_free_mb <= figures.disk_total_mb
    assert (figures.kernel, figures.arch) == (platform.release(), platform.machine())
    assert figures.attributes()["ARCH"] == platform.machine()


async def test_figures_over_ssh_equal_the_local_ones(sshd: SshServer, tmp_path: Path) -> None:
    remote = SshAccess(ssh_params(HostInfo(id=1, name="h1", options=sshd.options, labels={})))
    try:
        over_ssh = await read_figures(remote, str(tmp_path / "remote-ds"))
    finally:
        await remote.close()
    local = await read_figures(LocalAccess(), str(tmp_path / "local-ds"))
    assert (over_ssh.cpus, over_ssh.memory_mb) == (local.cpus, local.memory_mb)
    assert (over_ssh.kernel, over_ssh.arch) == (local.kernel, local.arch)
    assert (tmp_path / "remote-ds").is_dir()


async def test_a_datastore_that_cannot_be_created_is_a_driver_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DriverError, match="sh failed on local"):
        await read_figures(LocalAccess(), str(blocker / "system"))
