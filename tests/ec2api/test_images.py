"""RegisterImage, DescribeImages and DeregisterImage; the sha256 check of an import."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from tests.ec2api.conftest import Account, Zone, error_code, run
from tests.imagefiles import FileServer, make_qcow2


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _image(client: Any, ami: str, states: tuple[str, ...] = ("available", "failed")) -> Any:
    def settled() -> Any:
        [image] = client.describe_images(ImageIds=[ami])["Images"]
        return image if image["State"] in states else None

    return wait_for(f"{ami} settled", settled, 20, 0.1)


def test_register_a_local_image_run_it_and_deregister_it(zone: Zone, alice: Account) -> None:
    disk = make_qcow2(zone.import_dir / "alice-os.qcow2", "8M")
    ami = alice.client.register_image(
        Name="alice-os",
        ImageLocation=str(disk),
        KernelId=zone.aki,
        RamdiskId=zone.ari,
        RootDeviceName="/dev/vdb",
        Description="Alice's OS",
    )["ImageId"]
    image = _image(alice.client, ami)
    assert image["State"] == "available" and image["Name"] == "alice-os"
    assert (image["KernelId"], image["RamdiskId"]) == (zone.aki, zone.ari)
    assert image["OwnerId"] == f"{zone.daemon.api('GET', f'/users/{alice.name}')['id']:012d}"

    mine = alice.client.describe_images(Owners=["self"])["Images"]
    assert [i["ImageId"] for i in mine] == [ami]
    admin = alice.client.describe_images(Owners=["stratus"])["Images"]
    assert zone.ami in [i["ImageId"] for i in admin] and ami not in [i["ImageId"] for i in admin]
    named = alice.client.describe_images(Filters=[{"Name": "name", "Values": ["alice-*"]}])
    assert [i["ImageId"] for i in named["Images"]] == [ami]

    [instance] = alice.client.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"]
    template = zone.vm(instance["InstanceId"])["template"]
    assert template["DISK"] == {"IMAGE": "alice-os"}
    assert template["OS"]["KERNEL"] == "vmlinuz" and "root=/dev/vdb" in template["OS"]["KERNEL_CMD"]
    alice.client.terminate_instances(InstanceIds=[instance["InstanceId"]])

    code, _ = error_code(
        lambda: alice.client.register_image(Name="alice-os", ImageLocation=str(disk))
    )
    assert code == "InvalidAMIName.Duplicate"
    wait_for("VM ended", lambda: zone.vm(instance["InstanceId"])["state"] == "DONE", 15, 0.1)
    alice.client.deregister_image(ImageId=ami)
    code, _ = error_code(lambda: alice.client.describe_images(ImageIds=[ami]))
    assert code == "InvalidAMIID.NotFound"


def test_only_the_owner_may_deregister_an_image(zone: Zone, alice: Account, bob: Account) -> None:
    code, _ = error_code(lambda: bob.client.deregister_image(ImageId=zone.ami))
    assert code == "AuthFailure"
    assert alice.client.describe_images(ImageIds=[zone.ami])["Images"][0]["State"] == "available"


def test_image_locations_outside_the_import_dirs_are_refused(zone: Zone, alice: Account) -> None:
    for location in ("/etc/passwd", str(zone.daemon.data_dir / "stratus.db"), "relative/path"):
        code, message = error_code(
            lambda loc=location: alice.client.register_image(Name="sneaky", ImageLocation=loc)
        )
        assert code == "InvalidParameterValue" and "ImageLocation" in message


def test_a_sha256_tag_is_verified_by_the_import(
    zone: Zone, alice: Account, file_server: FileServer
) -> None:
    disk = make_qcow2(zone.import_dir / "checked.qcow2", "8M")
    body = disk.read_bytes()
    url = file_server.serve("/checked.qcow2", body)
    digest = hashlib.sha256(body).hexdigest()

    def register(name: str, checksum: str) -> str:
        tags = [{"Key": "stratus:sha256", "Value": checksum}]
        return str(
            alice.client.register_image(
                Name=name,
                ImageLocation=url,
                TagSpecifications=[{"ResourceType": "image", "Tags": tags}],
            )["ImageId"]
        )

    good = _image(alice.client, register("checked-good", digest))
    assert good["State"] == "available"
    bad = _image(alice.client, register("checked-bad", "0" * 64))
    assert bad["State"] == "failed" and "not the expected" in bad["StateReason"]["Message"]
    code, _ = error_code(
        lambda: alice.client.run_instances(ImageId=bad["ImageId"], MinCount=1, MaxCount=1)
    )
    assert code == "InvalidAMIID.Unavailable"
    code, _ = error_code(lambda: register("checked-typo", "abc"))
    assert code == "InvalidParameterValue"


def test_a_pending_image_cannot_run_yet(
    zone: Zone, alice: Account, file_server: FileServer
) -> None:
    disk = make_qcow2(zone.import_dir / "slow.qcow2", "8M")
    url = file_server.serve("/slow.qcow2", disk.read_bytes(), chunk=4096, delay=0.02)
    ami = alice.client.register_image(Name="slow-os", ImageLocation=url)["ImageId"]
    code, message = error_code(
        lambda: alice.client.run_instances(ImageId=ami, MinCount=1, MaxCount=1)
    )
    assert code == "InvalidAMIID.Unavailable" and "pending" in message
    alice.client.deregister_image(ImageId=ami)  # stops the import


def test_run_instances_refuses_images_that_are_not_machine_images(
    zone: Zone, alice: Account
) -> None:
    kernel_as_ami = "ami-" + zone.aki.split("-", 1)[1]
    code, _ = error_code(
        lambda: alice.client.run_instances(ImageId=kernel_as_ami, MinCount=1, MaxCount=1)
    )
    assert code == "InvalidAMIID.NotFound"
    code, message = error_code(lambda: run(alice.client, zone, KernelId=zone.ari))
    assert code == "InvalidParameterValue" and "KernelId" in message
