"""kill -9 of the daemon at any moment loses nothing and starts nothing twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from stratus.drivers.dummy import DummyWorld
from tests.daemon.daemon import Daemon

FAST = ("--schedule-interval", "0.1", "--monitor-interval", "0.5", "--policy", "striping")
TRANSIENT = {"PROLOG", "BOOT", "SHUTTING_DOWN", "EPILOG"}
TEMPLATE = 'NAME = "crash"\nCPU = 0.1\nMEMORY = 64\n'


def _wait_for(daemon: Daemon, done: callable, timeout: float) -> list[dict]:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while True:
        vms = daemon.all_vms()
        if done(vms):
            return vms
        if time.monotonic() > deadline:
            states = Counter(v["state"] for v in vms)
            raise AssertionError(f"not settled after {timeout} s: {dict(states)}")
        time.sleep(0.2)


@pytest.mark.slow
def test_kill_9_during_deploys_and_terminations_loses_nothing(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, *FAST).start()
    try:
        # Hosts of different speeds, so that a kill finds VMs at every step.
        for name, latency in (("h1", 0.05), ("h2", 0.5), ("h3", 2.0)):
            daemon.api(
                "POST",
                "/hosts",
                json={
                    "name": name,
                    "driver": "dummy",
                    "cpu": 64,
                    "memory": 65536,
                    "options": {"latency": latency},
                },
            )
        deadline = time.monotonic() + 30
        while any(h["state"] != "MONITORED" for h in daemon.api("GET", "/hosts")["items"]):
            assert time.monotonic() < deadline, "hosts never became MONITORED"
            time.sleep(0.1)
        daemon.api("POST", "/vms", json={"template": TEMPLATE, "count": 40})
        # Kill while VMs are half-way through PROLOG/BOOT.
        before = _wait_for(daemon, lambda vms: sum(v["state"] == "RUNNING" for v in vms) >= 5, 60)
        assert any(v["state"] in TRANSIENT for v in before)
        daemon.kill()
        daemon.start()
        vms = _wait_for(daemon, lambda vms: all(v["state"] == "RUNNING" for v in vms), 90)
        assert len(vms) == 40
        # Kill while terminations are half-way through SHUTTING_DOWN/EPILOG.
        doomed = [v["id"] for v in vms[:15]]
        for vm_id in doomed:
            daemon.api("POST", f"/vms/{vm_id}/terminate", json={})
        time.sleep(0.3)
        assert any(v["state"] in TRANSIENT for v in daemon.all_vms())
        daemon.kill()
        daemon.start()
        vms = _wait_for(
            daemon,
            lambda vms: all(
                v["state"] == ("DONE" if v["id"] in doomed else "RUNNING") for v in vms
            ),
            90,
        )
    finally:
        daemon.stop()
    world = DummyWorld(tmp_path / "dummy-world.sqlite")
    try:
        created = Counter(i.vm_id for i in world.instances(live_only=False))
        live = Counter(i.vm_id for i in world.instances())
    finally:
        world.close()
    # Every VM got exactly one instance: none lost, none started twice.
    assert set(created) == {v["id"] for v in vms}
    assert all(n == 1 for n in created.values()), created
    assert {vm_id for vm_id in live} == {v["id"] for v in vms} - set(doomed)
    reasons = " ".join(daemon.output().splitlines()[-200:])
    assert "resuming" in reasons
