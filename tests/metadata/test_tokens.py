"""IMDSv2: session tokens from PUT /latest/api/token, bound to one VM, with a TTL."""

from __future__ import annotations

import pytest

from stratus.model.ec2ids import InstanceMetadata, instance_id
from stratus.model.errors import InvalidInput
from tests.metadata.conftest import Clock, Guest, World
from tests.metadata.support import Response, imds

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"
INSTANCE_ID = "/latest/meta-data/instance-id"


def put_token(world: World, guest: Guest, ttl: str | None = "60", **extra: str) -> Response:
    headers = {TTL: ttl} if ttl is not None else {}
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return imds(world.socket, guest.preamble, "/latest/api/token", "PUT", headers)


def get_with(world: World, guest: Guest, token: str | None, path: str = INSTANCE_ID) -> Response:
    headers = {TOKEN: token} if token is not None else {}
    return imds(world.socket, guest.preamble, path, headers=headers)


def test_a_token_opens_the_metadata_of_its_vm(world: World) -> None:
    issued = put_token(world, world.full, "300")
    assert issued.status == 200
    assert issued.headers[TTL.lower()] == "300"
    answer = get_with(world, world.full, issued.text)
    assert (answer.status, answer.text) == (200, instance_id(world.full.vm_id))


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "ten", "1e3"])
def test_a_token_needs_a_ttl_from_1_to_21600_seconds(world: World, ttl: str | None) -> None:
    assert put_token(world, world.full, ttl).status == 400


def test_the_ttl_bounds_themselves_are_accepted(world: World) -> None:
    assert put_token(world, world.full, "1").status == 200
    assert put_token(world, world.full, "21600").status == 200


def test_a_token_request_through_a_forwarding_proxy_is_refused(world: World) -> None:
    refused = put_token(world, world.full, "60", X_Forwarded_For="10.0.0.9")
    assert refused.status == 403
    assert refused.text.count("403") >= 1


def test_another_vms_token_is_refused(world: World) -> None:
    foreign = put_token(world, world.full).text
    assert get_with(world, world.bare, foreign).status == 401


@pytest.mark.parametrize("token", ["", "garbage", "A" * 54, "x" * 500])
def test_a_malformed_token_is_refused_even_where_v1_is_allowed(world: World, token: str) -> None:
    assert get_with(world, world.bare, token).status == 401


def test_a_token_expires_after_its_ttl(world: World, clock: Clock) -> None:
    token = put_token(world, world.bare, "10").text
    assert get_with(world, world.bare, token).status == 200
    clock.now += 11
    try:
        assert get_with(world, world.bare, token).status == 401
    finally:
        clock.now -= 11


def test_without_a_token_v1_answers_unless_the_vm_requires_tokens(world: World) -> None:
    assert get_with(world, world.bare, None).status == 200
    assert get_with(world, world.strict, None).status == 401
    token = put_token(world, world.strict).text
    assert get_with(world, world.strict, token).status == 200


def test_the_token_path_takes_only_put_and_other_paths_no_put(world: World) -> None:
    assert get_with(world, world.bare, None, "/latest/api/token").status == 405
    other = imds(world.socket, world.bare.preamble, INSTANCE_ID, "PUT", {TTL: "60"})
    assert other.status == 405
    post = imds(world.socket, world.bare.preamble, INSTANCE_ID, "POST")
    assert post.status == 405


def test_http_tokens_reads_back_and_refuses_unknown_values() -> None:
    required = InstanceMetadata.from_section({"HTTP_TOKENS": "Required"})
    assert required.tokens_required
    assert InstanceMetadata.from_section(required.to_section()) == required
    assert not InstanceMetadata.from_section({}).tokens_required
    with pytest.raises(InvalidInput, match="HTTP_TOKENS"):
        InstanceMetadata.from_section({"HTTP_TOKENS": "sometimes"})
