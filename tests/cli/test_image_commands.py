"""`stratus image ...` against a live server: register with progress, list, show, delete."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cli.conftest import Stratus
from tests.cli.test_vm_commands import _failed, _ok
from tests.imagefiles import MB, FileServer, file_server, make_qcow2  # noqa: F401 (a fixture)


@pytest.fixture
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test's image files live: outside the daemon's data dir, which is refused."""
    return tmp_path_factory.mktemp("sources")


def test_register_waits_until_ready_then_list_and_show_tell_about_it(
    stratus: Stratus, sources: Path
) -> None:
    disk = make_qcow2(sources / "debian.qcow2", "32M")
    out = _ok(stratus("image", "register", "debian", "--path", str(disk), "--format", "raw"))
    assert "image debian is READY" in out.stdout and "raw, 32M, sha256:" in out.stdout
    [image] = json.loads(_ok(stratus("image", "list", "--json")).stdout)
    assert (image["name"], image["state"], image["format"]) == ("debian", "READY", "raw")
    table = _ok(stratus("image", "list")).stdout
    assert "debian" in table and "READY" in table
    shown = _ok(stratus("image", "show", "debian")).stdout
    assert image["checksum"][:40] in shown and "32M" in shown  # long values fold at 80 columns
    assert json.loads(_ok(stratus("image", "show", "debian", "--json")).stdout)["id"] == image["id"]


def test_register_no_wait_returns_while_the_download_goes_on(
    stratus: Stratus,
    file_server: FileServer,  # noqa: F811
) -> None:
    url = file_server.serve("/slow.img", bytes(2 * MB), chunk=64 * 1024, delay=0.02)
    out = _ok(
        stratus("image", "register", "data", "--url", url, "--type", "DATABLOCK", "--no-wait")
    )
    assert "registered" in out.stdout and "stratus image show data" in out.stdout
    assert json.loads(_ok(stratus("image", "show", "data", "--json")).stdout)["state"] == "LOCKED"
    deadline = time.monotonic() + 20
    while (image := json.loads(_ok(stratus("image", "show", "data", "--json")).stdout))[
        "state"
    ] == "LOCKED":
        assert time.monotonic() < deadline, image
        time.sleep(0.1)
    assert (image["state"], image["format"], image["size"]) == ("READY", "raw", 2 * MB)


def test_a_failed_import_exits_1_with_the_reason(stratus: Stratus, sources: Path) -> None:
    notes = sources / "notes.txt"
    notes.write_text("not a disk\n")
    result = _failed(stratus("image", "register", "notes", "--path", str(notes)))
    assert "failed to import" in result.stderr and "is not a disk image" in result.stderr
    assert "stratus image delete notes" in result.stderr


def test_register_needs_exactly_one_source(stratus: Stratus, sources: Path) -> None:
    _failed(stratus("image", "register", "x"), code=2)
    _failed(stratus("image", "register", "x", "--path", "/a", "--url", "http://127.0.0.1/"), 2)


def test_disable_enable_and_delete_an_image(stratus: Stratus, sources: Path) -> None:
    disk = make_qcow2(sources / "a.qcow2")
    _ok(stratus("image", "register", "debian", "--path", str(disk), "--json"))
    assert "DISABLED" in _ok(stratus("image", "disable", "debian")).stdout
    assert "READY" in _ok(stratus("image", "enable", "debian")).stdout
    assert "deleted" in _ok(stratus("image", "delete", "debian")).stdout
    missing = _failed(stratus("image", "delete", "debian"))
    assert "image 'debian' does not exist" in missing.stderr
    assert "stratus image list" in missing.stderr
