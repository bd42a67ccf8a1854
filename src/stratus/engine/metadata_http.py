"""The instance metadata server: EC2's IMDS (v1 and v2) over HTTP/1.1 on a unix socket.

Only the proxies and relays of `drivers/metadata_proxy.py` connect (the socket is mode
0600, root only). Each connection starts with their preamble line, which alone says which
VM asks; HTTP (parsed by h11, with size limits and timeouts) follows. IMDSv2: `PUT
/latest/api/token` with a TTL gives a token bound to that VM (an HMAC of the VM id and the
expiry under a secret in the data dir, so nothing is stored); a request that carries a
token must carry a valid one of the same VM (401 otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import h11

from stratus.drivers.metadata_proxy import MAX_PREAMBLE, Preamble, parse_preamble
from stratus.engine.keyfile import read_or_create_key
from stratus.engine.metadata_tree import InstanceView, resolve
from stratus.model.errors import NotFound, StratusError

__all__ = ["MetadataServer", "MetadataTokens", "Reply", "answer"]

log = logging.getLogger(__name__)

SECRET_FILE = "metadata.secret"
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
MAX_TTL = 21600  # six hours, as EC2
_MAX_TOKEN = 128
_MAX_BODY = 4096  # a token PUT has no body; anything larger is refused
_MAX_HEAD = 8192  # request line and headers
_MAX_REQUESTS = 100  # per connection
_PREAMBLE_TIMEOUT = 5.0
_IDLE_TIMEOUT = 15.0
_MAX_CONNECTIONS = 256

Identify = Callable[[Preamble], Awaitable[int | None]]
ViewOf = Callable[[int], Awaitable[InstanceView]]


class MetadataTokens:
    """IMDSv2 session tokens: `base64url(expiry || HMAC(vm id, expiry))`, checked without
    storing anything; they mean nothing for another VM or another daemon."""

    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = data_dir / SECRET_FILE
        self._clock = clock
        self._secret: bytes | None = None

    def _mac(self, vm_id: int, expiry: int) -> bytes:
        if self._secret is None:
            made = read_or_create_key(self._path, lambda: secrets.token_hex(32).encode())
            self._secret = bytes.fromhex(made.decode())
        return hmac.new(self._secret, f"imds:{vm_id}:{expiry}".encode(), hashlib.sha256).digest()

    def issue(self, vm_id: int, ttl: int) -> str:
        expiry = int(self._clock()) + ttl
        raw = struct.pack(">Q", expiry) + self._mac(vm_id, expiry)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def valid(self, vm_id: int, token: str) -> bool:
        """True for an unexpired token issued to this VM."""
        if len(token) > _MAX_TOKEN:
            return False
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return False
        if len(raw) != 8 + 32:
            return False
        (expiry,) = struct.unpack(">Q", raw[:8])
        if expiry <= self._clock():
            return False
        return hmac.compare_digest(raw[8:], self._mac(vm_id, expiry))


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()


def _error(status: int, reason: str) -> Reply:
    page = (
        f'<?xml version="1.0" encoding="iso-8859-1"?>\n<html><head><title>{status} - {reason}'
        f"</title></head><body><h1>{status} - {reason}</h1></body></html>\n"
    )
    return Reply(status, page.encode(), "text/html")


def answer(
    method: str,
    target: str,
    headers: dict[str, str],
    view: InstanceView,
    tokens: MetadataTokens,
) -> Reply:
    """EC2's answer to one request of the VM `view` shows (headers with lower-case names)."""
    path = target.split("?", 1)[0]
    if method == "PUT":
        if path.rstrip("/") != TOKEN_PATH:
            return _error(405, "Method Not Allowed")
        if "x-forwarded-for" in headers:  # as EC2: a token never goes through a proxy
            return _error(403, "Forbidden")
        ttl_text = headers.get(TTL_HEADER, "")
        ttl = int(ttl_text) if ttl_text.isdigit() and len(ttl_text) <= 6 else 0
        if not 1 <= ttl <= MAX_TTL:
            return _error(400, "Missing or Invalid Parameters")
        return Reply(200, tokens.issue(view.vm_id, ttl).encode(), headers=((TTL_HEADER, str(ttl)),))
    if method not in ("GET", "HEAD"):
        return _error(405, "Method Not Allowed")
    token = headers.get(TOKEN_HEADER)
    if token is not None and not tokens.valid(view.vm_id, token):
        return _error(401, "Unauthorized")
    if token is None and view.tokens_required:
        return _error(401, "Unauthorized")
    if path.rstrip("/") == TOKEN_PATH:
        return _error(405, "Method Not Allowed")
    found = resolve(view, path)
    if found is None:
        return _error(404, "Not Found")
    return Reply(200, found.body, found.content_type)


class MetadataServer:
    """The unix-socket server; `identify` maps a preamble to a VM id, `view_of` reads what
    that VM may see (both through the store, off the event loop)."""

    def __init__(
        self, path: Path, tokens: MetadataTokens, identify: Identify, view_of: ViewOf
    ) -> None:
        self.path = path
        self._tokens = tokens
        self._identify = identify
        self._view_of = view_of
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(_MAX_CONNECTIONS)

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a daemon that did not stop cleanly
        self._server = await asyncio.start_unix_server(
            self._connection, str(self.path), limit=_MAX_HEAD
        )
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()
            return
        async with self._slots:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), _PREAMBLE_TIMEOUT)
                if len(line) > MAX_PREAMBLE:
                    raise ValueError("preamble too long")
                vm_id = await self._identify(parse_preamble(line))
                await self._serve(reader, writer, vm_id)
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                log.warning("metadata connection refused: %s", exc)
            except (TimeoutError, ConnectionError):
                pass
            except Exception:
                log.exception("metadata connection failed")
            finally:
                writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, vm_id: int | None
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        for _ in range(_MAX_REQUESTS):
            try:
                request = await _next_request(conn, reader)
            except h11.RemoteProtocolError:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _send(conn, writer, "GET", _error(400, "Bad Request"))
                return
            if request is None:
                return
            method, target, headers = request
            reply = await self._reply(vm_id, method, target, headers)
            await _send(conn, writer, method, reply)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _reply(
        self, vm_id: int | None, method: str, target: str, headers: dict[str, str]
    ) -> Reply:
        if vm_id is None:
            return _error(403, "Forbidden")  # the address is leased to no VM
        try:
            view = await self._view_of(vm_id)
        except NotFound:
            return _error(403, "Forbidden")  # the VM ended meanwhile
        except StratusError as exc:  # e.g. METADATA USER_DATA that is not base64
            log.warning("metadata of VM %d: %s", vm_id, exc)
            return _error(500, "Internal Server Error")
        return answer(method, target, headers, view, self._tokens)


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[str, str, dict[str, str]] | None:
    """The next request's method, target and headers, its (small) body read and dropped;
    None when the peer closed the connection."""
    request: h11.Request | None = None
    body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(_MAX_HEAD), _IDLE_TIMEOUT)
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > _MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", 413)
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
            return request.method.decode(), request.target.decode("latin-1"), headers
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, method: str, reply: Reply
) -> None:
    headers = [
        ("Content-Type", reply.content_type),
        ("Content-Length", str(len(reply.body))),
        ("Server", "EC2ws"),
        *reply.headers,
    ]
    out = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
    if method != "HEAD":
        out += conn.send(h11.Data(data=reply.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    writer.write(out)
    await asyncio.wait_for(writer.drain(), _IDLE_TIMEOUT)
