"""The QEMU driver's pure parts and its QMP client, without booting a guest: the command
line, `info usernet` parsing, the acceleration decision, run records, and QMP against a
small fake QEMU on a unix socket."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from stratus.drivers.access import LocalAccess
from stratus.drivers.qemu_argv import Drive, Launch, Nic, build_argv, usernet_forwards
from stratus.drivers.qemu_host import RunRecord, choose_accel, qmp_socket_path
from stratus.drivers.qmp import QmpError, qmp_session
from stratus.model.errors import DriverError, DriverTimeout, InvalidInput

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def launch(**changes: Any) -> Launch:
    fields: dict[str, Any] = {
        "deploy_id": "vm4-abc123", "vm_id": 4, "vm_dir": "/ds/4", "accel": "tcg",
        "memory": 256, "vcpu": 2,
        "drives": (Drive("/ds/4/disk.0", "qcow2"), Drive("/ds/4/context.iso", "raw", True)),
        "nics": (Nic(0, "user", "02:00:c0:a8:96:64", ip="192.168.150.100",
                     network_address="192.168.150.0", mask="255.255.255.0",
                     gateway="192.168.150.1", ports=(80, 22)),),
        "kernel": "/img/vmlinuz", "initrd": "/img/initrd", "append": "root=/dev/vda",
    }  # fmt: skip
    fields.update(changes)
    return Launch(**fields)


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_the_command_line_follows_the_disk_and_network_conventions() -> None:
    argv = build_argv(launch(), "/run/x.qmp", "/run/x.pid", None)
    assert argv[0] == "qemu-system-x86_64" and "-daemonize" in argv
    assert option(argv, "-machine") == ["q35,accel=tcg"] and "-cpu" not in argv
    assert option(argv, "-m") == ["256"] and option(argv, "-smp") == ["2"]
    assert option(argv, "-drive") == [
        "file=/ds/4/disk.0,if=virtio,format=qcow2,id=disk0",
        "file=/ds/4/context.iso,if=virtio,format=raw,id=disk1,readonly=on",
    ]
    assert option(argv, "-netdev") == [
        "user,id=n0,net=192.168.150.0/24,host=192.168.150.1,dhcpstart=192.168.150.100,"
        "hostfwd=tcp:127.0.0.1:0-192.168.150.100:80,hostfwd=tcp:127.0.0.1:0-192.168.150.100:22"
    ]
    assert option(argv, "-device") == ["virtio-net-pci,netdev=n0,mac=02:00:c0:a8:96:64"]
    assert option(argv, "-qmp") == ["unix:/run/x.qmp,server=on,wait=off"]
    assert option(argv, "-chardev") == ["file,id=ser0,path=/ds/4/console.log,append=on"]
    assert option(argv, "-kernel") == ["/img/vmlinuz"] and option(argv, "-append")
    assert "-incoming" not in argv


def test_kvm_bridges_namespaces_and_restores_change_the_command_line() -> None:
    bridged = Nic(1, "bridge", "02:00:00:00:00:01", tap="stp4n1", bridge="br0")
    argv = build_argv(
        launch(accel="kvm", nics=(bridged,), netns="lab", kernel=None),
        "/q", "/p", "exec:cat /ds/4/suspend.state",
    )  # fmt: skip
    assert argv[:4] == ["ip", "netns", "exec", "lab"]
    assert option(argv, "-cpu") == ["host"] and option(argv, "-boot") == ["order=c"]
    assert option(argv, "-netdev") == ["tap,id=n1,ifname=stp4n1,script=no,downscript=no"]
    assert option(argv, "-incoming") == ["exec:cat /ds/4/suspend.state"]


def test_commas_in_paths_are_escaped_for_qemu() -> None:
    argv = build_argv(launch(drives=(Drive("/d,s/disk.0", "qcow2"),)), "/q", "/p", None)
    assert option(argv, "-drive") == ["file=/d,,s/disk.0,if=virtio,format=qcow2,id=disk0"]


def test_an_unknown_network_driver_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="no network driver 'vxlan'") as refused:
        build_argv(launch(nics=(Nic(0, "vxlan", "02:00:00:00:00:01"),)), "/q", "/p", None)
    assert "'user' or 'bridge'" in str(refused.value)


def test_forwarded_ports_are_read_from_info_usernet() -> None:
    text = (
        "Hub -1 (n0):\r\n"
        "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
        "  TCP[HOST_FORWARD]  11       127.0.0.1 41325 192.168.150.100    80     0     0\r\n"
        "  TCP[HOST_FORWARD]  12       127.0.0.1 41777 192.168.150.100    22     0     0\r\n"
        "  TCP[ESTABLISHED]   25       127.0.0.1 41325 192.168.150.100    80     0     0\r\n"
        "Hub -1 (n2):\r\n"
        "  TCP[HOST_FORWARD]  13       127.0.0.1 40001      10.0.2.15  8080     0     0\r\n"
    )
    assert usernet_forwards(text) == {0: {80: 41325, 22: 41777}, 2: {8080: 40001}}


@pytest.mark.parametrize(
    ("runs", "forced", "chosen"),
    [
        ({"tcg": (3, 100), "kvm": (3, 120)}, None, "kvm"),  # KVM that works
        ({"tcg": (3, 100), "kvm": (3, 3000)}, None, "tcg"),  # nested KVM that crawls
        ({"tcg": (3, 100), "kvm": (137, 5000)}, None, "tcg"),  # KVM that hangs: killed
        ({"tcg": (3, 100), "kvm": (255, 0)}, None, "tcg"),  # no /dev/kvm
        ({"tcg": (3, 100), "kvm": (3, 3000)}, "kvm", "kvm"),  # the host's accel option
    ],
)
def test_kvm_is_chosen_only_when_it_runs_a_guest_about_as_fast_as_emulation(
    runs: dict[str, tuple[int, int]], forced: str | None, chosen: str
) -> None:
    assert choose_accel(runs, forced, "QEMU emulator version 7.2.22").accel == chosen


def test_a_host_where_qemu_runs_no_guest_is_an_error() -> None:
    with pytest.raises(DriverError, match="could not run a test guest"):
        choose_accel({"tcg": (1, 40), "kvm": (255, 0)}, None, "QEMU emulator version 7.2.22")


def test_a_run_record_survives_its_json_form() -> None:
    record = RunRecord(
        "vm4-abc123", "vm-4-1", 4, launch(), "/run/vm4-abc123.qmp",
        suspended="/ds/4/suspend.state", taps=("stp4n0",), ports={"80": "127.0.0.1:4000"},
    )  # fmt: skip
    assert RunRecord.from_json(record.to_json().decode()) == record


def test_qmp_sockets_too_long_for_unix_paths_move_to_a_short_one() -> None:
    assert (
        qmp_socket_path("/var/lib/ds/.hosts/h1", "vm1-abc") == "/var/lib/ds/.hosts/h1/vm1-abc.qmp"
    )
    deep = "/tmp/" + "d" * 120
    short = qmp_socket_path(deep, "vm1-abc")
    assert short.startswith("/tmp/stratus-qmp/") and len(short) < 60
    assert short == qmp_socket_path(deep, "vm1-abc") != qmp_socket_path(deep, "vm2-abc")


# -- QMP against a fake QEMU -------------------------------------------------------------
Handler = Callable[[dict[str, Any]], list[dict[str, Any]] | None]


@pytest.fixture
async def fake_qemu() -> AsyncIterator[Callable[[Handler], Any]]:
    """Start a fake QMP server whose answers come from a handler; yields its socket path."""
    servers: list[asyncio.AbstractServer] = []
    folder = tempfile.mkdtemp(prefix="sqmp-")

    async def start(handler: Handler) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
            while line := await reader.readline():
                for answer in handler(json.loads(line)) or []:
                    writer.write(json.dumps(answer).encode() + b"\r\n")
                await writer.drain()
            writer.close()

        path = f"{folder}/q{len(servers)}.qmp"
        servers.append(await asyncio.start_unix_server(serve, path))
        return path

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for path in Path(folder).iterdir():
        path.unlink()
    Path(folder).rmdir()


def answering(message: dict[str, Any]) -> list[dict[str, Any]] | None:
    command, request_id = message["execute"], message.get("id")
    if command == "qmp_capabilities":
        return [{"return": {}, "id": request_id}]
    if command == "query-status":
        return [
            {"event": "STOP", "timestamp": {}},
            {"return": {"status": "paused"}, "id": "an-abandoned-request"},
            {"return": {"status": "running", "running": True}, "id": request_id},
        ]
    if command == "migrate":
        return [{"error": {"class": "GenericError", "desc": "no such file"}, "id": request_id}]
    return None  # never answers


async def test_qmp_returns_answers_and_remembers_events_it_skipped(
    fake_qemu: Callable[[Handler], Any],
) -> None:
    path = await fake_qemu(answering)
    async with qmp_session(LocalAccess(), path) as qmp:
        assert await qmp.execute("query-status") == {"status": "running", "running": True}
        assert qmp.saw_event("STOP") and not qmp.saw_event("SHUTDOWN")


async def test_qmp_errors_carry_qemus_class_and_description(
    fake_qemu: Callable[[Handler], Any],
) -> None:
    path = await fake_qemu(answering)
    async with qmp_session(LocalAccess(), path) as qmp:
        with pytest.raises(QmpError) as refused:
            await qmp.execute("migrate", {"uri": "exec:cat > /nope"})
    assert refused.value.error_class == "GenericError"
    assert str(refused.value) == "QEMU refused migrate: no such file (GenericError)"


async def test_a_qmp_command_without_answer_times_out(fake_qemu: Callable[[Handler], Any]) -> None:
    path = await fake_qemu(answering)
    async with qmp_session(LocalAccess(), path) as qmp:
        with pytest.raises(DriverTimeout, match=r"did not answer system_powerdown within 0\.2 s"):
            await qmp.execute("system_powerdown", timeout=0.2)


async def test_a_socket_nobody_listens_on_is_a_driver_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="cannot connect"):
        async with qmp_session(LocalAccess(), str(tmp_path / "none.qmp")):
            pass
