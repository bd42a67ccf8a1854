"""Where the CLI finds the daemon, what it says when it cannot, and its formatting helpers."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stratus.cli.client import DEFAULT_URL, DaemonUnreachable, StratusClient, Target, resolve_target
from stratus.cli.main import app
from stratus.cli.output import format_mb, format_time, truncate
from tests.api.conftest import LiveServer
from tests.cli.conftest import Stratus
from tests.cli.test_vm_commands import _failed, _ok


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STRATUS_URL", "STRATUS_TOKEN", "STRATUS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def _data_dir(path: Path, url: str, token: str) -> Path:
    """A data dir as `stratus serve` leaves it."""
    path.mkdir()
    (path / "endpoint").write_text(url + "\n")
    (path / "admin.token").write_text(token + "\n")
    return path


@pytest.mark.usefixtures("no_env")
def test_the_target_comes_from_the_data_dir_when_the_environment_is_unset(
    tmp_path: Path,
) -> None:
    data_dir = _data_dir(tmp_path / "data", "http://10.0.0.1:9000", "secret")
    assert resolve_target(data_dir) == Target("http://10.0.0.1:9000", "secret")


@pytest.mark.usefixtures("no_env")
def test_the_environment_wins_over_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = _data_dir(tmp_path / "data", "http://10.0.0.1:9000", "secret")
    monkeypatch.setenv("STRATUS_URL", "http://127.0.0.1:1234/")
    monkeypatch.setenv("STRATUS_TOKEN", "from-env")
    assert resolve_target(data_dir) == Target("http://127.0.0.1:1234", "from-env")


@pytest.mark.usefixtures("no_env")
def test_stratus_data_dir_names_the_default_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _data_dir(tmp_path / "data", "http://10.0.0.2:9000", "t")
    monkeypatch.setenv("STRATUS_DATA_DIR", str(tmp_path / "data"))
    assert resolve_target().url == "http://10.0.0.2:9000"


@pytest.mark.usefixtures("no_env")
def test_without_any_configuration_the_default_url_is_tried(tmp_path: Path) -> None:
    assert resolve_target(tmp_path / "empty") == Target(DEFAULT_URL, None)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_daemon_is_named_with_what_to_do() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with (
        StratusClient(Target(url, "t")) as client,
        pytest.raises(DaemonUnreachable) as caught,
    ):
        client.vm(1)
    assert caught.value.message == (
        f"cannot reach the Stratus daemon at {url}: start it with `stratus serve`"
        " or set STRATUS_URL"
    )


def test_the_cli_reports_an_unreachable_daemon_and_exits_1() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(app, ["vm", "list"], env={"STRATUS_URL": url})
    _failed(result)
    assert f"cannot reach the Stratus daemon at {url}" in result.stderr
    assert "stratus serve" in result.stderr


@pytest.mark.usefixtures("no_env")
def test_the_cli_finds_the_daemon_through_its_data_dir(
    live_server: LiveServer, tmp_path: Path
) -> None:
    data_dir = _data_dir(tmp_path / "data", live_server.url, live_server.token)
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "vm", "list", "--json"])
    assert _ok(result).stdout.strip() == "[]"


def test_a_wrong_token_is_reported_with_how_to_authenticate(
    live_server: LiveServer,
) -> None:
    env = {"STRATUS_URL": live_server.url, "STRATUS_TOKEN": "wrong"}
    result = _failed(CliRunner().invoke(app, ["host", "list"], env=env))
    assert "invalid bearer token" in result.stderr
    assert "STRATUS_TOKEN" in result.stderr


def test_help_describes_every_command(stratus: Stratus) -> None:
    top = _ok(stratus("--help")).stdout
    for command in ("serve", "vm", "host"):
        assert command in top
    vm_help = _ok(stratus("vm", "--help")).stdout
    for command in ("create", "list", "show", "wait", "terminate", "migrate", "recover"):
        assert command in vm_help
    assert "--policy" in _ok(stratus("serve", "--help")).stdout


@pytest.mark.parametrize(
    ("mb", "shown"),
    [(512, "512M"), (1024, "1G"), (1536, "1.5G"), (16384, "16G"), (2 * 1024**2, "2T"), (0, "0M")],
)
def test_memory_is_shown_in_the_largest_whole_unit(mb: int, shown: str) -> None:
    assert format_mb(mb) == shown


def test_long_reasons_are_cut_to_one_line() -> None:
    assert truncate("a\nb") == "a b"
    cut = truncate("x" * 100, 10)
    assert len(cut) == 10 and cut.endswith("…")


def test_timestamps_are_shown_to_the_second() -> None:
    assert format_time("2026-11-21T18:08:33.076357Z") == "2026-11-21 18:08:33"
    assert format_time(None) == "-"
