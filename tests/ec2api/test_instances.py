"""RunInstances, DescribeInstances and the life-cycle actions through boto3."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from stratus.model.ec2ids import InstanceMetadata
from tests.ec2api.conftest import (
    ZONE,
    Account,
    Zone,
    error_code,
    instances_of,
    run,
    wait_states,
)


def test_an_instance_runs_stops_starts_reboots_and_terminates(zone: Zone, alice: Account) -> None:
    ec2 = alice.client
    reply = ec2.run_instances(
        ImageId=zone.ami,
        MinCount=1,
        MaxCount=1,
        InstanceType="t2.micro",
        Placement={"AvailabilityZone": ZONE},
    )
    assert reply["OwnerId"] == f"{zone.daemon.api('GET', f'/users/{alice.name}')['id']:012d}"
    instance = reply["Instances"][0]
    assert instance["State"]["Name"] == "pending" and instance["ImageId"] == zone.ami
    ids = [instance["InstanceId"]]

    running = wait_states(ec2, ids, "running")[0]
    assert running["InstanceType"] == "t2.micro"
    assert running["Placement"]["AvailabilityZone"] == ZONE
    assert running["PrivateIpAddress"].startswith("192.168.160.")  # the ec2net lease
    vm = zone.vm(ids[0])
    assert (vm["vcpu"], vm["memory"]) == (1, 1024)  # t2.micro from the catalogue

    stopping = ec2.stop_instances(InstanceIds=ids)["StoppingInstances"][0]
    assert stopping["PreviousState"]["Name"] == "running"
    assert stopping["CurrentState"]["Name"] in ("stopping", "stopped")
    wait_states(ec2, ids, "stopped")
    assert (
        ec2.stop_instances(InstanceIds=ids)["StoppingInstances"][0]["CurrentState"]["Name"]
        == "stopped"
    )

    assert (
        ec2.start_instances(InstanceIds=ids)["StartingInstances"][0]["PreviousState"]["Name"]
        == "stopped"
    )
    wait_states(ec2, ids, "running")
    ec2.reboot_instances(InstanceIds=ids)
    terminating = ec2.terminate_instances(InstanceIds=ids)["TerminatingInstances"][0]
    assert terminating["CurrentState"]["Name"] in ("shutting-down", "terminated")
    wait_states(ec2, ids, "terminated")
    assert zone.vm(ids[0])["state"] == "DONE"
    again = ec2.terminate_instances(InstanceIds=ids)["TerminatingInstances"][0]  # idempotent
    assert again["CurrentState"]["Name"] == "terminated"


def test_run_instances_writes_the_template_the_guest_and_metadata_service_read(
    zone: Zone, alice: Account
) -> None:
    ec2 = alice.client
    ec2.import_key_pair(KeyName="laptop", PublicKeyMaterial=_ED25519_PUBLIC.encode())
    ec2.create_security_group(GroupName="web", Description="web servers")
    script = b"#!/bin/sh\necho hello > /tmp/hello\n"
    [instance] = run(
        ec2,
        zone,
        KeyName="laptop",
        UserData=script.decode(),  # boto3 base64-encodes it
        SecurityGroups=["web"],
        MetadataOptions={"HttpTokens": "required"},
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}
        ],
    )
    vm = zone.vm(instance)
    template = vm["template"]
    assert vm["name"] == "web-1"
    meta = InstanceMetadata.from_section(template["METADATA"])
    assert meta.instance_type == "t2.micro" and meta.key_name == "laptop"
    assert meta.public_key == _ED25519_PUBLIC.rsplit(" ", 1)[0]
    assert meta.user_data == script and meta.security_groups == ("web",)
    assert meta.availability_zone == ZONE and meta.ami_id == zone.ami
    assert meta.http_tokens == "required"  # IMDSv2 only, for the metadata service
    assert template["DISK"] == {"IMAGE": "tiny"} and template["NIC"] == {"NETWORK": "ec2net"}
    assert template["CONTEXT"]["SSH_PUBLIC_KEY"] == meta.public_key
    assert base64.b64decode(template["CONTEXT"]["START_SCRIPT_BASE64"]) == script
    described = instances_of(ec2, InstanceIds=[instance])[0]
    assert described["KeyName"] == "laptop"
    assert described["SecurityGroups"][0]["GroupName"] == "web"
    assert described["Tags"] == [{"Key": "Name", "Value": "web-1"}]
    assert described["MetadataOptions"]["HttpTokens"] == "required"
    ec2.terminate_instances(InstanceIds=[instance])


def test_kernel_and_ramdisk_ids_boot_the_image_directly(zone: Zone, alice: Account) -> None:
    [instance] = run(alice.client, zone, KernelId=zone.aki, RamdiskId=zone.ari)
    template = zone.vm(instance)["template"]
    assert template["OS"]["KERNEL"] == "vmlinuz" and template["OS"]["INITRD"] == "initrd"
    assert "root=/dev/vda" in template["OS"]["KERNEL_CMD"]
    described = instances_of(alice.client, InstanceIds=[instance])[0]
    assert (described["KernelId"], described["RamdiskId"]) == (zone.aki, zone.ari)
    alice.client.terminate_instances(InstanceIds=[instance])


def test_min_and_max_count_make_one_reservation(zone: Zone, alice: Account) -> None:
    reply = alice.client.run_instances(ImageId=zone.ami, MinCount=2, MaxCount=3)
    assert len(reply["Instances"]) == 3
    assert [i["AmiLaunchIndex"] for i in reply["Instances"]] == [0, 1, 2]
    assert {i["InstanceType"] for i in reply["Instances"]} == {"m1.small"}  # EC2's default
    [reservation] = alice.client.describe_instances(
        Filters=[{"Name": "reservation-id", "Values": [reply["ReservationId"]]}]
    )["Reservations"]
    assert len(reservation["Instances"]) == 3
    alice.client.terminate_instances(InstanceIds=[i["InstanceId"] for i in reply["Instances"]])


def test_a_client_token_returns_the_same_reservation_on_retry(zone: Zone, alice: Account) -> None:
    before = zone.vm_count()
    first = alice.client.run_instances(
        ImageId=zone.ami, MinCount=2, MaxCount=2, ClientToken="once-1"
    )
    again = alice.client.run_instances(
        ImageId=zone.ami, MinCount=2, MaxCount=2, ClientToken="once-1"
    )
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [
        i["InstanceId"] for i in first["Instances"]
    ]
    assert zone.vm_count() == before + 2
    alice.client.terminate_instances(InstanceIds=[i["InstanceId"] for i in first["Instances"]])


def test_the_quota_refuses_with_instance_limit_exceeded_and_creates_nothing(zone: Zone) -> None:
    carol = zone.user("carol", quota={"vms": 3, "cpu": 4})
    ids = run(carol.client, zone, count=2)
    before = zone.vm_count()
    code, message = error_code(lambda: run(carol.client, zone, count=2))
    assert code == "InstanceLimitExceeded" and "1 more" in message
    assert zone.vm_count() == before
    partial = carol.client.run_instances(ImageId=zone.ami, MinCount=1, MaxCount=5)
    assert len(partial["Instances"]) == 1  # as many as the quota allows, at least MinCount
    big = error_code(
        lambda: carol.client.run_instances(
            ImageId=zone.ami, MinCount=1, MaxCount=1, InstanceType="m5.2xlarge"
        )
    )
    assert big[0] == "InstanceLimitExceeded"
    carol.client.terminate_instances(InstanceIds=[*ids, partial["Instances"][0]["InstanceId"]])
    wait_states(carol.client, ids, "terminated")
    assert len(run(carol.client, zone, count=2)) == 2  # terminated ones no longer count


def test_one_user_can_neither_see_nor_touch_another_users_instances(
    zone: Zone, alice: Account, bob: Account
) -> None:
    [mine] = run(alice.client, zone)
    assert instances_of(bob.client) == []
    for call in (
        lambda: bob.client.describe_instances(InstanceIds=[mine]),
        lambda: bob.client.terminate_instances(InstanceIds=[mine]),
        lambda: bob.client.stop_instances(InstanceIds=[mine]),
        lambda: bob.client.create_tags(Resources=[mine], Tags=[{"Key": "a", "Value": "b"}]),
    ):
        assert error_code(call)[0] == "InvalidInstanceID.NotFound"
    assert zone.vm(mine)["state"] != "DONE"
    alice.client.terminate_instances(InstanceIds=[mine])


def test_unknown_and_malformed_ids_and_parameters_are_named(zone: Zone, alice: Account) -> None:
    ec2 = alice.client
    code, message = error_code(lambda: ec2.describe_instances(InstanceIds=["i-0000000000000ffff"]))
    assert code == "InvalidInstanceID.NotFound" and "i-0000000000000ffff" in message
    code, message = error_code(lambda: ec2.terminate_instances(InstanceIds=["i-xyz"]))
    assert code == "InvalidInstanceID.Malformed" and "i-xyz" in message
    code, message = error_code(lambda: run(ec2, zone, InstanceType="x9.huge"))
    assert code == "InvalidParameterValue" and "x9.huge" in message and "InstanceType" in message
    code, message = error_code(
        lambda: ec2.run_instances(ImageId="ami-0000ffff", MinCount=1, MaxCount=1)
    )
    assert code == "InvalidAMIID.NotFound" and "ami-0000ffff" in message
    code, _ = error_code(lambda: ec2.run_instances(ImageId="ami-zz", MinCount=1, MaxCount=1))
    assert code == "InvalidAMIID.Malformed"
    code, message = error_code(
        lambda: ec2.run_instances(
            ImageId=zone.ami, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "elsewhere-1a"}
        )
    )
    assert code == "InvalidParameterValue" and "elsewhere-1a" in message
    code, message = error_code(
        lambda: ec2.run_instances(ImageId=zone.ami, MinCount=1, MaxCount=1, KeyName="nope")
    )
    assert code == "InvalidKeyPair.NotFound" and "nope" in message
    code, message = error_code(
        lambda: ec2.describe_instances(Filters=[{"Name": "flavour", "Values": ["x"]}])
    )
    assert code == "InvalidParameterValue" and "flavour" in message


def test_dry_run_answers_dry_run_operation_and_changes_nothing(zone: Zone, alice: Account) -> None:
    before = zone.vm_count()
    code, _ = error_code(
        lambda: alice.client.run_instances(ImageId=zone.ami, MinCount=1, MaxCount=1, DryRun=True)
    )
    assert code == "DryRunOperation"
    assert zone.vm_count() == before
    [instance] = run(alice.client, zone)
    code, _ = error_code(
        lambda: alice.client.terminate_instances(InstanceIds=[instance], DryRun=True)
    )
    assert code == "DryRunOperation"
    assert zone.vm(instance)["state"] != "DONE"
    code, _ = error_code(lambda: alice.client.create_key_pair(KeyName="dry", DryRun=True))
    assert code == "DryRunOperation"
    assert alice.client.describe_key_pairs()["KeyPairs"] == []
    alice.client.terminate_instances(InstanceIds=[instance])


def test_describe_pages_with_max_results_and_next_token(zone: Zone, alice: Account) -> None:
    ids = run(alice.client, zone, count=12)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        kwargs = {"MaxResults": 5} | ({"NextToken": token} if token else {})
        page = alice.client.describe_instances(**kwargs)
        seen += [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert pages == 3 and seen == sorted(ids)
    code, message = error_code(
        lambda: alice.client.describe_instances(MaxResults=5, NextToken="bogus")
    )
    assert code == "InvalidParameterValue" and "NextToken" in message
    alice.client.terminate_instances(InstanceIds=ids)


def test_filters_by_state_type_tag_and_id_with_wildcards(zone: Zone, alice: Account) -> None:
    ec2 = alice.client
    small = run(
        ec2,
        zone,
        count=2,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "web-blue"}]}
        ],
    )
    large = ec2.run_instances(
        ImageId=zone.ami,
        MinCount=1,
        MaxCount=1,
        InstanceType="t2.small",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "db"}]}],
    )["Instances"][0]["InstanceId"]
    wait_states(ec2, [*small, large], "running")
    ec2.stop_instances(InstanceIds=[small[1]])
    wait_states(ec2, [small[1]], "stopped")

    def ids(*filters: tuple[str, list[str]]) -> list[str]:
        found = instances_of(ec2, Filters=[{"Name": n, "Values": v} for n, v in filters])
        return sorted(i["InstanceId"] for i in found)

    assert ids(("instance-type", ["t2.small"])) == [large]
    assert ids(("tag:team", ["web-*"])) == sorted(small)
    assert ids(("tag:team", ["WEB-*"])) == []  # filters are case-sensitive
    assert ids(("instance-state-name", ["stopped"])) == [small[1]]
    assert ids(("instance-state-name", ["running"]), ("tag:team", ["web-blue", "db"])) == sorted(
        [small[0], large]
    )
    assert ids(("instance-id", [large, small[0]])) == sorted([large, small[0]])
    assert ids(("tag-key", ["team"])) == sorted([*small, large])
    ec2.terminate_instances(InstanceIds=[*small, large])


def test_terminated_instances_stay_visible_as_terminated(zone: Zone, alice: Account) -> None:
    [instance] = run(alice.client, zone)
    alice.client.terminate_instances(InstanceIds=[instance])
    [gone] = wait_states(alice.client, [instance], "terminated")
    assert gone["State"] == {"Code": 48, "Name": "terminated"}
    filtered = instances_of(
        alice.client, Filters=[{"Name": "instance-state-name", "Values": ["terminated"]}]
    )
    assert instance in [i["InstanceId"] for i in filtered]
    code, _ = error_code(lambda: alice.client.start_instances(InstanceIds=[instance]))
    assert code == "IncorrectInstanceState"


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


_ED25519_PUBLIC = _public_key() + " test@laptop"
