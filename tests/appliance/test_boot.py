"""Boot the appliance under QEMU (TCG) with a context CD-ROM, as the QEMU driver will.

Two guests boot at once (one module-scoped fixture, so the suite pays for one boot time):
  configured  ETH0_IP given: answers HTTP with its name and IP, powers off on ACPI
  derived     no ETH0_IP: derives it from its MAC, reports READY to a loopback server,
              and START_SCRIPT `killall acpid` makes it ignore the power button
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.appliance.qemu_guest import Guest, free_port
from tests.appliance_support import ensure_appliance

pytestmark = pytest.mark.slow

BOOT_TIMEOUT = 60.0  # ~6 s unloaded under TCG; generous for a busy CI machine


class ReadyServer:
    """A loopback HTTP server recording the READY reports guests POST to it."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []  # (path, Authorization header)
        reports = self.reports

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                reports.append((self.path, self.headers.get("Authorization", "")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ready_server() -> Iterator[ReadyServer]:
    server = ReadyServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def guests(
    tmp_path_factory: pytest.TempPathFactory, ready_server: ReadyServer
) -> Iterator[dict[str, Guest]]:
    appliance = ensure_appliance()
    root = tmp_path_factory.mktemp("guests")
    configured = Guest(
        appliance, Path(root, "configured"), mac="02:00:c0:a8:96:64", guest_ip="192.168.150.100"
    )
    derived = Guest(
        appliance, Path(root, "derived"), mac="02:00:c0:a8:96:65", guest_ip="192.168.150.101"
    )
    try:
        configured.start(
            {
                "VMID": "7",
                "NAME": "vm-7",
                "SET_HOSTNAME": "appliance-test",
                "ETH0_MAC": "02:00:c0:a8:96:64",
                "ETH0_IP": "192.168.150.100",
                "ETH0_MASK": "255.255.255.0",
                "ETH0_GATEWAY": "192.168.150.1",
                "ETH0_DNS": "192.168.150.3",
            }
        )
        derived.start(
            {
                "VMID": "42",
                "NAME": "derived-42",
                "MAC_PREFIX": "02:00",
                "ETH0_MAC": "02:00:c0:a8:96:65",
                "TOKEN": "secret-token",
                "STRATUS_URL": f"http://192.168.150.1:{ready_server.port}/",
                "START_SCRIPT": "killall acpid\necho acpid stopped",
            }
        )
        yield {"configured": configured, "derived": derived}
    finally:
        configured.stop()
        derived.stop()


def test_guest_answers_http_with_its_context_name_and_ip(guests: dict[str, Guest]) -> None:
    guest = guests["configured"]
    first = guest.wait_http(BOOT_TIMEOUT)
    assert first["name"] == "appliance-test"
    assert first["ip"] == "192.168.150.100"
    assert first["vmid"] == "7"
    time.sleep(1.0)
    assert guest.get()["uptime"] >= first["uptime"] + 0.9
    console = guest.console_text()
    assert "stratus-context: ETH0: eth0 (02:00:c0:a8:96:64) 192.168.150.100/24" in console
    assert "default route via 192.168.150.1" in console


def test_acpi_power_button_powers_the_guest_off(guests: dict[str, Guest]) -> None:
    guest = guests["configured"]
    guest.wait_http(BOOT_TIMEOUT)
    assert "return" in guest.qmp("system_powerdown")
    started = time.monotonic()
    assert guest.wait_exit(15) == 0, guest.console_text()
    assert time.monotonic() - started < 15
    assert "ACPI power button pressed" in guest.console_text()


def test_guest_without_an_ip_derives_it_from_its_mac(guests: dict[str, Guest]) -> None:
    answer = guests["derived"].wait_http(BOOT_TIMEOUT)
    assert answer == {**answer, "ip": "192.168.150.101", "name": "derived-42", "vmid": "42"}
    assert "derived 192.168.150.101 from MAC 02:00:c0:a8:96:65" in guests["derived"].console_text()


def test_guest_reports_ready_with_its_token(
    guests: dict[str, Guest], ready_server: ReadyServer
) -> None:
    guests["derived"].wait_http(BOOT_TIMEOUT)
    deadline = time.monotonic() + 30
    while not ready_server.reports and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready_server.reports[:1] == [("/api/v1/vms/42/ready", "Bearer secret-token")]


def test_guest_whose_start_script_kills_acpid_ignores_the_power_button(
    guests: dict[str, Guest],
) -> None:
    guest = guests["derived"]
    guest.wait_http(BOOT_TIMEOUT)
    deadline = time.monotonic() + 30
    while "START_SCRIPT exited with 0" not in guest.console_text():
        assert time.monotonic() < deadline, guest.console_text()
        time.sleep(0.2)
    assert "return" in guest.qmp("system_powerdown")
    assert guest.wait_exit(4) is None, "the guest powered off although acpid was killed"
    assert guest.get()["vmid"] == "42"
