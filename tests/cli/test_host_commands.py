"""`stratus host ...` against a live server: add, list, show, state changes, delete, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

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


SECRET = "pl41n-S3CRET-value"


def test_host_add_refuses_a_secret_option_and_points_at_credentials(stratus: Stratus) -> None:
    result = _failed(
        stratus(
            "host", "add", "cloud", "--driver", "dummy",
            "--option", f"password={SECRET}", "--option", "endpoint=https://x.example",
        )
    )  # fmt: skip
    assert "--credentials" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_host_credentials_come_from_a_file_or_stdin_and_are_never_shown(
    stratus: Stratus, tmp_path: Path
) -> None:
    creds = tmp_path / "aws.env"
    creds.write_text(
        f"# AWS\nAWS_ACCESS_KEY_ID=AKIA0001\nexport AWS_SECRET_ACCESS_KEY='{SECRET}'\n"
    )
    added = _ok(stratus("host", "add", "aws", "--driver", "dummy", "--credentials", str(creds)))
    assert "credentials stored" in added.stdout
    table = _ok(stratus("host", "show", "aws")).stdout
    assert re.search(r"credentials\s+stored", table)
    shown = _ok(stratus("host", "show", "aws", "--json")).stdout
    assert json.loads(shown)["credentials"] == "stored"
    listed = _ok(stratus("host", "list", "--json")).stdout
    for output in (added.stdout, table, shown, listed):
        assert SECRET not in output and "AKIA0001" not in output

    replaced = stratus("host", "credentials", "aws", "-", input='{"token_id": "rotated-secret"}')
    assert "credentials stored" in _ok(replaced).stdout
    assert "rotated-secret" not in replaced.stdout
    assert "credentials removed" in _ok(stratus("host", "credentials", "aws", "-", input="")).stdout
    assert json.loads(_ok(stratus("host", "show", "aws", "--json")).stdout)["credentials"] is None


def test_a_bad_credentials_file_is_refused_without_quoting_it(stratus: Stratus) -> None:
    for text in (
        f"{SECRET}\n",
        f'{{"k": "{SECRET}"',
        f'{{"k": ["{SECRET}"]}}',
        f"Bad Key={SECRET}",
    ):
        result = stratus("host", "add", "x", "--driver", "dummy", "--credentials", "-", input=text)
        assert result.exit_code in (1, 2) and "Traceback" not in result.stderr, result.stderr
        assert "credentials" in result.stderr
        assert SECRET not in result.stdout + result.stderr
    assert json.loads(_ok(stratus("host", "list", "--json")).stdout) == []


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
