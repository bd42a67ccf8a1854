"""The user-networking path: the relay QEMU runs per guest connection, and its guestfwd."""

from __future__ import annotations

import shlex
import socket
import subprocess

from stratus.drivers.metadata_proxy import relay_command
from stratus.drivers.qemu_argv import Launch, Nic, build_argv, metadata_address
from stratus.model.ec2ids import instance_id
from tests.metadata.conftest import World
from tests.metadata.support import read_responses, request_bytes


def _through_relay(world: World, vm_id: int, *requests: bytes) -> list[bytes]:
    """Run the relay as slirp does (the guest's connection on stdin and stdout)."""
    guest, relay_end = socket.socketpair()
    with guest, relay_end:
        proc = subprocess.Popen(
            shlex.split(relay_command(world.socket, vm_id)),
            stdin=relay_end.fileno(),
            stdout=relay_end.fileno(),
        )
        relay_end.close()
        guest.settimeout(15)
        guest.sendall(b"".join(requests))
        responses = read_responses(guest, len(requests))
        guest.close()
        assert proc.wait(15) == 0
    return [response.body for response in responses]


def test_the_relay_introduces_its_vm_and_carries_the_connection_both_ways(world: World) -> None:
    bodies = _through_relay(
        world,
        world.bare.vm_id,
        request_bytes("GET", "/latest/meta-data/instance-id"),
        request_bytes("GET", "/latest/meta-data/local-ipv4"),
    )
    assert bodies == [instance_id(world.bare.vm_id).encode(), world.bare.ip.encode()]


def _nic(**changes: object) -> Nic:
    fields: dict[str, object] = {
        "index": 0, "driver": "user", "mac": "02:00:c0:a8:96:64", "ip": "192.168.150.100",
        "network_address": "192.168.150.0", "mask": "255.255.255.0", "gateway": "192.168.150.1",
        "metadata_relay": "/usr/bin/python3 -m relay --socket /data,dir/metadata.sock",
    }  # fmt: skip
    fields.update(changes)
    return Nic(**fields)  # type: ignore[arg-type]


def test_the_metadata_address_is_ec2s_only_inside_a_network_that_holds_it() -> None:
    assert metadata_address(_nic()) == "192.168.150.254"
    assert metadata_address(_nic(gateway="192.168.150.254")) == "192.168.150.253"
    link_local = _nic(network_address="169.254.0.0", mask="255.255.0.0", ip="169.254.0.100")
    assert metadata_address(link_local) == "169.254.169.254"
    assert metadata_address(_nic(network_address=None)) is None


def test_a_user_nic_with_a_relay_gets_a_guestfwd_with_commas_escaped() -> None:
    launch = Launch(
        deploy_id="vm1-abc", vm_id=1, vm_dir="/d/1", accel="tcg", memory=64, vcpu=1,
        nics=(_nic(),),
    )  # fmt: skip
    argv = build_argv(launch, "/q", "/p", None)
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev.endswith(
        ",guestfwd=tcp:192.168.150.254:80-cmd:"
        "/usr/bin/python3 -m relay --socket /data,,dir/metadata.sock"
    )
    plain = Launch(**{**launch.__dict__, "nics": (_nic(metadata_relay=None),)})
    assert "guestfwd" not in " ".join(build_argv(plain, "/q", "/p", None))
