"""Terminating a real VM: a graceful ACPI shutdown when the guest cooperates, a hard stop
after the timeout when it does not (the daemon runs with --shutdown-timeout 8)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.appliance_support import ensure_appliance
from tests.daemon.daemon import Daemon
from tests.e2e.conftest import cloud_daemon, guest_page, vm_template, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with cloud_daemon(tmp_path_factory.mktemp("impatient"), "--shutdown-timeout", "8") as d:
        yield d


def _events(daemon: Daemon, vm_id: int) -> list[str]:
    return [event["reason"] for event in daemon.api("GET", f"/vms/{vm_id}")["events"]]


def test_a_cooperating_guest_shuts_down_gracefully_and_one_ignoring_acpi_is_stopped_hard(
    impatient: Daemon, tmp_path: Path
) -> None:
    cmdline = ensure_appliance().cmdline
    polite = impatient.api("POST", "/vms", json={"template": vm_template("polite", cmdline)})
    deaf_template = vm_template("deaf", cmdline, extra=', START_SCRIPT = "killall acpid"')
    deaf = impatient.api("POST", "/vms", json={"template": deaf_template})
    ids = [polite["vms"][0]["id"], deaf["vms"][0]["id"]]
    for vm_id in ids:
        vm = wait_state(impatient, vm_id, "RUNNING", timeout=120)
        guest_page(vm["info"]["ports"]["80"])  # booted, context applied (acpid killed)
    for vm_id in ids:
        impatient.api("POST", f"/vms/{vm_id}/terminate")
    for vm_id in ids:
        wait_state(impatient, vm_id, "DONE", timeout=90)
    polite_events, deaf_events = (_events(impatient, vm_id) for vm_id in ids)
    assert "shut down" in polite_events
    assert not any("timed out" in reason for reason in polite_events)
    assert any("graceful shutdown timed out" in reason for reason in deaf_events)
    assert any("powered off hard" in reason for reason in deaf_events)
