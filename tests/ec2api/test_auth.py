"""Signature Version 4: what the EC2 API accepts and refuses, and secrets that never leak."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from stratus.ec2api.app import ACTIONS
from stratus.ec2api.protocol import Ec2Error
from stratus.ec2api.sigv4 import SignedRequest, verify
from tests.ec2api.conftest import REGION, Account, Zone, error_code

FORM = "application/x-www-form-urlencoded; charset=utf-8"


def _signed(
    url: str, key: str, secret: str, params: dict[str, str], region: str = REGION
) -> AWSRequest:
    """A request signed by botocore's own SigV4 signer, as boto3 would send it."""
    request = AWSRequest(
        method="POST", url=url, data=urlencode(params), headers={"Content-Type": FORM}
    )
    SigV4Auth(Credentials(key, secret), "ec2", region).add_auth(request)
    return request


def _send(request: AWSRequest, body: bytes | None = None) -> httpx.Response:
    prepared = request.prepare()
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    content = prepared.body if body is None else body
    return httpx.post(prepared.url, headers=headers, content=content, timeout=10)


def test_a_wrong_secret_gets_auth_failure(zone: Zone, alice: Account) -> None:
    wrong = zone.client(alice.key_id, alice.secret[:-1] + ("x" if alice.secret[-1] != "x" else "y"))
    assert error_code(wrong.describe_instances)[0] == "AuthFailure"


def test_an_unknown_access_key_gets_auth_failure(zone: Zone) -> None:
    stranger = zone.client("AKIAAAAAAAAAAAAAAAAA", "whatever-secret-0123456789")
    assert error_code(stranger.describe_regions)[0] == "AuthFailure"


def test_a_request_signed_for_another_region_is_refused_naming_ours(
    zone: Zone, alice: Account
) -> None:
    elsewhere = zone.client(alice.key_id, alice.secret, region="eu-west-1")
    code, message = error_code(elsewhere.describe_regions)
    assert code == "AuthFailure" and REGION in message


def test_a_stale_date_is_refused_and_a_small_skew_is_accepted(
    zone: Zone, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's clock is moved, as a machine with a wrong clock would sign."""
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda: datetime.now(UTC) - timedelta(minutes=10)
    )
    code, message = error_code(alice.client.describe_regions)
    assert code == "RequestExpired" and "clock" in message
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda: datetime.now(UTC) + timedelta(minutes=4)
    )
    assert alice.client.describe_regions()["Regions"][0]["RegionName"] == REGION


def test_a_body_changed_after_signing_is_refused(zone: Zone, alice: Account) -> None:
    params = {"Action": "DescribeInstances", "Version": "2016-11-15"}
    request = _signed(zone.endpoint, alice.key_id, alice.secret, params)
    assert _send(request).status_code == 200
    tampered = urlencode({**params, "InstanceId.1": "i-00000000000000001"}).encode()
    answer = _send(request, tampered)
    assert answer.status_code == 401
    # A wrong secret and a changed body look alike to the server: EC2 answers both so.
    assert "<Code>AuthFailure</Code>" in answer.text and "signature does not match" in answer.text


def test_an_unsigned_request_is_refused(zone: Zone) -> None:
    answer = httpx.post(zone.endpoint, data={"Action": "DescribeRegions"}, timeout=10)
    assert answer.status_code == 401
    assert "<Code>AuthFailure</Code>" in answer.text and "<RequestID>" in answer.text


def test_an_unknown_action_answers_unsupported_operation(zone: Zone, alice: Account) -> None:
    code, message = error_code(alice.client.describe_vpcs)
    assert code == "UnsupportedOperation" and "DescribeVpcs" in message
    params = {"Action": "CreateVpc", "Version": "2016-11-15", "CidrBlock": "10.0.0.0/16"}
    answer = _send(_signed(zone.endpoint, alice.key_id, alice.secret, params))
    assert answer.status_code == 400 and "<Code>UnsupportedOperation</Code>" in answer.text


def test_a_deleted_key_stops_working_at_once(zone: Zone) -> None:
    dave = zone.user("dave")
    assert dave.client.describe_regions()["Regions"]
    zone.daemon.api("DELETE", f"/access-keys/{dave.key_id}")
    assert error_code(dave.client.describe_regions)[0] == "AuthFailure"


def test_the_secret_is_shown_once_and_appears_nowhere_else(zone: Zone) -> None:
    erin = zone.user("erin")
    erin.client.describe_instances()
    error_code(zone.client(erin.key_id, "not-the-secret-000000000000000").describe_instances)
    shown = [
        zone.daemon.api("GET", f"/users/{erin.name}"),
        zone.daemon.api("GET", f"/users/{erin.name}/keys"),
        zone.daemon.api("GET", "/users"),
    ]
    assert erin.key_id in str(shown)
    assert erin.secret not in str(shown)
    for log in ("stratus.log", "daemon.out", "stratus.db"):
        assert erin.secret.encode() not in (zone.daemon.data_dir / log).read_bytes()


# --- the verifier itself, against botocore's signer -------------------------------------------


def _as_signed(request: AWSRequest) -> SignedRequest:
    prepared = request.prepare()
    path, _, query = prepared.url.split("://", 1)[1].partition("/")[2].partition("?")
    body = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
    return SignedRequest(
        method=prepared.method,
        raw_path="/" + path,
        query_string=query,
        headers=[(k.lower(), v) for k, v in prepared.headers.items()] + [("host", "h:1")],
        body=body,
    )


def _secret(key: str) -> str | None:
    return "s3cr3t" if key == "AKIATEST" else None


def test_requests_botocore_signs_verify_whatever_their_path_and_query() -> None:
    for url in (
        "http://h:1/ec2/",
        "http://h:1/ec2",
        "http://h:1/a/./b/../ec2/",
        "http://h:1/ec2/?Action=DescribeRegions&Filter.1.Value.1=a%20b%2Bc&Z=%C3%A9",
    ):
        request = _signed(url, "AKIATEST", "s3cr3t", {"Action": "DescribeRegions", "X": "ü é"})
        assert verify(_as_signed(request), region=REGION, max_skew=300, secret_of=_secret) == (
            "AKIATEST"
        )


def test_a_changed_signed_header_or_method_fails_verification() -> None:
    request = _signed("http://h:1/ec2/", "AKIATEST", "s3cr3t", {"Action": "DescribeRegions"})
    signed = _as_signed(request)
    changes: list[dict[str, Any]] = [
        {"headers": [(k, "other" if k == "host" else v) for k, v in signed.headers]},
        {"method": "PUT"},
        {"raw_path": "/elsewhere/"},
    ]
    for change in changes:
        changed = SignedRequest(**{**signed.__dict__, **change})
        with pytest.raises(Ec2Error) as refused:
            verify(changed, region=REGION, max_skew=300, secret_of=_secret)
        assert refused.value.code == "AuthFailure" and refused.value.status == 401


ISSUE_ACTIONS = [
    "RunInstances",
    "DescribeInstances",
    "TerminateInstances",
    "StopInstances",
    "StartInstances",
    "RebootInstances",
    "DescribeImages",
    "RegisterImage",
    "DeregisterImage",
    "CreateKeyPair",
    "ImportKeyPair",
    "DescribeKeyPairs",
    "DeleteKeyPair",
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "DescribeSecurityGroups",
    "AllocateAddress",
    "AssociateAddress",
    "DisassociateAddress",
    "ReleaseAddress",
    "DescribeAddresses",
    "DescribeRegions",
    "DescribeAvailabilityZones",
    "CreateTags",
    "DeleteTags",
    "DescribeTags",
    "DescribeInstanceTypes",
]


def test_every_action_the_issue_lists_is_served() -> None:
    assert set(ISSUE_ACTIONS) <= set(ACTIONS)
