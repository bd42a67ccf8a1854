"""`stratus vm ...` against a live server: create, list, show, wait, operations, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import Result

from tests.api.conftest import SMALL_VM
from tests.cli.conftest import Stratus


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def _failed(result: Result, code: int = 1) -> Result:
    """An expected failure: the exit code, and a message rather than a traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr
    return result


def _create(stratus: Stratus, tmp_path: Path, *args: str) -> list[int]:
    path = tmp_path / "vm.tmpl"
    path.write_text(SMALL_VM)
    return [int(line) for line in _ok(stratus("vm", "create", str(path), *args)).stdout.split()]


def _add_host(stratus: Stratus, name: str = "node1") -> None:
    _ok(stratus("host", "add", name, "--driver", "dummy"))
    deadline = time.monotonic() + 10
    while json.loads(_ok(stratus("host", "show", name, "--json")).stdout)["state"] != "MONITORED":
        assert time.monotonic() < deadline, "the host never became MONITORED"
        time.sleep(0.05)


def test_vm_create_prints_one_new_id_per_line(stratus: Stratus, tmp_path: Path) -> None:
    ids = _create(stratus, tmp_path, "--count", "3", "--hold")
    assert len(ids) == 3
    assert ids == sorted(ids)


def test_vm_create_reads_the_template_from_stdin(stratus: Stratus) -> None:
    result = _ok(stratus("vm", "create", "-", "--hold", input=SMALL_VM))
    vm = json.loads(_ok(stratus("vm", "show", result.stdout.strip(), "--json")).stdout)
    assert (vm["name"], vm["state"]) == ("web", "HOLD")


def test_vm_create_with_a_syntax_error_says_where_and_exits_1(
    stratus: Stratus, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tmpl"
    bad.write_text('NAME = "x"\nCPU 1\n')
    result = _failed(stratus("vm", "create", str(bad)))
    assert "template:2:5" in result.stderr
    assert "expected '='" in result.stderr
    assert result.stdout == ""


def test_vm_create_of_a_missing_file_is_a_usage_error(stratus: Stratus, tmp_path: Path) -> None:
    _failed(stratus("vm", "create", str(tmp_path / "nope.tmpl")), code=2)


def test_vm_list_pages_through_every_vm(stratus: Stratus, tmp_path: Path) -> None:
    for _ in range(6):  # more than one page of 5,000
        _create(stratus, tmp_path, "--count", "1000", "--hold")
    vms = json.loads(_ok(stratus("vm", "list", "--json")).stdout)
    assert len(vms) == 6000
    assert len({vm["id"] for vm in vms}) == 6000
    held = json.loads(_ok(stratus("vm", "list", "--state", "PENDING", "--json")).stdout)
    assert held == []
    table = _ok(stratus("vm", "list")).stdout.splitlines()  # a long list: plain columns
    assert len(table) == 6001
    assert table[0].split() == ["ID", "NAME", "STATE", "HOST", "CPU", "MEM", "REASON"]


def test_vm_list_shows_a_table_of_id_name_state_host_cpu_mem_reason(
    stratus: Stratus, tmp_path: Path
) -> None:
    [vm_id] = _create(stratus, tmp_path, "--hold")
    out = _ok(stratus("vm", "list")).stdout
    for column in ("ID", "NAME", "STATE", "HOST", "CPU", "MEM", "REASON"):
        assert column in out
    assert f"{vm_id}" in out and "HOLD" in out and "512M" in out


def test_vm_show_json_has_state_host_reason_and_history(stratus: Stratus, tmp_path: Path) -> None:
    _add_host(stratus)
    [vm_id] = _create(stratus, tmp_path)
    _ok(stratus("vm", "wait", str(vm_id), "--state", "RUNNING", "--timeout", "10"))
    vm = json.loads(_ok(stratus("vm", "show", str(vm_id), "--json")).stdout)
    assert (vm["id"], vm["name"], vm["state"], vm["host"]) == (vm_id, "web", "RUNNING", "node1")
    assert vm["reason"]
    assert vm["history"][0]["host"] == "node1"


def test_vm_show_prints_the_reason_and_a_history_table(stratus: Stratus, tmp_path: Path) -> None:
    _add_host(stratus)
    [vm_id] = _create(stratus, tmp_path)
    _ok(stratus("vm", "wait", str(vm_id), "--state", "RUNNING"))
    out = _ok(stratus("vm", "show", str(vm_id))).stdout
    assert "RUNNING" in out
    assert "reason" in out
    assert "History" in out and "node1" in out


def test_vm_wait_gives_up_after_the_timeout_with_the_state_and_reason(
    stratus: Stratus, tmp_path: Path
) -> None:
    [vm_id] = _create(stratus, tmp_path, "--hold")
    start = time.monotonic()
    result = _failed(stratus("vm", "wait", str(vm_id), "--state", "RUNNING", "--timeout", "0.5"))
    assert time.monotonic() - start < 5
    assert "HOLD" in result.stderr
    assert "held" in result.stderr  # the VM's reason


def test_vm_wait_fails_at_once_when_the_vm_ends_elsewhere(stratus: Stratus, tmp_path: Path) -> None:
    [vm_id] = _create(stratus, tmp_path, "--hold")
    _ok(stratus("vm", "terminate", str(vm_id)))
    start = time.monotonic()
    result = _failed(stratus("vm", "wait", str(vm_id), "--state", "RUNNING", "--timeout", "30"))
    assert time.monotonic() - start < 5
    assert "DONE" in result.stderr


def test_vm_wait_for_done_succeeds_when_the_vm_is_done(stratus: Stratus, tmp_path: Path) -> None:
    [vm_id] = _create(stratus, tmp_path, "--hold")
    _ok(stratus("vm", "terminate", str(vm_id)))
    assert "DONE" in _ok(stratus("vm", "wait", str(vm_id), "--state", "DONE")).stdout


def test_an_illegal_operation_prints_the_state_and_allowed_operations(
    stratus: Stratus, tmp_path: Path
) -> None:
    [vm_id] = _create(stratus, tmp_path, "--hold")
    result = _failed(stratus("vm", "suspend", str(vm_id)))
    assert "cannot suspend a VM in state HOLD" in result.stderr
    assert "release" in result.stderr  # the hint lists what HOLD allows


def test_hold_release_deploy_and_terminate_drive_the_vm(stratus: Stratus, tmp_path: Path) -> None:
    _add_host(stratus, "node1")
    _add_host(stratus, "node2")
    [vm_id] = _create(stratus, tmp_path, "--hold")
    assert "PENDING" in _ok(stratus("vm", "release", str(vm_id))).stdout
    _ok(stratus("vm", "wait", str(vm_id), "--state", "RUNNING"))
    _ok(stratus("vm", "migrate", str(vm_id), "node2"))
    _ok(stratus("vm", "wait", str(vm_id), "--state", "RUNNING"))
    shown = json.loads(_ok(stratus("vm", "show", str(vm_id), "--json")).stdout)
    assert shown["host"] == "node2"
    assert "SHUTTING_DOWN" in _ok(stratus("vm", "terminate", str(vm_id), "--hard")).stdout
    _ok(stratus("vm", "wait", str(vm_id), "--state", "DONE"))


def test_deploy_by_hand_places_a_held_vm_on_the_named_host(
    stratus: Stratus, tmp_path: Path
) -> None:
    _add_host(stratus, "node1")
    _add_host(stratus, "node2")
    [vm_id] = _create(stratus, tmp_path, "--hold")
    _ok(stratus("vm", "deploy", str(vm_id), "node2"))
    _ok(stratus("vm", "wait", str(vm_id), "--state", "RUNNING"))
    assert json.loads(_ok(stratus("vm", "show", str(vm_id), "--json")).stdout)["host"] == "node2"


def test_a_missing_vm_is_reported_without_a_traceback(stratus: Stratus) -> None:
    result = _failed(stratus("vm", "show", "424242"))
    assert "VM 424242 does not exist" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("vm", "recover", "1"),
        ("vm", "recover", "1", "--retry", "--delete"),
        ("vm", "list", "--state", "SLEEPING"),
        ("vm", "show", "abc"),
        ("vm", "show", "0"),
        ("vm", "create", "-", "--count", "0"),
        ("vm", "deploy", "1"),
    ],
)
def test_usage_errors_exit_2(stratus: Stratus, args: tuple[str, ...]) -> None:
    _failed(stratus(*args, input=""), code=2)


def test_recover_sends_the_chosen_mode(stratus: Stratus, tmp_path: Path) -> None:
    [vm_id] = _create(stratus, tmp_path, "--hold")
    result = _failed(stratus("vm", "recover", str(vm_id), "--success"))
    assert "cannot recover a VM in state HOLD" in result.stderr
