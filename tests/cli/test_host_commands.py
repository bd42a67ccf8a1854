"""`stratus host ...` against a live server: add, list, show, state changes, delete, errors."""

from __future__ import annotations

import json

from tests.cli.conftest import Stratus
from tests.cli.test_vm_commands import _add_host, _failed, _ok


def test_host_add_then_list_shows_it_with_labels_and_capacity(stratus: Stratus) -> None:
    out = _ok(
        stratus(
            "host", "add", "node1", "--driver", "dummy", "--cpu", "4", "--memory", "8G",
            "--label", "country=ES", "--label", "TIER=gold",
        )
    ).stdout  # fmt: skip
    assert "node1" in out
    [host] = json.loads(_ok(stratus("host", "list", "--json")).stdout)
    assert (host["name"], host["cpu"], host["memory"]) == ("node1", 4.0, 8192)
    assert host["labels"] == {"COUNTRY": "ES", "TIER": "gold"}
    table = _ok(stratus("host", "list")).stdout
    assert "node1" in table and "dummy" in table


def test_host_add_defaults_to_8_cpus_and_16g(stratus: Stratus) -> None:
    _ok(stratus("host", "add", "node1", "--driver", "dummy"))
    host = json.loads(_ok(stratus("host", "show", "node1", "--json")).stdout)
    assert (host["cpu"], host["memory"]) == (8.0, 16384)


def test_host_show_masks_secret_options(stratus: Stratus) -> None:
    _ok(
        stratus(
            "host", "add", "cloud", "--driver", "dummy",
            "--option", "password=hunter2", "--option", "endpoint=https://x.example",
        )
    )  # fmt: skip
    shown = _ok(stratus("host", "show", "cloud", "--json")).stdout
    assert "hunter2" not in shown
    options = json.loads(shown)["options"]
    assert options["password"] == "***"
    assert options["endpoint"] == "https://x.example"
    assert "hunter2" not in _ok(stratus("host", "show", "cloud")).stdout


def test_host_disable_enable_offline_and_delete(stratus: Stratus) -> None:
    _add_host(stratus, "node1")
    assert "DISABLED" in _ok(stratus("host", "disable", "node1")).stdout
    assert "OFFLINE" in _ok(stratus("host", "offline", "node1")).stdout
    _ok(stratus("host", "enable", "node1"))
    disabled = json.loads(_ok(stratus("host", "list", "--state", "DISABLED", "--json")).stdout)
    assert disabled == []
    _ok(stratus("host", "delete", "node1"))
    assert json.loads(_ok(stratus("host", "list", "--json")).stdout) == []


def test_host_show_lists_its_vms(stratus: Stratus) -> None:
    _add_host(stratus, "node1")
    vm_id = _ok(stratus("vm", "create", "-", input='NAME = "db"\nMEMORY = 256\n')).stdout.strip()
    _ok(stratus("vm", "wait", vm_id, "--state", "RUNNING"))
    out = _ok(stratus("host", "show", "node1")).stdout
    assert "db" in out and "RUNNING" in out


def test_a_duplicate_host_is_reported_and_exits_1(stratus: Stratus) -> None:
    _ok(stratus("host", "add", "node1", "--driver", "dummy"))
    result = _failed(stratus("host", "add", "node1", "--driver", "dummy"))
    assert "node1" in result.stderr


def test_an_unknown_driver_lists_the_known_ones(stratus: Stratus) -> None:
    result = _failed(stratus("host", "add", "node1", "--driver", "vmware"))
    assert "dummy" in result.stderr


def test_a_bad_memory_size_is_reported_naming_the_field(stratus: Stratus) -> None:
    result = _failed(stratus("host", "add", "node1", "--driver", "dummy", "--memory", "lots"))
    assert "memory" in result.stderr


def test_a_label_without_equals_is_a_usage_error(stratus: Stratus) -> None:
    _failed(stratus("host", "add", "n", "--driver", "dummy", "--label", "COUNTRY"), code=2)


def test_a_missing_host_is_reported_without_a_traceback(stratus: Stratus) -> None:
    result = _failed(stratus("host", "show", "ghost"))
    assert "ghost" in result.stderr and "does not exist" in result.stderr
    _failed(stratus("host", "delete", "ghost"))
