"""`stratus vnet ...` against a live server: create, list, show, hold, release, delete, errors."""

from __future__ import annotations

import json
from pathlib import Path

from stratus.store.vnets import LeaseRequest
from tests.api.conftest import LiveServer
from tests.cli.conftest import Stratus
from tests.cli.test_vm_commands import _failed, _ok
from tests.store.helpers import new_vm

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_example_networks_are_created_and_listed(stratus: Stratus) -> None:
    out = _ok(stratus("vnet", "create", str(EXAMPLES / "net-bridge.tmpl"))).stdout
    assert "network private created" in out and "70 addresses" in out
    _ok(stratus("vnet", "create", str(EXAMPLES / "net-user.tmpl")))
    listed = json.loads(_ok(stratus("vnet", "list", "--json")).stdout)
    assert [(v["name"], v["driver"], v["free"]) for v in listed] == [
        ("private", "bridge", 70),
        ("nat", "user", 100),
    ]
    table = _ok(stratus("vnet", "list")).stdout
    assert "192.168.150.0/24" in table and "10.0.2.0/24" in table and "br0" in table


def test_create_reads_stdin_and_prints_warnings(stratus: Stratus) -> None:
    template = 'NAME = lab\nBRIDGE = br9\nCOLOR = red\nAR = [ IP = "10.9.0.10", SIZE = 4 ]\n'
    result = _ok(stratus("vnet", "create", "-", input=template))
    assert "unknown attribute COLOR ignored" in result.stderr
    assert "network lab created" in result.stdout


def test_a_bad_template_is_reported_with_its_line(stratus: Stratus, tmp_path: Path) -> None:
    path = tmp_path / "bad.tmpl"
    path.write_text('NAME = bad\nBRIDGE = br0\nAR = [ TYPE = IP4, IP = "10.0.0.1", SIZE = "0" ]\n')
    result = _failed(stratus("vnet", "create", str(path)))
    assert ":3:" in result.stderr and "SIZE '0'" in result.stderr


def test_hold_show_release_and_delete(stratus: Stratus, live_server: LiveServer) -> None:
    _ok(stratus("vnet", "create", str(EXAMPLES / "net-bridge.tmpl")))
    out = _ok(stratus("vnet", "hold", "private", "192.168.150.100")).stdout
    assert "192.168.150.100 (02:00:c0:a8:96:64) of network private is on hold" in out
    vm_id = live_server.store.create_vms([new_vm("web")])[0].id
    [lease] = live_server.store.allocate_leases(vm_id, [LeaseRequest(0, "private")])
    assert lease.ip == "192.168.150.101"  # the held address is skipped
    shown = json.loads(_ok(stratus("vnet", "show", "private", "--json")).stdout)
    assert [(x["ip"], x["state"], x["vm_id"]) for x in shown["leases"]] == [
        ("192.168.150.100", "held", None),
        ("192.168.150.101", "used", vm_id),
    ]
    table = _ok(stratus("vnet", "show", "private")).stdout
    assert "70: 1 used, 1 held, 68 free" in table
    assert "held" in table and "fd00:150::/64" in table
    refused = _failed(stratus("vnet", "delete", "private"))
    assert f"VMs {vm_id}" in refused.stderr
    out = _ok(stratus("vnet", "release", "private", "02:00:c0:a8:96:64")).stdout
    assert "of network private is free" in out
    live_server.store.release_leases(vm_id)
    _ok(stratus("vnet", "delete", "private"))
    assert json.loads(_ok(stratus("vnet", "list", "--json")).stdout) == []


def test_an_unknown_network_says_where_to_look(stratus: Stratus) -> None:
    result = _failed(stratus("vnet", "show", "nope"))
    assert "network 'nope' does not exist" in result.stderr
    assert "stratus vnet list" in result.stderr
