"""A real EC2 API for tests: moto's ThreadedMotoServer on a free loopback port.

moto keeps its cloud state in module-level backends, so every server started in one
test process shares it: tests tag what they create uniquely, or call `reset_moto`.
Use the fixture factory in a conftest or test module:

    moto_endpoint = moto_endpoint_fixture()           # module-scoped fixture -> URL
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = [
    "MOTO_CREDENTIALS",
    "closed_port_endpoint",
    "ec2_host",
    "moto_endpoint_fixture",
    "reset_moto",
    "running_moto",
]

#: moto accepts any credentials; these are recognisable, so tests can assert they leak nowhere
MOTO_CREDENTIALS = {
    "access_key_id": "AKIATESTSTRATUSKEY01",
    "secret_access_key": "stratus-test-secret-never-printed-0123456789",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_moto() -> Iterator[str]:
    """Start a moto server on 127.0.0.1, yield its endpoint URL, stop it on exit."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    """Forget every resource of every moto backend (shared by all servers of the process)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        response.read()


def closed_port_endpoint() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    return f"http://127.0.0.1:{_free_port()}"


def moto_endpoint_fixture(scope: Any = "module") -> Callable[[], Iterator[str]]:
    """A pytest fixture yielding the URL of a moto server started for its scope."""

    @pytest.fixture(scope=scope)
    def moto_endpoint() -> Iterator[str]:
        with running_moto() as endpoint:
            yield endpoint

    return moto_endpoint


def ec2_host(
    name: str, endpoint: str, *, region: str = "us-east-1", quota: int = 4
) -> dict[str, Any]:
    """The API body of an `ec2` host on the moto server: `quota` m1.small instances (the
    driver derives its capacity and labels from that)."""
    return {
        "name": name,
        "driver": "ec2",
        "options": {"region": region, "endpoint": endpoint, "capacity": f"m1.small={quota}"},
        "secrets": dict(MOTO_CREDENTIALS),
    }
