"""Start `stratus serve` as a real process on a free loopback port, and talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

STRATUS = str(Path(sys.executable).parent / "stratus")


class Daemon:
    """A `stratus serve` process; `kill()` is kill -9, `stop()` a clean SIGTERM."""

    def __init__(self, data_dir: Path, *args: str, db_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.db_url = db_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None

    def start(self, timeout: float = 30.0) -> Daemon:
        (self.data_dir / "endpoint").unlink(missing_ok=True)
        cmd = [
            STRATUS,
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            "127.0.0.1:0",
            *self.args,
        ]
        if self.db_url:
            cmd += ["--db", self.db_url]
        log = open(self.data_dir / "daemon.out", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ})
        deadline = time.monotonic() + timeout
        endpoint = self.data_dir / "endpoint"
        while not (endpoint.exists() and endpoint.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start in {timeout} s: {self.output()}")
            time.sleep(0.05)
        token = (self.data_dir / "admin.token").read_text().strip()
        self.client = httpx.Client(
            base_url=endpoint.read_text().strip() + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        while True:  # the endpoint is written before uvicorn accepts: wait for health
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon never became healthy: {self.output()}")
            time.sleep(0.05)

    @property
    def endpoint(self) -> str:
        """The daemon's base URL, http://127.0.0.1:PORT."""
        return (self.data_dir / "endpoint").read_text().strip()

    @property
    def token(self) -> str:
        """The admin API token."""
        return (self.data_dir / "admin.token").read_text().strip()

    def output(self) -> str:
        path = self.data_dir / "daemon.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_client()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._close_client()

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def api(self, method: str, path: str, **kw: Any) -> Any:
        assert self.client is not None
        response = self.client.request(method, path, **kw)
        status = response.status_code
        assert status < 300, f"{method} {path}: {status} {response.text}"
        return response.json() if response.content else None

    def all_vms(self) -> list[dict[str, Any]]:
        return list(self.api("GET", "/vms", params={"limit": 50000})["items"])
