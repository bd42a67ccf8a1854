"""`stratus serve` as a real process; the other commands find it through its data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stratus.cli.main import app
from tests.cli.test_vm_commands import _failed, _ok

pytestmark = pytest.mark.slow

STRATUS = [sys.executable, "-c", "from stratus.cli.main import app; app()"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUS_")}
    return env


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    """A running `stratus serve` with fast loops; yields its data dir."""
    data_dir = tmp_path / "data"
    args = [
        "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{_free_port()}",
        "--policy", "striping", "--schedule-interval", "0.1", "--monitor-interval", "0.2",
    ]  # fmt: skip
    process = subprocess.Popen(
        [*STRATUS, *args], env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while not (data_dir / "endpoint").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.communicate()[0].decode()
            raise AssertionError(f"stratus serve did not start:\n{output}")
        time.sleep(0.05)
    try:
        yield data_dir
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def test_serve_writes_its_endpoint_and_a_private_admin_token(daemon: Path) -> None:
    assert (daemon / "endpoint").read_text().startswith("http://127.0.0.1:")
    assert (daemon / "admin.token").stat().st_mode & 0o777 == 0o600


def test_commands_find_the_daemon_through_its_data_dir(daemon: Path) -> None:
    runner = CliRunner()
    env = {"STRATUS_URL": None, "STRATUS_TOKEN": None, "STRATUS_DATA_DIR": str(daemon)}

    def stratus(*args: str, input: str | None = None) -> str:
        return _ok(runner.invoke(app, list(args), env=env, input=input)).stdout

    stratus("host", "add", "node1", "--driver", "dummy", "--memory", "4G")
    vm_id = stratus("vm", "create", "-", input='NAME = "svc"\nMEMORY = 256\n').strip()
    stratus("vm", "wait", vm_id, "--state", "RUNNING", "--timeout", "20")
    assert '"host": "node1"' in stratus("vm", "show", vm_id, "--json")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_a_signal_and_removes_its_endpoint(
    tmp_path: Path, signum: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    process = subprocess.Popen(
        [*STRATUS, "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (data_dir / "endpoint").exists():
        assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
        time.sleep(0.05)
    process.send_signal(signum)
    assert process.wait(timeout=20) == 0
    assert not (data_dir / "endpoint").exists()


def test_serve_rejects_an_unknown_policy_as_a_usage_error() -> None:
    _failed(CliRunner().invoke(app, ["serve", "--policy", "random"]), code=2)


def test_serve_reports_a_bad_listen_address_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [*STRATUS, "serve", "--data-dir", str(tmp_path / "d"), "--listen", "nowhere"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--budget", "ec2"),
        ("--budget", "ec2=lots"),
        ("--budget", "=0.5"),
        ("--budget", "ec2=-1"),
        ("--public-url", "zone-b:8421"),
    ],
)
def test_serve_refuses_bad_budgets_and_urls_as_usage_errors(option: str, value: str) -> None:
    result = CliRunner().invoke(app, ["serve", option, value])
    _failed(result, code=2)
    assert option in result.output


def test_serve_refuses_a_catalogue_that_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text('{"offerings": {"ec2": {"eu-west-1": {"m5.large": {"vcpu": "two"}}}}}')
    result = CliRunner().invoke(app, ["serve", "--catalogue", str(bad)])
    _failed(result, code=2)
    assert "prices.json" in result.output
