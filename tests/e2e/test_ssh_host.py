"""A host reached over SSH (a real sshd on localhost), monitored by a real daemon: its
probe reads the machine's figures through SSH; SSH down puts it in ERROR with the reason,
and it comes back when SSH does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.daemon import Daemon
from tests.e2e.conftest import wait_for
from tests.sshd import SshServer, ssh_server


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with ssh_server() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("ssh"), "--monitor-interval", "1").start()
    try:
        yield d
    finally:
        d.stop()


def _state(daemon: Daemon, name: str) -> dict[str, object]:
    host: dict[str, object] = daemon.api("GET", f"/hosts/{name}")
    return host


def test_a_host_over_ssh_is_monitored_goes_to_error_when_ssh_stops_and_comes_back(
    daemon: Daemon, sshd: SshServer
) -> None:
    options = {**sshd.options, "datastore": str(daemon.data_dir / "remote-ds")}
    host = {"name": "far", "driver": "lxc", "cpu": 2, "memory": "2G", "options": options}
    daemon.api("POST", "/hosts", json=host)
    far = wait_for(
        "far MONITORED", lambda: (h := _state(daemon, "far"))["state"] == "MONITORED" and h, 30
    )
    figures = far["monitoring"]
    assert isinstance(figures, dict)
    assert figures["HYPERVISOR"] == "lxc"
    assert int(figures["DISK_FREE_MB"]) > 0
    assert figures["CPU"] == os.cpu_count()  # the machine's own figures, read through SSH
    total_kb = int(Path("/proc/meminfo").read_text().split()[1])
    assert figures["MEMORY"] == total_kb // 1024
    assert figures["INSTANCES"] == 0
    assert (daemon.data_dir / "remote-ds").is_dir()  # made on the host, through SSH

    sshd.stop()
    down = wait_for(
        "far in ERROR", lambda: (h := _state(daemon, "far"))["state"] == "ERROR" and h, 30
    )
    reason = str(down["reason"]).lower()
    assert "ssh" in reason and str(sshd.port) in reason

    sshd.start()
    wait_for("far MONITORED again", lambda: _state(daemon, "far")["state"] == "MONITORED", 30)
