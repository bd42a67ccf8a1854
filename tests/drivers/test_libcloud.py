"""The libcloud driver, through libcloud's own EC2 driver, against a real EC2 API (moto's
server on loopback), checked with boto3 on the same server; and its pure parts."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from stratus.drivers.base import DeploySpec, HostInfo, InstanceState
from stratus.drivers.cloud_errors import CloudError
from stratus.drivers.libcloud_driver import LibcloudDriver
from stratus.drivers.libcloud_spec import (
    CHECKPOINT_PREFIX,
    TAG_HOST,
    TAG_REQUEST,
    TAG_VM,
    parse_host_options,
    select_section,
    translate_error,
)
from stratus.drivers.registry import load_driver_class
from stratus.model.errors import DriverError, HostUnreachable, InvalidInput, Unsupported
from tests.moto_server import MOTO_CREDENTIALS, closed_port_endpoint, moto_endpoint_fixture

moto_endpoint = moto_endpoint_fixture()

KEY = MOTO_CREDENTIALS["access_key_id"]
SECRET = MOTO_CREDENTIALS["secret_access_key"]
USER_DATA = b"#cloud-config\nruncmd:\n  - echo stratus\n"


@pytest.fixture(scope="module")
def ec2(moto_endpoint: str) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture(scope="module")
def ami(ec2: Any) -> str:
    return str(ec2.describe_images()["Images"][0]["ImageId"])


def _host(endpoint: str, name: str, **options: str) -> HostInfo:
    return HostInfo(
        id=1,
        name=name,
        options={
            "provider": "ec2",
            "region": "us-east-1",
            "endpoint": endpoint,
            "capacity": "m1.small=4,m1.large=1",
            "timeout": "10",
            "boot_wait": "5",
            "poll_interval": "0.1",
            **options,
        },
        labels={},
        secrets={"key": KEY, "secret": SECRET},
    )


def _live(ec2: Any, **tags: str) -> list[dict[str, Any]]:
    """Instances with these tags that are not terminated, from boto3 on the same server."""
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    reservations = ec2.describe_instances(Filters=filters)["Reservations"]
    return [
        i
        for r in reservations
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


@pytest.fixture
def host(moto_endpoint: str, ec2: Any) -> Iterator[HostInfo]:
    info = _host(moto_endpoint, f"lc-{uuid.uuid4().hex[:10]}")  # moto state is shared
    yield info
    leftover = [i["InstanceId"] for i in _live(ec2, **{TAG_HOST: info.name})]
    if leftover:
        ec2.terminate_instances(InstanceIds=leftover)


@pytest.fixture
def driver(tmp_path: Path) -> LibcloudDriver:
    return LibcloudDriver(tmp_path)


def _spec(vm_id: int, ami: str, *, request: str | None = None, **section: str) -> DeploySpec:
    cloud = {"TYPE": "libcloud", "PROVIDER": "ec2", "IMAGE": ami, "SIZE": "m1.small"}
    return DeploySpec(
        request_id=request or f"vm-{vm_id}-0",
        vm_id=vm_id,
        name=f"web-{vm_id}",
        cpu=1.0,
        vcpu=1,
        memory=512,
        template={"NAME": f"web-{vm_id}", "MEMORY": "512", "PUBLIC_CLOUD": {**cloud, **section}},
        context={"user-data": USER_DATA},
    )


def test_deploy_runs_a_tagged_node_with_user_data_and_a_retry_makes_no_second(
    driver: LibcloudDriver, host: HostInfo, ec2: Any, ami: str
) -> None:
    spec = _spec(11, ami, TAGS="team=web")
    info = asyncio.run(driver.deploy(host, spec))
    again = asyncio.run(driver.deploy(host, spec))

    assert info.state is InstanceState.RUNNING and info.address
    assert again.deploy_id == info.deploy_id
    [instance] = _live(ec2, **{TAG_HOST: host.name})
    assert instance["InstanceId"] == info.deploy_id
    assert instance["InstanceType"] == "m1.small" and instance["ImageId"] == ami
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[TAG_VM] == "11" and tags[TAG_REQUEST] == "vm-11-0"
    assert tags["Name"] == "web-11" and tags["team"] == "web"
    user_data = ec2.describe_instance_attribute(InstanceId=info.deploy_id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]) == USER_DATA


def test_legacy_ec2_section_deploys_on_an_ec2_provider(
    driver: LibcloudDriver, host: HostInfo, ec2: Any, ami: str
) -> None:
    spec = DeploySpec(
        request_id="vm-12-0",
        vm_id=12,
        name="legacy",
        cpu=1.0,
        vcpu=1,
        memory=512,
        template={"MEMORY": "512", "EC2": {"AMI": ami, "INSTANCETYPE": "m1.large"}},
    )
    info = asyncio.run(driver.deploy(host, spec))
    [instance] = _live(ec2, **{TAG_VM: "12", TAG_HOST: host.name})
    assert instance["InstanceId"] == info.deploy_id and instance["InstanceType"] == "m1.large"


def test_probe_sums_the_capacity_and_lists_only_its_hosts_nodes(
    driver: LibcloudDriver, host: HostInfo, moto_endpoint: str, ami: str
) -> None:
    other = _host(moto_endpoint, host.name + "-other")
    mine = asyncio.run(driver.deploy(host, _spec(21, ami)))
    theirs = asyncio.run(driver.deploy(other, _spec(22, ami)))
    try:
        probe = asyncio.run(driver.probe(host))
    finally:
        asyncio.run(driver.cleanup(other, 22, "vm-22-0", theirs.deploy_id))

    assert probe.cpu == 4 * 1 + 1 * 2  # m1.small: 1 vCPU, m1.large: 2 (libcloud's sizes)
    assert probe.memory == 4 * 1740 + 7680
    assert probe.free_memory == probe.memory - 1740
    assert probe.attributes == {
        "PUBLIC_CLOUD": "YES",
        "PROVIDER": "ec2",
        "REGION": "us-east-1",
        "HYPERVISOR": "libcloud-ec2",
        "COUNTRY": "USA",
    }
    assert list(probe.instances) == [mine.deploy_id]
    assert probe.instances[mine.deploy_id].state is InstanceState.RUNNING


def test_reboot_save_restore_and_destroy(
    driver: LibcloudDriver, host: HostInfo, ec2: Any, ami: str
) -> None:
    info = asyncio.run(driver.deploy(host, _spec(31, ami)))
    asyncio.run(driver.reboot(host, info.deploy_id, hard=False))

    checkpoint = asyncio.run(driver.save(host, info.deploy_id))
    assert checkpoint == CHECKPOINT_PREFIX + info.deploy_id
    [stopped] = _live(ec2, **{TAG_VM: "31"})
    assert stopped["State"]["Name"] == "stopped"
    assert asyncio.run(driver.save(host, info.deploy_id)) == checkpoint  # a retried save

    spec = _spec(31, ami, request="vm-31-1")
    restored = asyncio.run(driver.deploy(host, replace(spec, checkpoint=checkpoint)))
    assert restored.deploy_id == info.deploy_id and restored.state is InstanceState.RUNNING

    asyncio.run(driver.destroy(host, info.deploy_id))
    asyncio.run(driver.destroy(host, info.deploy_id))  # gone already: success
    assert _live(ec2, **{TAG_VM: "31"}) == []
    with pytest.raises(DriverError, match="does not exist"):
        asyncio.run(driver.reboot(host, info.deploy_id, hard=True))


def test_shutdown_waits_until_the_node_is_terminated(
    driver: LibcloudDriver, host: HostInfo, ec2: Any, ami: str
) -> None:
    info = asyncio.run(driver.deploy(host, _spec(41, ami)))
    asyncio.run(driver.shutdown(host, info.deploy_id, timeout=10))
    [gone] = ec2.describe_instances(InstanceIds=[info.deploy_id])["Reservations"][0]["Instances"]
    assert gone["State"]["Name"] == "terminated"


def test_cleanup_terminates_every_node_of_the_vm_and_is_idempotent(
    driver: LibcloudDriver, host: HostInfo, ec2: Any, ami: str
) -> None:
    first = asyncio.run(driver.deploy(host, _spec(51, ami)))
    asyncio.run(driver.deploy(host, _spec(51, ami, request="vm-51-1")))  # a half-made retry
    kept = asyncio.run(driver.deploy(host, _spec(52, ami)))

    asyncio.run(driver.save(host, first.deploy_id))
    asyncio.run(driver.cleanup(host, 51, "vm-51-1", None, keep_disks=True))
    assert [i["InstanceId"] for i in _live(ec2, **{TAG_VM: "51"})] == [first.deploy_id]

    asyncio.run(driver.cleanup(host, 51, "vm-51-1", first.deploy_id))
    asyncio.run(driver.cleanup(host, 51, "vm-51-1", first.deploy_id))
    assert _live(ec2, **{TAG_VM: "51", TAG_HOST: host.name}) == []
    assert [i["InstanceId"] for i in _live(ec2, **{TAG_HOST: host.name})] == [kept.deploy_id]


def test_closed_port_endpoint_is_unreachable_at_once(driver: LibcloudDriver) -> None:
    host = _host(closed_port_endpoint(), "lc-closed")
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        asyncio.run(driver.probe(host))
    assert time.monotonic() - started < 5
    assert "endpoint" in str(caught.value) and SECRET not in str(caught.value)


def test_refused_credentials_are_named_and_never_shown(
    driver: LibcloudDriver, host: HostInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys now
    with pytest.raises(CloudError) as caught:
        asyncio.run(driver.probe(host))
    error = caught.value
    assert error.code == "AuthFailure" and not error.failover
    assert "refused the credentials" in str(error)
    for text in (str(error), repr(error), repr(host), repr(driver), repr(error.details())):
        assert SECRET not in text and KEY not in text


def test_a_host_without_credentials_is_told_what_to_give(
    driver: LibcloudDriver, host: HostInfo
) -> None:
    bare = HostInfo(id=1, name=host.name, options=host.options, labels={})
    with pytest.raises(CloudError, match="no credential 'key'"):
        asyncio.run(driver.probe(bare))


def test_translated_errors_scrub_credentials() -> None:
    error = translate_error(RuntimeError(f"boom {SECRET}"), "deploy", "ec2", [SECRET])
    assert SECRET not in str(error) and "***" in str(error)


def test_suspend_and_live_migration_are_unsupported_with_reasons(
    driver: LibcloudDriver, host: HostInfo
) -> None:
    with pytest.raises(Unsupported, match="memory"):
        driver.check_supported("suspend")
    with pytest.raises(Unsupported, match="cold migration"):
        asyncio.run(driver.live_migrate(host, "i-1", host))


def test_registry_knows_the_libcloud_driver() -> None:
    assert load_driver_class("libcloud") is LibcloudDriver


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"capacity": "m1.small=1"}, "needs a provider"),
        ({"provider": "no-such-cloud", "capacity": "m1.small=1"}, "no compute provider"),
        ({"provider": "ec2"}, "needs a capacity"),
        ({"provider": "ec2", "capacity": "m1.small=x"}, "whole number"),
        ({"provider": "ec2", "capacity": "a=1", "endpoint": "ftp://x"}, "not an http"),
        ({"provider": "ec2", "capacity": "a=1", "driver_args": "[1]"}, "JSON object"),
        ({"provider": "ec2", "capacity": "a=1", "driver_args": "{x"}, "not JSON"),
        ({"provider": "ec2", "capacity": "a=1", "driver_args": '{"api_key": "k"}'}, "cannot set"),
        ({"provider": "ec2", "capacity": "a=1", "timeout": "-1"}, "positive number"),
    ],
)
def test_bad_host_options_are_refused_with_the_fix(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_host_options(options)


def test_endpoint_and_driver_args_reach_the_libcloud_driver() -> None:
    cfg = parse_host_options(
        {
            "provider": "openstack",
            "capacity": "m1.small=2",
            "endpoint": "https://keystone.example:5000",
            "driver_args": '{"ex_force_auth_version": "3.x_password"}',
        }
    )
    kwargs = cfg.connection_kwargs({"ex_tenant_name": "demo"})
    assert kwargs["host"] == "keystone.example" and kwargs["port"] == 5000 and kwargs["secure"]
    assert kwargs["ex_force_auth_version"] == "3.x_password" and kwargs["ex_tenant_name"] == "demo"
    assert "signature_version" not in kwargs  # EC2 only


def test_section_selection_prefers_this_provider_and_region() -> None:
    template = {
        "MEMORY": "512",
        "PUBLIC_CLOUD": [
            {"TYPE": "libcloud", "PROVIDER": "gce", "IMAGE": "debian"},
            {"TYPE": "openstack", "REGION": "RegionTwo", "IMAGE": "two"},
            {"TYPE": "openstack", "REGION": "RegionOne", "IMAGE": "one"},
        ],
    }
    assert select_section(template, "gce", None)["IMAGE"] == "debian"
    assert select_section(template, "openstack", "RegionOne")["IMAGE"] == "one"
    with pytest.raises(InvalidInput, match="no PUBLIC_CLOUD section for libcloud provider ec2"):
        select_section(template, "ec2", "us-east-1")
