"""Key pairs, security groups, elastic addresses, tags, regions and instance types."""

from __future__ import annotations

import base64
import hashlib

from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.ec2api.conftest import REGION, ZONE, Account, Zone, error_code, instances_of, run


def test_create_key_pair_returns_a_usable_private_key_once(alice: Account) -> None:
    ec2 = alice.client
    created = ec2.create_key_pair(KeyName="deploy")
    private = serialization.load_pem_private_key(created["KeyMaterial"].encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    expected = ":".join(f"{b:02x}" for b in hashlib.sha1(pkcs8).digest())
    assert created["KeyFingerprint"] == expected  # as EC2 computes it for keys it makes
    ed = ec2.create_key_pair(KeyName="modern", KeyType="ed25519")
    loaded = serialization.load_ssh_private_key(ed["KeyMaterial"].encode(), None)
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)

    listed = ec2.describe_key_pairs(IncludePublicKey=True)["KeyPairs"]
    assert [(k["KeyName"], k["KeyType"]) for k in listed] == [
        ("deploy", "rsa"),
        ("modern", "ed25519"),
    ]
    assert all("KeyMaterial" not in k for k in listed)
    assert listed[0]["PublicKey"].startswith("ssh-rsa ")
    assert (
        error_code(lambda: ec2.create_key_pair(KeyName="deploy"))[0] == "InvalidKeyPair.Duplicate"
    )
    ec2.delete_key_pair(KeyName="deploy")
    ec2.delete_key_pair(KeyName="deploy")  # deleting twice succeeds, as on EC2
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["modern"]
    code, message = error_code(lambda: ec2.describe_key_pairs(KeyNames=["deploy"]))
    assert code == "InvalidKeyPair.NotFound" and "deploy" in message


def test_import_key_pair_keeps_the_public_key_and_its_fingerprint(alice: Account) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    imported = alice.client.import_key_pair(KeyName="mine", PublicKeyMaterial=openssh + b" me@host")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert imported["KeyFingerprint"] == ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())
    [listed] = alice.client.describe_key_pairs(KeyNames=["mine"], IncludePublicKey=True)["KeyPairs"]
    assert listed["PublicKey"] == openssh.decode()
    code, _ = error_code(
        lambda: alice.client.import_key_pair(KeyName="bad", PublicKeyMaterial=b"nope")
    )
    assert code == "InvalidKey.Format"


def test_security_groups_keep_their_rules(alice: Account, bob: Account) -> None:
    ec2 = alice.client
    group = ec2.create_security_group(GroupName="web", Description="web servers")["GroupId"]
    admin = ec2.create_security_group(GroupName="admin", Description="bastions")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "UserIdGroupPairs": [{"GroupId": admin}],
            },
        ],
    )
    ec2.authorize_security_group_ingress(
        GroupName="web", IpProtocol="udp", FromPort=53, ToPort=53, CidrIp="10.0.0.0/8"
    )
    code, _ = error_code(
        lambda: ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 80,
                    "ToPort": 80,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
            ],
        )
    )
    assert code == "InvalidPermission.Duplicate"
    [web] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    rules = {(p["IpProtocol"], p["FromPort"]): p for p in web["IpPermissions"]}
    assert rules[("tcp", 80)]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    assert rules[("tcp", 22)]["UserIdGroupPairs"][0]["GroupId"] == admin
    assert rules[("udp", 53)]["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}]
    named = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["adm*"]}])
    assert [g["GroupId"] for g in named["SecurityGroups"]] == [admin]
    assert error_code(lambda: ec2.create_security_group(GroupName="web", Description="x"))[0] == (
        "InvalidGroup.Duplicate"
    )
    assert bob.client.describe_security_groups()["SecurityGroups"] == []
    code, _ = error_code(lambda: bob.client.describe_security_groups(GroupIds=[group]))
    assert code == "InvalidGroup.NotFound"
    ec2.delete_security_group(GroupId=admin)
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["web"]


def test_a_group_in_use_cannot_be_deleted(zone: Zone, alice: Account) -> None:
    group = alice.client.create_security_group(GroupName="app", Description="app")["GroupId"]
    [instance] = run(alice.client, zone, SecurityGroupIds=[group])
    [described] = instances_of(alice.client, InstanceIds=[instance])
    assert described["SecurityGroups"] == [{"GroupName": "app", "GroupId": group}]
    code, message = error_code(lambda: alice.client.delete_security_group(GroupId=group))
    assert code == "DependencyViolation" and instance in message
    alice.client.terminate_instances(InstanceIds=[instance])


def test_elastic_addresses_associate_with_instances(zone: Zone, alice: Account) -> None:
    ec2 = alice.client
    address = ec2.allocate_address(Domain="vpc")
    assert address["PublicIp"].startswith("203.0.113.")
    [instance] = run(ec2, zone)
    association = ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance)
    [described] = instances_of(ec2, InstanceIds=[instance])
    assert described["PublicIpAddress"] == address["PublicIp"]
    [listed] = ec2.describe_addresses(PublicIps=[address["PublicIp"]])["Addresses"]
    assert listed["InstanceId"] == instance
    assert listed["AssociationId"] == association["AssociationId"]
    code, _ = error_code(lambda: ec2.release_address(AllocationId=address["AllocationId"]))
    assert code == "InvalidIPAddress.InUse"
    ec2.disassociate_address(AssociationId=association["AssociationId"])
    assert "PublicIpAddress" not in instances_of(ec2, InstanceIds=[instance])[0]
    ec2.release_address(AllocationId=address["AllocationId"])
    assert ec2.describe_addresses()["Addresses"] == []
    code, _ = error_code(lambda: ec2.release_address(AllocationId=address["AllocationId"]))
    assert code == "InvalidAllocationID.NotFound"
    ec2.terminate_instances(InstanceIds=[instance])


def test_the_address_pool_runs_out_with_address_limit_exceeded(zone: Zone) -> None:
    frank = zone.user("frank")
    taken = []
    code = ""
    for _ in range(20):  # the zone's pool is a /28: 14 addresses for everyone
        try:
            taken.append(frank.client.allocate_address()["AllocationId"])
        except ClientError as exc:  # the error that ends the pool
            code = exc.response["Error"]["Code"]
            break
    assert code == "AddressLimitExceeded" and 1 <= len(taken) <= 14
    for allocation in taken:
        frank.client.release_address(AllocationId=allocation)


def test_tags_on_instances_groups_and_addresses_page_and_delete(zone: Zone, alice: Account) -> None:
    ec2 = alice.client
    [instance] = run(ec2, zone)
    group = ec2.create_security_group(GroupName="tagged", Description="t")["GroupId"]
    allocation = ec2.allocate_address()["AllocationId"]
    ec2.create_tags(
        Resources=[instance, group, allocation],
        Tags=[{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "ops"}],
    )
    tags = []
    token = None
    while True:
        page = ec2.describe_tags(MaxResults=5, **({"NextToken": token} if token else {}))
        tags += page["Tags"]
        token = page.get("NextToken")
        if not token:
            break
    assert len(tags) == 6
    assert {(t["ResourceId"], t["ResourceType"]) for t in tags} == {
        (instance, "instance"),
        (group, "security-group"),
        (allocation, "elastic-ip"),
    }
    only = ec2.describe_tags(Filters=[{"Name": "resource-type", "Values": ["instance"]}])["Tags"]
    assert {t["Key"] for t in only} == {"env", "owner"}
    ec2.delete_tags(Resources=[instance], Tags=[{"Key": "env", "Value": "staging"}])  # no match
    ec2.delete_tags(Resources=[instance], Tags=[{"Key": "owner"}])
    assert instances_of(ec2, InstanceIds=[instance])[0]["Tags"] == [{"Key": "env", "Value": "prod"}]
    code, _ = error_code(
        lambda: ec2.create_tags(Resources=[instance], Tags=[{"Key": "aws:x", "Value": "y"}])
    )
    assert code == "InvalidParameterValue"
    ec2.terminate_instances(InstanceIds=[instance])
    ec2.release_address(AllocationId=allocation)


def test_regions_zones_instance_types_and_account_attributes(zone: Zone, alice: Account) -> None:
    ec2 = alice.client
    [region] = ec2.describe_regions()["Regions"]
    assert region == {
        "RegionName": REGION,
        "Endpoint": zone.endpoint,
        "OptInStatus": "opt-in-not-required",
    }
    [az] = ec2.describe_availability_zones()["AvailabilityZones"]
    assert (az["ZoneName"], az["State"], az["RegionName"]) == (ZONE, "available", REGION)
    code, _ = error_code(lambda: ec2.describe_availability_zones(ZoneNames=["mars-1a"]))
    assert code == "InvalidParameterValue"
    [small] = ec2.describe_instance_types(InstanceTypes=["m1.small"])["InstanceTypes"]
    assert small["VCpuInfo"]["DefaultVCpus"] == 1 and small["MemoryInfo"]["SizeInMiB"] == 1740
    names = []
    for page in ec2.get_paginator("describe_instance_types").paginate(
        PaginationConfig={"PageSize": 5}
    ):
        names += [t["InstanceType"] for t in page["InstanceTypes"]]
    assert len(names) == len(set(names)) >= 10 and "t2.micro" in names
    code, message = error_code(lambda: ec2.describe_instance_types(InstanceTypes=["z9.tiny"]))
    assert code == "InvalidInstanceType" and "z9.tiny" in message
    attributes = ec2.describe_account_attributes(AttributeNames=["supported-platforms"])
    assert attributes["AccountAttributes"][0]["AttributeValues"] == [{"AttributeValue": "VPC"}]


def test_ed25519_fingerprints_are_the_sha256_of_the_key_blob(alice: Account) -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    imported = alice.client.import_key_pair(KeyName="ed", PublicKeyMaterial=openssh)
    blob = base64.b64decode(openssh.split()[1])
    assert imported["KeyFingerprint"] == base64.b64encode(hashlib.sha256(blob).digest()).decode()
