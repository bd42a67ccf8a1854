"""The ec2 driver against a real EC2 API (moto's server on loopback), and its pure parts."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import count
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from stratus.drivers.base import DeploySpec, HostInfo, InstanceState
from stratus.drivers.cloud_errors import CloudError, CloudTimeout, CloudUnreachable
from stratus.drivers.ec2 import Ec2Driver
from stratus.drivers.ec2_spec import (
    parse_capacity,
    parse_type_sizes,
    select_section,
    translate_error,
)
from stratus.drivers.registry import load_driver_class
from stratus.model.errors import DriverError, HostUnreachable, InvalidInput, Unsupported
from tests.moto_server import MOTO_CREDENTIALS, closed_port_endpoint, moto_endpoint_fixture

REGION = "us-east-1"
moto_endpoint = moto_endpoint_fixture()
_vm_ids = count(9001)


@pytest.fixture
def ec2(moto_endpoint: str) -> Any:
    """A bare boto3 client on the same endpoint, to check what the driver did."""
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        aws_access_key_id=MOTO_CREDENTIALS["access_key_id"],
        aws_secret_access_key=MOTO_CREDENTIALS["secret_access_key"],
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}),
    )


@pytest.fixture
def host(moto_endpoint: str, request: pytest.FixtureRequest) -> HostInfo:
    name = f"aws-{request.node.name[:30]}"  # moto state is shared: one host name per test
    return HostInfo(
        id=1,
        name=name,
        options={
            "region": REGION,
            "endpoint": moto_endpoint,
            "capacity": "m1.small=4,m1.large=1",
            "poll_interval": 0.05,
            "wait_timeout": 10,
        },
        labels={},
        secrets=dict(MOTO_CREDENTIALS),
    )


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Ec2Driver]:
    drv = Ec2Driver(tmp_path)
    yield drv
    asyncio.run(drv.close())


def _ami(ec2: Any) -> str:
    return str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def _spec(
    section: dict[str, str],
    *,
    vm_id: int,
    request_id: str | None = None,
    checkpoint: str | None = None,
    user_data: bytes | None = None,
) -> DeploySpec:
    return DeploySpec(
        request_id=request_id or f"vm-{vm_id}-1",
        vm_id=vm_id,
        name=f"web-{vm_id}",
        cpu=0.5,
        vcpu=1,
        memory=128,
        template={"CPU": "0.5", "MEMORY": "128", "EC2": section},
        checkpoint=checkpoint,
        context={"user-data": user_data} if user_data is not None else None,
    )


def _live(ec2: Any, vm_id: int) -> list[dict[str, Any]]:
    reply = ec2.describe_instances(
        Filters=[
            {"Name": "tag:stratus:vm", "Values": [str(vm_id)]},
            {
                "Name": "instance-state-name",
                "Values": ["pending", "running", "stopping", "stopped"],
            },
        ]
    )
    return [i for r in reply["Reservations"] for i in r["Instances"]]


def _appendix_b(ec2: Any, vm_id: int) -> tuple[dict[str, str], str]:
    """The appendix-B section with a real AMI, key pair and elastic IP of the endpoint."""
    key = f"gsg-keypair-{vm_id}"
    ec2.create_key_pair(KeyName=key)
    ip = ec2.allocate_address(Domain="vpc")["PublicIp"]
    section = {
        "AMI": _ami(ec2),
        "KEYPAIR": key,
        "ELASTICIP": ip,
        "AUTHORIZED_PORTS": "22,80",
        "INSTANCETYPE": "m1.small",
        "TAGS": "team=web",
    }
    return section, ip


def test_appendix_b_template_deploys_with_tags_ports_address_and_user_data(
    driver: Ec2Driver, host: HostInfo, ec2: Any
) -> None:
    vm_id = next(_vm_ids)
    section, ip = _appendix_b(ec2, vm_id)
    cloud_init = b"#cloud-config\nhostname: web\n"
    spec = _spec(section, vm_id=vm_id, user_data=cloud_init)

    info = asyncio.run(driver.deploy(host, spec))

    assert info.state is InstanceState.RUNNING
    assert info.address == ip
    assert info.extra["instance_type"] == "m1.small"
    [instance] = _live(ec2, vm_id)
    assert instance["InstanceId"] == info.deploy_id
    assert instance["KeyName"] == section["KEYPAIR"]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["Name"] == f"web-{vm_id}"
    assert tags["stratus:host"] == host.name
    assert tags["team"] == "web"
    [group] = ec2.describe_security_groups(GroupNames=[f"stratus-{vm_id}"])["SecurityGroups"]
    assert group["GroupId"] in {g["GroupId"] for g in instance["SecurityGroups"]}
    assert sorted(p["FromPort"] for p in group["IpPermissions"]) == [22, 80]
    [address] = ec2.describe_addresses(PublicIps=[ip])["Addresses"]
    assert address["InstanceId"] == info.deploy_id
    attribute = ec2.describe_instance_attribute(InstanceId=info.deploy_id, Attribute="userData")
    assert base64.b64decode(attribute["UserData"]["Value"]) == cloud_init

    # a retried deploy (same request id) finds the instance instead of making another
    again = asyncio.run(driver.deploy(host, spec))
    assert again.deploy_id == info.deploy_id
    assert len(_live(ec2, vm_id)) == 1

    asyncio.run(driver.cleanup(host, vm_id, spec.request_id, info.deploy_id))
    assert _live(ec2, vm_id) == []
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"stratus-{vm_id}"]}]
    )["SecurityGroups"]
    assert groups == []
    # idempotent: a second cleanup finds nothing to do and succeeds
    asyncio.run(driver.cleanup(host, vm_id, spec.request_id, info.deploy_id))


def test_probe_sums_quotas_and_lists_tagged_instances_with_their_state(
    driver: Ec2Driver, host: HostInfo, ec2: Any
) -> None:
    vm_id = next(_vm_ids)
    section = {"AMI": _ami(ec2), "INSTANCETYPE": "m1.small"}
    info = asyncio.run(driver.deploy(host, _spec(section, vm_id=vm_id)))
    # an instance tagged for this host that Stratus did not make is listed too (an orphan)
    stray = ec2.run_instances(
        ImageId=section["AMI"],
        InstanceType="t2.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "stratus:host", "Value": host.name}]}
        ],
    )["Instances"][0]["InstanceId"]

    result = asyncio.run(driver.probe(host))

    assert result.cpu == 4 * 1 + 1 * 2
    assert result.memory == 4 * 1740 + 7680
    assert result.attributes == {
        "PUBLIC_CLOUD": "YES",
        "PROVIDER": "ec2",
        "REGION": REGION,
        "COUNTRY": "US",
        "INSTANCE_TYPES": "m1.small=4,m1.large=1",
        "HYPERVISOR": "ec2",
    }
    assert set(result.instances) == {info.deploy_id, stray}
    assert result.instances[info.deploy_id].state is InstanceState.RUNNING
    assert result.instances[info.deploy_id].address
    assert result.free_memory == result.memory - 1740 - 1024

    asyncio.run(driver.destroy(host, stray))
    asyncio.run(driver.cleanup(host, vm_id, "x", info.deploy_id))
    assert asyncio.run(driver.probe(host)).instances == {}  # terminated ones are gone


def test_stop_then_deploy_from_checkpoint_starts_the_same_instance(
    driver: Ec2Driver, host: HostInfo, ec2: Any
) -> None:
    vm_id = next(_vm_ids)
    section = {"AMI": _ami(ec2), "INSTANCETYPE": "m1.small"}
    info = asyncio.run(driver.deploy(host, _spec(section, vm_id=vm_id)))

    checkpoint = asyncio.run(driver.save(host, info.deploy_id))
    assert checkpoint == f"ec2-stopped:{info.deploy_id}"
    assert _live(ec2, vm_id)[0]["State"]["Name"] == "stopped"
    assert asyncio.run(driver.probe(host)).instances[info.deploy_id].state is InstanceState.OFF
    # stop's epilog keeps the stopped instance
    asyncio.run(driver.cleanup(host, vm_id, "vm-1", None, keep_disks=True))

    restored = asyncio.run(
        driver.deploy(host, _spec(section, vm_id=vm_id, request_id="r2", checkpoint=checkpoint))
    )
    assert restored.deploy_id == info.deploy_id
    assert restored.state is InstanceState.RUNNING
    assert len(_live(ec2, vm_id)) == 1

    asyncio.run(driver.reboot(host, info.deploy_id, hard=False))
    assert _live(ec2, vm_id)[0]["State"]["Name"] == "running"

    asyncio.run(driver.shutdown(host, info.deploy_id, timeout=10))
    asyncio.run(driver.destroy(host, info.deploy_id))  # the engine's next step: no error
    assert _live(ec2, vm_id) == []


def test_destroy_of_an_instance_ec2_never_knew_succeeds(driver: Ec2Driver, host: HostInfo) -> None:
    asyncio.run(driver.destroy(host, "i-0123456789abcdef0"))


def test_suspend_and_live_migration_are_unsupported_with_a_reason(
    driver: Ec2Driver, host: HostInfo
) -> None:
    with pytest.raises(Unsupported, match="memory"):
        driver.check_supported("suspend")
    with pytest.raises(Unsupported, match="cold migration"):
        asyncio.run(driver.live_migrate(host, "i-1", host))
    driver.check_supported("save")  # stop works: StopInstances
    driver.check_supported("resume")  # resume of a stopped VM is a deploy from checkpoint


def test_unreachable_endpoint_is_host_unreachable_fast(driver: Ec2Driver, host: HostInfo) -> None:
    dead = HostInfo(
        1,
        "dead",
        {**host.options, "endpoint": closed_port_endpoint()},
        {},
        secrets=dict(MOTO_CREDENTIALS),
    )
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        asyncio.run(driver.probe(dead))
    assert time.monotonic() - started < 10
    assert caught.value.details()["cloud_error"] == "EndpointConnectionError"
    _assert_no_secret(caught.value)
    assert MOTO_CREDENTIALS["secret_access_key"] not in repr(dead)
    assert MOTO_CREDENTIALS["access_key_id"] not in repr(dead)


def test_template_errors_name_the_fix(driver: Ec2Driver, host: HostInfo, ec2: Any) -> None:
    with pytest.raises(InvalidInput, match="no EC2 section"):
        asyncio.run(driver.deploy(host, DeploySpec("r", 1, "x", 1, 1, 128, {"MEMORY": "128"})))
    huge = replace(_spec({"AMI": _ami(ec2)}, vm_id=next(_vm_ids)), memory=64 * 1024)
    with pytest.raises(InvalidInput, match="INSTANCETYPE"):
        asyncio.run(driver.deploy(host, huge))
    with pytest.raises(InvalidInput, match="no-such-group"):
        asyncio.run(
            driver.deploy(
                host,
                _spec(
                    {
                        "AMI": _ami(ec2),
                        "INSTANCETYPE": "m1.small",
                        "SECURITYGROUPS": "no-such-group",
                    },
                    vm_id=next(_vm_ids),
                ),
            )
        )


def test_without_instancetype_the_smallest_quota_type_that_fits_runs(
    driver: Ec2Driver, host: HostInfo, ec2: Any
) -> None:
    spec = _spec({"AMI": _ami(ec2)}, vm_id=next(_vm_ids))
    for memory, expected in ((128, "m1.small"), (4096, "m1.large")):
        sized = replace(spec, memory=memory, request_id=f"{spec.request_id}-{memory}")
        info = asyncio.run(driver.deploy(host, sized))
        assert info.extra["instance_type"] == expected
        asyncio.run(driver.destroy(host, info.deploy_id))


def test_cloud_errors_from_the_endpoint_carry_its_code(driver: Ec2Driver, host: HostInfo) -> None:
    with pytest.raises(CloudError) as caught:
        asyncio.run(driver.reboot(host, "i-0123456789abcdef0", hard=True))
    assert caught.value.details() == {
        "cloud_error": "InvalidInstanceID.NotFound",
        "failover": False,
    }
    assert "InvalidInstanceID.NotFound" in str(caught.value)
    _assert_no_secret(caught.value)


# -- pure parts ------------------------------------------------------------------------------


def test_capacity_parses_quotas_and_rejects_bad_text() -> None:
    assert parse_capacity("m1.small=4, m1.large=1") == {"m1.small": 4, "m1.large": 1}
    for bad in ("", "m1.small", "m1.small=four", "m1.small=-1", "a=1,a=2", "=3"):
        with pytest.raises(InvalidInput):
            parse_capacity(bad)
    assert parse_type_sizes("x1.big=64:1048576")["x1.big"].memory == 1048576
    with pytest.raises(InvalidInput):
        parse_type_sizes("x1.big=64")


def test_a_new_ec2_host_gets_its_capacity_and_labels_from_region_and_quotas() -> None:
    driver = Ec2Driver(Path("/nonexistent"))
    defaults = driver.host_defaults({"region": "eu-west-1", "capacity": "m1.small=4,m1.large=1"})
    assert (defaults.cpu, defaults.memory) == (4 * 1 + 2, 4 * 1740 + 7680)
    assert defaults.labels == {
        "PUBLIC_CLOUD": "YES",
        "PROVIDER": "ec2",
        "REGION": "eu-west-1",
        "COUNTRY": "IE",
        "INSTANCE_TYPES": "m1.small=4,m1.large=1",
    }
    with pytest.raises(InvalidInput, match="needs a region"):
        driver.host_defaults({"capacity": "m1.small=1"})
    with pytest.raises(InvalidInput, match=r"unknown instance types x9\.huge"):
        driver.host_defaults({"region": "eu-west-1", "capacity": "x9.huge=1"})


def test_section_for_the_hosts_region_is_chosen() -> None:
    template = {
        "MEMORY": "128",
        "EC2": {"AMI": "ami-1", "INSTANCETYPE": "m1.small"},
        "PUBLIC_CLOUD": [
            {"TYPE": "ec2", "REGION": "eu-west-1", "AMI": "ami-eu"},
            {"TYPE": "gce", "REGION": "us-east-1", "IMAGE": "x"},
        ],
    }
    assert select_section(template, "eu-west-1")["AMI"] == "ami-eu"
    assert select_section(template, "us-east-1")["AMI"] == "ami-1"  # gce is not ours


def _client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


@pytest.mark.parametrize(
    "code",
    [
        "InsufficientInstanceCapacity",
        "InstanceLimitExceeded",
        "Unsupported",
        "RequestLimitExceeded",
    ],
)
def test_capacity_and_limit_errors_are_marked_for_failover(code: str) -> None:
    error = translate_error(_client_error(code, "try later"), "run_instances")
    assert isinstance(error, DriverError)
    assert error.details() == {"cloud_error": code, "failover": True}
    assert code in str(error)


def test_request_errors_and_timeouts_are_told_apart() -> None:
    bad = translate_error(_client_error("InvalidAMIID.NotFound", "no ami"), "run_instances")
    assert bad.details() == {"cloud_error": "InvalidAMIID.NotFound", "failover": False}
    slow = translate_error(ReadTimeoutError(endpoint_url="http://x"), "run_instances")
    assert isinstance(slow, CloudTimeout)
    assert slow.details()["failover"] is True
    assert isinstance(translate_error(_client_error("AuthFailure", "x"), "probe"), CloudError)


def test_auth_failure_names_the_code_and_never_the_key() -> None:
    key, secret = MOTO_CREDENTIALS["access_key_id"], MOTO_CREDENTIALS["secret_access_key"]
    exc = _client_error("AuthFailure", f"key {key} with {secret} is not valid")
    error = translate_error(exc, "describe_instances", [key, secret])
    assert "AuthFailure" in str(error)
    assert key not in str(error) and secret not in str(error)
    assert key not in repr(error) and secret not in repr(error)


def test_registry_knows_ec2() -> None:
    assert load_driver_class("ec2") is Ec2Driver


def test_unreachable_is_a_cloud_error_too() -> None:
    assert issubclass(CloudUnreachable, HostUnreachable)


def _assert_no_secret(exc: BaseException) -> None:
    for value in MOTO_CREDENTIALS.values():
        assert value not in str(exc)
        assert value not in repr(exc)
