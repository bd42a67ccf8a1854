"""A live Stratus API: uvicorn on a free loopback port, over a real SQLite store and engine."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from stratus.api import create_app
from stratus.api.auth import sha256_hex
from stratus.engine.config import EngineConfig, Timeouts
from stratus.engine.core import Engine
from stratus.scheduler import SchedulerConfig
from stratus.store import Store, open_store

FAST = EngineConfig(
    scheduler=SchedulerConfig(policy="packing"),
    timeouts=Timeouts(probe=1.0, deploy=1.5, shutdown=0.4, operation=1.5, migrate=1.5),
    schedule_interval=0.05,
    monitor_interval=0.2,
    batch_window=0.002,
)
TOKEN = "test-token-0123456789"
SMALL_VM = 'NAME = "web"\nCPU = 0.5\nMEMORY = 512\n'


@dataclass
class LiveServer:
    """A running API: its base URL (no /api/v1), a valid token, the engine and its store."""

    url: str
    token: str
    engine: Engine
    store: Store

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        """An HTTP client on /api/v1, sending `token` (none when None)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=10.0)


class _ThreadedServer:
    """uvicorn serving `app` on an already-bound socket, in a background thread."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test API server did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


@pytest.fixture
def engine_config() -> EngineConfig:
    """The live server's engine settings; a test module may override this fixture."""
    return FAST


@pytest.fixture
def live_server(tmp_path: Path, engine_config: EngineConfig) -> Iterator[LiveServer]:
    """A fresh store, engine (dummy driver, fast loops) and API server per test."""
    store = open_store(f"sqlite:///{tmp_path / 'stratus.db'}")
    store.add_token("test", sha256_hex(TOKEN))
    engine = Engine(store, config=engine_config, data_dir=tmp_path)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say TCP,
    # and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _ThreadedServer(create_app(engine), sock)
    server.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", token=TOKEN, engine=engine, store=store)
    finally:
        server.stop()
        store.close()


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An authenticated client on the live server's /api/v1."""
    with live_server.client() as client:
        yield client


def wait_for(
    client: httpx.Client, path: str, check: Any, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll GET `path` until `check(body)` is true; fail with the last body after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(path).json()
        if check(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {path}: {body}")
        time.sleep(0.05)


def add_host(client: httpx.Client, name: str = "node1", **fields: Any) -> dict[str, Any]:
    """Add a dummy host and wait until it is MONITORED (schedulable)."""
    body = {"name": name, "driver": "dummy", "cpu": 8, "memory": "16G"} | fields
    response = client.post("/hosts", json=body)
    assert response.status_code == 201, response.text
    return wait_for(client, f"/hosts/{name}", lambda h: h["state"] == "MONITORED")


def submit(client: httpx.Client, template: str = SMALL_VM, **fields: Any) -> list[dict[str, Any]]:
    """Submit a template; return the created VMs."""
    response = client.post("/vms", json={"template": template} | fields)
    assert response.status_code == 201, response.text
    vms: list[dict[str, Any]] = response.json()["vms"]
    return vms
