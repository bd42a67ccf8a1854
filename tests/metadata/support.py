"""What the metadata tests share: a store with a bridge network, images and VMs, the
metadata service running on its own event loop in a thread, and a raw IMDS client that
speaks to its unix socket (preamble first, as the proxies do) or to a TCP address."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h11

from stratus.engine.metadata import MetadataService
from stratus.engine.operations import build_vms
from stratus.engine.runner import DbRunner
from stratus.model.lifecycle import VmState
from stratus.model.records import ImageType, Vm
from stratus.model.vnet_template import parse_vnet
from stratus.store import Store, VmChange

T = TypeVar("T")

ZONE = "lab-1a"


def network_template(name: str, netns: str, bridge: str, prefix: str) -> str:
    """A bridge network `prefix`.0/24 in `netns`: gateway .1, leases from .100."""
    return f"""
NAME = "{name}"
BRIDGE = "{bridge}"
NETNS = "{netns}"
NETWORK_ADDRESS = "{prefix}.0"
NETWORK_MASK = "255.255.255.0"
GATEWAY = "{prefix}.1"
AR = [ TYPE = "IP4", IP = "{prefix}.100", SIZE = "20" ]
"""


def add_disk_image(store: Store, name: str) -> int:
    image = store.add_image(
        name, ImageType.OS, persistent=False, source=f"/srv/{name}.qcow2", datastore="images"
    )
    ready = store.finish_image_import(
        image.id, fmt="qcow2", size=1 << 30, actual_size=1 << 20,
        checksum="sha256:" + "00" * 32, path=f"/srv/{name}.qcow2",
    )  # fmt: skip
    return ready.id


def submit(store: Store, template: str) -> Vm:
    """Store one VM with its image uses and leases, as `engine.submit` does."""
    submission = build_vms(template, fmt="auto", hold=True, count=1)
    [vm] = store.create_vms(submission.vms, submission.requests)
    return vm


def set_info(store: Store, vm: Vm, info: dict[str, Any]) -> Vm:
    """Release a held VM with a driver report (as a deploy gives: the address it is
    reached at); nothing schedules it here."""
    [result] = store.apply([VmChange(vm.id, vm.version, VmState.PENDING, "test", info=info)])
    assert isinstance(result, Vm), result
    return result


def lease_ip(store: Store, vm_id: int) -> str:
    [lease] = store.vm_leases(vm_id)
    assert lease.ip is not None
    return lease.ip


def create_network(store: Store, text: str) -> None:
    store.create_vnet(parse_vnet(text))


class ServiceThread:
    """A MetadataService served by an event loop of its own, in a daemon thread."""

    def __init__(self, store: Store, data_dir: Path, clock: Any = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.db = DbRunner(store)
        extra = {"clock": clock} if clock is not None else {}
        self.service = self.call(self._make(data_dir, extra))

    async def _make(self, data_dir: Path, extra: dict[str, Any]) -> MetadataService:
        return MetadataService(self.db, data_dir, ZONE, **extra)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        try:
            self.call(self.service.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
            self.db.close()


@contextmanager
def running_service(store: Store, data_dir: Path, clock: Any = None) -> Iterator[ServiceThread]:
    thread = ServiceThread(store, data_dir, clock)
    try:
        thread.call(thread.service.start())
        yield thread
    finally:
        thread.close()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def request_bytes(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 169.254.169.254"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if method == "PUT":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_responses(sock: socket.socket, count: int) -> list[Response]:
    """`count` responses read with h11 from a connected socket."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))  # sync states
    conn.send(h11.EndOfMessage())
    out: list[Response] = []
    status, headers, body = 0, {}, b""
    while len(out) < count:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            if not data:  # closed by the server
                break
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            body = b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.append(Response(status, headers, body))
            if len(out) < count:
                conn.start_next_cycle()
                conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
                conn.send(h11.EndOfMessage())
    return out


def over_socket(
    path: Path, preamble: bytes, *requests: bytes, timeout: float = 10
) -> list[Response]:
    """Send a preamble and requests on one connection to the server's unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(preamble + b"".join(requests))
        return read_responses(sock, len(requests))


def imds(
    path: Path,
    preamble: bytes,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Response:
    """One request through the unix socket, as a proxy would relay it."""
    [response] = over_socket(path, preamble, request_bytes(method, target, headers))
    return response
