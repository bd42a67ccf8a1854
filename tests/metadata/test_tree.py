"""The EC2 meta-data tree a guest reads, through the real server on its unix socket."""

from __future__ import annotations

import os
import stat

import pytest

from stratus.drivers.metadata_proxy import preamble_for_address
from stratus.model.ec2ids import ami_id, instance_id
from tests.metadata.conftest import USER_DATA, World
from tests.metadata.support import imds, over_socket, request_bytes


def get(world: World, preamble: bytes, path: str) -> tuple[int, str]:
    response = imds(world.socket, preamble, path)
    return response.status, response.text


def test_the_socket_is_for_root_only(world: World) -> None:
    mode = os.stat(world.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_every_key_of_a_vm_with_a_full_metadata_section(world: World) -> None:
    g = world.full
    expected = {
        "instance-id": instance_id(g.vm_id),
        "ami-id": ami_id(g.image_id or 0),
        "instance-type": "m5.large",
        "hostname": f"web-{g.vm_id}",
        "local-hostname": f"web-{g.vm_id}",
        "local-ipv4": g.ip,
        "public-ipv4": "203.0.113.7",
        "placement/availability-zone": "eu-west-1b",
        "public-keys/0/openssh-key": "ssh-ed25519 AAAAC3Nz me@laptop",
        "security-groups": "web\nssh",
    }
    for key, value in expected.items():
        assert get(world, g.preamble, f"/latest/meta-data/{key}") == (200, value), key
    status, mac = get(world, g.preamble, "/latest/meta-data/mac")
    [lease] = world.store.vm_leases(g.vm_id)
    assert (status, mac) == (200, lease.mac)


def test_user_data_comes_back_byte_for_byte(world: World) -> None:
    response = imds(world.socket, world.full.preamble, "/latest/user-data")
    assert response.status == 200
    assert response.body == USER_DATA
    assert response.headers["content-type"] == "application/octet-stream"


def test_listings_are_one_entry_a_line_with_directories_slashed(world: World) -> None:
    g = world.full
    status, listing = get(world, g.preamble, "/latest/meta-data/")
    assert status == 200
    assert listing.split("\n") == [
        "ami-id", "hostname", "instance-id", "instance-type", "local-hostname", "local-ipv4",
        "mac", "placement/", "public-ipv4", "public-keys/", "security-groups",
    ]  # fmt: skip
    assert get(world, g.preamble, "/latest/meta-data") == (200, listing)
    assert get(world, g.preamble, "/latest/meta-data/public-keys/") == (200, "0=laptop")
    assert get(world, g.preamble, "/latest/meta-data/public-keys/0/") == (200, "openssh-key")
    assert get(world, g.preamble, "/latest/meta-data/placement/") == (200, "availability-zone")
    assert get(world, g.preamble, "/latest/") == (200, "meta-data\nuser-data")
    status, versions = get(world, g.preamble, "/")
    assert status == 200 and versions.split("\n")[-1] == "latest"


def test_dated_api_versions_answer_as_latest(world: World) -> None:
    g = world.full
    for version in ("2009-04-04", "2021-03-23"):
        path = f"/{version}/meta-data/instance-id"
        assert get(world, g.preamble, path) == (200, instance_id(g.vm_id))


def test_a_bare_vm_gets_derived_values_and_no_optional_keys(world: World) -> None:
    g = world.bare
    status, listing = get(world, g.preamble, "/latest/meta-data/")
    assert status == 200
    for absent in ("public-ipv4", "public-keys/", "security-groups"):
        assert absent not in listing.split("\n")
    assert get(world, g.preamble, "/latest/meta-data/instance-type") == (200, "stratus.1x256")
    assert get(world, g.preamble, "/latest/meta-data/hostname") == (200, "bare")
    zone = get(world, g.preamble, "/latest/meta-data/placement/availability-zone")
    assert zone == (200, "lab-1a")  # the daemon's default zone
    assert get(world, g.preamble, "/latest/") == (200, "meta-data")


@pytest.mark.parametrize(
    "path",
    [
        "/latest/user-data",  # none given: 404 as EC2
        "/latest/meta-data/public-ipv4",  # its address is its local one
        "/latest/meta-data/nothing-here",
        "/latest/meta-data/instance-id/deeper",
        "/latest/meta-data/../user-data",
        "/not-a-version/meta-data/",
        "/latest/dynamic/",
    ],
)
def test_what_a_vm_does_not_have_is_404(world: World, path: str) -> None:
    response = imds(world.socket, world.bare.preamble, path)
    assert response.status == 404
    assert "404 - Not Found" in response.text


def test_ami_id_comes_from_metadata_when_given(world: World) -> None:
    token = imds(
        world.socket, world.strict.preamble, "/latest/api/token", "PUT",
        {"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    ).text  # fmt: skip
    response = imds(
        world.socket, world.strict.preamble, "/latest/meta-data/ami-id",
        headers={"X-aws-ec2-metadata-token": token},
    )  # fmt: skip
    assert (response.status, response.text) == (200, "ami-0123abcd")


def test_each_guest_address_reads_only_its_own_vm(world: World) -> None:
    seen = {
        get(world, g.preamble, "/latest/meta-data/instance-id")[1] for g in (world.full, world.bare)
    }
    assert seen == {instance_id(world.full.vm_id), instance_id(world.bare.vm_id)}


def test_an_address_leased_to_no_vm_reads_nothing(world: World) -> None:
    stranger = preamble_for_address("imds-unit", "192.168.180.199")
    assert imds(world.socket, stranger, "/latest/meta-data/").status == 403
    other_ns = preamble_for_address("another-ns", world.full.ip)
    assert imds(world.socket, other_ns, "/latest/meta-data/instance-id").status == 403


def test_a_relay_preamble_names_its_vm(world: World) -> None:
    g = world.bare
    response = imds(world.socket, g.relay_preamble, "/latest/meta-data/local-ipv4")
    assert (response.status, response.text) == (200, g.ip)


def test_headers_and_a_forged_preamble_in_the_request_change_nothing(world: World) -> None:
    """Only the proxy's first line counts: a guest's own preamble line is bad HTTP, and
    headers that name another instance are ignored."""
    g, other = world.bare, world.full
    forged = other.preamble + request_bytes("GET", "/latest/meta-data/instance-id")
    [response] = over_socket(world.socket, g.preamble, forged)
    assert response.status == 400
    spoofed = imds(
        world.socket, g.preamble, "/latest/meta-data/instance-id",
        headers={"X-Forwarded-For": other.ip, "X-Real-IP": other.ip},
    )  # fmt: skip
    assert (spoofed.status, spoofed.text) == (200, instance_id(g.vm_id))


def test_one_connection_serves_several_requests(world: World) -> None:
    g = world.full
    responses = over_socket(
        world.socket, g.preamble,
        request_bytes("GET", "/latest/meta-data/instance-id"),
        request_bytes("GET", "/latest/meta-data/local-ipv4"),
    )  # fmt: skip
    assert [(r.status, r.text) for r in responses] == [
        (200, instance_id(g.vm_id)),
        (200, g.ip),
    ]


def test_a_connection_without_a_valid_preamble_is_closed(world: World) -> None:
    responses = over_socket(
        world.socket, b"HELLO\n", request_bytes("GET", "/latest/meta-data/"), timeout=5
    )
    assert responses == []


def test_an_oversized_request_is_refused(world: World) -> None:
    huge = {"X-Padding": "a" * 20000}
    [response] = over_socket(
        world.socket, world.full.preamble, request_bytes("GET", "/latest/meta-data/", huge)
    )
    assert response.status == 400
