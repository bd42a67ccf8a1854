"""The overlay routes refuse what cannot work with a status and a message that says what to
do, and a hub that cannot be brought up leaves nothing behind (a live API in process)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, add_host, engine_config, live_server  # noqa: F401

BRIDGE_NET = """
NAME = "lan"
BRIDGE = "sovapi0"
NETNS = "stratus-overlay-api-test"
NETWORK_ADDRESS = "192.168.173.0"
NETWORK_MASK = "255.255.255.0"
AR = [ TYPE = "IP4", IP = "192.168.173.100", SIZE = "8" ]
"""
USER_NET = """
NAME = "usernet"
VN_MAD = "user"
NETWORK_ADDRESS = "10.0.2.0"
NETWORK_MASK = "255.255.255.0"
AR = [ TYPE = "IP4", IP = "10.0.2.15", SIZE = "4" ]
"""
NO_SUBNET = """
NAME = "flat"
BRIDGE = "sovapi1"
AR = [ TYPE = "ETHER", MAC = "02:00:00:00:00:01", SIZE = "4" ]
"""


@pytest.fixture
def api(live_server: LiveServer) -> Any:  # noqa: F811
    with live_server.client() as client:
        for template in (BRIDGE_NET, USER_NET, NO_SUBNET):
            assert client.post("/vnets", json={"template": template}).status_code == 201
        yield client


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


@pytest.mark.parametrize(
    ("net", "body", "status", "says"),
    [
        ("nope", {"endpoint": "203.0.113.7:51820"}, 404, "network 'nope' does not exist"),
        ("usernet", {"endpoint": "203.0.113.7:51820"}, 400, "is a user network"),
        ("flat", {"endpoint": "203.0.113.7:51820"}, 400, "has no NETWORK_ADDRESS"),
        ("lan", {"endpoint": "203.0.113.7"}, 400, "is not HOST:PORT"),
        ("lan", {"endpoint": "0.0.0.0:51820"}, 400, "cannot be dialled"),
        ("lan", {"endpoint": "x:1", "host": "nowhere"}, 404, "nowhere"),
        ("lan", {"endpoint": "x:1", "kind": "ipsec"}, 422, "kind"),
        ("lan", {"endpoint": "x:1", "listen_port": 0}, 422, "listen_port"),
    ],
)
def test_enabling_what_cannot_work_is_refused_saying_why(
    api: httpx.Client, net: str, body: dict[str, Any], status: int, says: str
) -> None:
    refused = error(api.post(f"/vnets/{net}/overlay", json=body), status)
    assert says in str(refused)
    assert api.get("/vnets/lan").json()["held"] == 0  # nothing was taken


def test_a_network_without_an_overlay_says_how_to_enable_one(api: httpx.Client) -> None:
    for response in (
        api.get("/vnets/lan/overlay"),
        api.post("/vnets/lan/overlay/peers", json={"name": "laptop"}),
        api.delete("/vnets/lan/overlay/peers/laptop"),
        api.delete("/vnets/lan/overlay"),
    ):
        refused = error(response, 404)
        assert refused["message"] == "network lan has no overlay"
        assert "stratus vnet overlay enable lan --endpoint HOST:PORT" in refused["hint"]
    error(api.post("/vnets/lan/overlay/peers", json={"name": "-bad"}), 422)


def test_a_hub_whose_host_cannot_be_reached_leaves_nothing_behind(api: httpx.Client) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    add_host(api, "far", options={"ssh_host": "127.0.0.1", "ssh_port": port})
    body = {"endpoint": "203.0.113.7:51820", "host": "far"}
    refused = error(api.post("/vnets/lan/overlay", json=body), 502)
    assert "127.0.0.1" in refused["message"] or "far" in refused["message"]
    error(api.get("/vnets/lan/overlay"), 404)
    assert api.get("/vnets/lan").json()["held"] == 0  # the hub's address was given back
