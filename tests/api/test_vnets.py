"""Network routes over a live server: create, list, show with leases, hold, release, delete."""

from __future__ import annotations

import httpx

from stratus.api.schemas import AddressOut, VnetCreated, VnetDetail, VnetPage
from stratus.store.vnets import LeaseRequest
from tests.api.conftest import LiveServer, submit

PRIVATE = """\
NAME = "private"
BRIDGE = "br0"
NETWORK_ADDRESS = "192.168.150.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "192.168.150.1"
AR = [ TYPE = "IP4", IP = "192.168.150.100", SIZE = "50" ]
AR = [ TYPE = "ETHER", MAC = "02:00:00:00:01:00", SIZE = "10" ]
"""


def _create(api: httpx.Client, template: str = PRIVATE) -> VnetCreated:
    response = api.post("/vnets", json={"template": template})
    assert response.status_code == 201, response.text
    return VnetCreated.model_validate(response.json())


def test_a_created_network_is_listed_and_shown_by_name_or_id(api: httpx.Client) -> None:
    created = _create(api)
    assert (created.name, created.driver, created.bridge) == ("private", "bridge", "br0")
    assert (created.size, created.used, created.held, created.free) == (60, 0, 0, 60)
    assert [(r.type, r.first_ip, r.last_ip) for r in created.ranges] == [
        ("IP4", "192.168.150.100", "192.168.150.149"),
        ("ETHER", None, None),
    ]
    assert created.ranges[1].last_mac == "02:00:00:00:01:09"
    assert created.warnings == []
    page = VnetPage.model_validate(api.get("/vnets").json())
    assert [v.name for v in page.items] == ["private"] and page.next is None
    by_name = VnetDetail.model_validate(api.get("/vnets/private").json())
    by_id = VnetDetail.model_validate(api.get(f"/vnets/{created.id}").json())
    assert by_name == by_id
    assert by_name.leases == []


def test_a_yaml_template_with_an_unknown_attribute_gives_a_warning(api: httpx.Client) -> None:
    created = _create(
        api, "NAME: nat\nNETWORK_ADDRESS: 10.0.2.0/24\nCOLOR: blue\nAR: {IP: 10.0.2.15, SIZE: 4}\n"
    )
    assert (created.driver, created.gateway, created.dns) == ("user", "10.0.2.2", "10.0.2.3")
    assert created.guest_ports == [22, 80]
    assert created.warnings == ["unknown attribute COLOR ignored"]


def test_a_template_error_is_a_400_with_line_and_column(api: httpx.Client) -> None:
    bad = PRIVATE.replace('SIZE = "50"', 'SIZE = "0"')
    response = api.post("/vnets", json={"template": bad})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "TemplateError"
    assert "AR 0: SIZE '0' must be a whole number" in error["message"]
    assert (error["line"], error["column"]) == (6, 46)  # the SIZE key


def test_a_duplicate_network_is_a_409(api: httpx.Client) -> None:
    _create(api)
    response = api.post("/vnets", json={"template": PRIVATE})
    assert response.status_code == 409
    assert "network 'private' already exists" in response.json()["error"]["message"]


def test_an_unknown_network_is_a_404_with_a_hint(api: httpx.Client) -> None:
    for response in (
        api.get("/vnets/nope"),
        api.delete("/vnets/nope"),
        api.post("/vnets/nope/hold", json={"address": "10.0.0.1"}),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["hint"] == "see `stratus vnet list`"


def test_hold_and_release_an_address(api: httpx.Client) -> None:
    _create(api)
    held = api.post("/vnets/private/hold", json={"address": "192.168.150.100"})
    assert held.status_code == 200, held.text
    assert AddressOut.model_validate(held.json()) == AddressOut(
        network="private", mac="02:00:c0:a8:96:64", ip="192.168.150.100", ip6=None, state="held"
    )
    detail = VnetDetail.model_validate(api.get("/vnets/private").json())
    assert (detail.held, detail.free) == (1, 59)
    assert [(lease.ip, lease.state, lease.vm_id) for lease in detail.leases] == [
        ("192.168.150.100", "held", None)
    ]
    released = api.post("/vnets/private/release", json={"address": "02:00:c0:a8:96:64"})
    assert released.status_code == 200
    assert released.json()["state"] == "free"
    assert api.get("/vnets/private").json()["leases"] == []


def test_an_address_outside_the_ranges_is_a_409_and_garbage_a_400(api: httpx.Client) -> None:
    _create(api)
    outside = api.post("/vnets/private/hold", json={"address": "192.168.150.10"})
    assert outside.status_code == 409
    assert "not in any address range of network private" in outside.json()["error"]["message"]
    garbage = api.post("/vnets/private/hold", json={"address": "nonsense"})
    assert garbage.status_code == 400


def test_show_lists_the_vm_using_each_lease_and_delete_waits_for_it(
    api: httpx.Client, live_server: LiveServer
) -> None:
    _create(api)
    vm_id = submit(api, hold=True)[0]["id"]
    live_server.store.allocate_leases(vm_id, [LeaseRequest(0, "private")])
    detail = VnetDetail.model_validate(api.get("/vnets/private").json())
    assert [(lease.ip, lease.state, lease.vm_id, lease.nic_index) for lease in detail.leases] == [
        ("192.168.150.100", "used", vm_id, 0)
    ]
    refused = api.delete("/vnets/private")
    assert refused.status_code == 409
    assert f"VMs {vm_id}" in refused.json()["error"]["message"]
    live_server.store.release_leases(vm_id)
    assert api.delete("/vnets/private").status_code == 204
    assert api.get("/vnets").json()["items"] == []
