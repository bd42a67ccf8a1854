"""A small asyncio QMP (QEMU Machine Protocol) client.

It speaks over the (reader, writer) pair of `HostAccess.open_unix`, so the same client
drives a QEMU on this machine and one behind SSH. QMP is one JSON object per line: a
greeting, then `{"execute": ...}` commands answered by `{"return": ...}` or
`{"error": {"class", "desc"}}`, with asynchronous `{"event": ...}` lines in between; the
client skips events while it waits for an answer but keeps them in `events`.
Every read has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from stratus.drivers.access import HostAccess, SocketReader, SocketWriter
from stratus.model.errors import DriverError, DriverTimeout

__all__ = ["QmpClient", "QmpError", "qmp_session"]

_MAX_EVENTS = 200  # events kept (oldest dropped): enough to look back over one operation


class QmpError(DriverError):
    """QEMU refused a command; `error_class` is QMP's class (GenericError, ...)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QEMU refused {command}: {desc} ({error_class})")
        self.error_class = error_class
        self.desc = desc


class QmpClient:
    """One QMP connection; use `qmp_session()` to open and close it."""

    def __init__(self, reader: SocketReader, writer: SocketWriter, where: str) -> None:
        self._reader = reader
        self._writer = writer
        self._where = where
        self._next_id = 0
        #: asynchronous events seen so far, oldest first (SHUTDOWN, STOP, MIGRATION...)
        self.events: list[dict[str, Any]] = []

    async def handshake(self, timeout: float = 10.0) -> dict[str, Any]:
        """Read the greeting and leave capabilities negotiation mode; returns the greeting."""
        greeting = await self._read(timeout)
        if "QMP" not in greeting:
            raise DriverError(f"not a QMP greeting on {self._where}: {str(greeting)[:200]}")
        await self.execute("qmp_capabilities", timeout=timeout)
        return greeting

    async def execute(
        self, command: str, args: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        """Run a command and return its `return` value; QmpError when QEMU refuses it."""
        self._next_id += 1
        request_id = f"s{self._next_id}"
        message: dict[str, Any] = {"execute": command, "id": request_id}
        if args:
            message["arguments"] = args
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await asyncio.wait_for(self._writer.drain(), timeout)
        except (OSError, TimeoutError) as exc:
            raise DriverError(f"QMP connection lost on {self._where} sending {command}") from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            answer = await self._read(deadline - loop.time(), command)
            if answer.get("id") != request_id:
                continue  # an answer to a command whose wait was abandoned
            if "error" in answer:
                error = answer["error"]
                raise QmpError(command, str(error.get("class")), str(error.get("desc")))
            return answer.get("return")

    async def quit(self, timeout: float = 10.0) -> None:
        """Ask QEMU to exit; the connection closing before the answer is success too."""
        with contextlib.suppress(DriverError):
            await self.execute("quit", timeout=timeout)

    def saw_event(self, name: str) -> bool:
        """Whether an event of that name arrived on this connection (while waiting)."""
        return any(event.get("event") == name for event in self.events)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)

    async def _read(self, timeout: float, waiting_for: str = "the greeting") -> dict[str, Any]:
        """The next message that is not an event (events are remembered and skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self._next(deadline - loop.time(), timeout, waiting_for)
            if "event" not in message:
                return message

    async def _next(self, remaining: float, timeout: float, waiting_for: str) -> dict[str, Any]:
        """The next message of any kind, events included (which are also remembered)."""
        try:
            if remaining <= 0:
                raise TimeoutError
            line = await asyncio.wait_for(self._reader.readline(), remaining)
        except TimeoutError as exc:
            raise DriverTimeout(
                f"QEMU did not answer {waiting_for} within {timeout:g} s on {self._where}"
            ) from exc
        except (OSError, ValueError) as exc:  # ValueError: a line over the reader's limit
            raise DriverError(f"QMP read failed on {self._where}: {exc}") from exc
        if not line:
            raise DriverError(
                f"QEMU closed its QMP socket on {self._where} while waiting for {waiting_for}"
            )
        message = self._decode(line)
        if "event" in message:
            self.events.append(message)
            del self.events[:-_MAX_EVENTS]
        return message

    def _decode(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise DriverError(f"QEMU sent invalid QMP on {self._where}: {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise DriverError(f"QEMU sent an unexpected QMP message on {self._where}")
        return message


@contextlib.asynccontextmanager
async def qmp_session(
    access: HostAccess, socket_path: str, timeout: float = 10.0
) -> AsyncIterator[QmpClient]:
    """A negotiated QMP connection to the QEMU listening on `socket_path`, closed on exit."""
    reader, writer = await access.open_unix(socket_path, timeout)
    client = QmpClient(reader, writer, f"{access.where}:{socket_path}")
    try:
        await client.handshake(timeout)
        yield client
    finally:
        await client.close()
