"""A real daemon never writes a host's credentials to its log, whatever goes wrong."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.daemon.daemon import Daemon

FAST = ("--schedule-interval", "0.1", "--monitor-interval", "0.3")
SECRETS = {"access_key_id": "AKIALOGCHECK0001", "secret_access_key": "n3ver-in-the-LOG"}
VALUES = tuple(SECRETS.values())
HOST = {"driver": "dummy", "cpu": 2, "memory": 1024, "secrets": SECRETS}


def _wait(daemon: Daemon, path: str, check: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = daemon.api("GET", path)
        if check(body):
            return body
        assert time.monotonic() < deadline, f"timed out on {path}: {body}"
        time.sleep(0.1)


def test_credentials_stay_out_of_the_log_through_driver_errors(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, *FAST).start()
    try:
        daemon.api(
            "POST", "/hosts", json=HOST | {"name": "flaky", "options": {"fail_deploy": "yes"}}
        )
        daemon.api(
            "POST", "/hosts", json=HOST | {"name": "gone", "options": {"unreachable": "yes"}}
        )
        _wait(daemon, "/hosts/flaky", lambda h: h["state"] == "MONITORED")
        _wait(daemon, "/hosts/gone", lambda h: h["state"] == "ERROR")
        [vm] = daemon.api("POST", "/vms", json={"template": 'NAME = "w"\nMEMORY = 64\n'})["vms"]
        failed = _wait(daemon, f"/vms/{vm['id']}", lambda v: v["state"] == "FAILED")
        assert "simulated failure" in failed["reason"]
        daemon.api("PUT", "/hosts/flaky/credentials", json={"secrets": SECRETS})
        assert daemon.client is not None
        refused = [
            daemon.client.post("/hosts", json=HOST | {"name": "x", "secrets": {"Bad": VALUES[0]}}),
            daemon.client.post(
                "/hosts", json=HOST | {"name": "x", "options": {"token": VALUES[1]}}
            ),
            daemon.client.put("/hosts/flaky/credentials", json={"secrets": {"k": [VALUES[1]]}}),
        ]
        assert [r.status_code for r in refused] == [422, 400, 422]
    finally:
        daemon.stop()
    log = (tmp_path / "stratus.log").read_text()
    assert "host gone stopped answering" in log  # the driver error was logged
    database = [p.read_bytes().decode("latin-1") for p in tmp_path.glob("stratus.db*")]
    for text in (log, daemon.output(), *database):
        for value in VALUES:
            assert value not in text
