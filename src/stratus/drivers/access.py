"""Host access: how drivers run commands and move files on a host, locally or over SSH.

Every hypervisor driver talks to its host only through a `HostAccess`, so the same QEMU or
LXC driver serves the front-end machine and a remote host alike. `AccessPool.get(host)`
chooses by the host's options:

    ssh_host=ADDRESS   reach the host over SSH (asyncssh); else it is this machine
    ssh_port=22  ssh_user=root  ssh_key=PATH  ssh_known_hosts=PATH
    datastore=PATH     the host's system datastore (VM directories); see system_datastore()

Errors are the model's: a host that cannot be reached raises HostUnreachable, a command
that fails raises DriverError naming the command, the host and the tail of its stderr, and
a command that outlives its timeout is killed and raises DriverTimeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stratus.drivers.base import HostInfo
from stratus.model.errors import DriverError, DriverTimeout

__all__ = [
    "AccessPool",
    "CommandResult",
    "HostAccess",
    "LocalAccess",
    "SocketReader",
    "SocketWriter",
    "system_datastore",
]

_STDERR_TAIL = 600


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


def command_error(argv: Sequence[str], where: str, result: CommandResult) -> DriverError:
    tail = result.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
    name = Path(argv[0]).name if argv else "command"
    detail = f": {tail}" if tail else ""
    return DriverError(f"{name} failed on {where} (exit {result.returncode}){detail}")


class SocketReader(Protocol):
    """The reading half of a socket on a host: asyncio.StreamReader or asyncssh's SSHReader."""

    async def read(self, n: int = -1) -> bytes: ...
    async def readline(self) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...


class SocketWriter(Protocol):
    """The writing half: asyncio.StreamWriter or asyncssh's SSHWriter."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    async def wait_closed(self) -> None: ...


class HostAccess(ABC):
    """Run commands and move files on one host."""

    #: for messages: "local" or "ssh root@10.0.0.5:22"
    where: str
    #: True when the host is this machine (front-end paths are host paths)
    is_local: bool

    @abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> CommandResult:
        """Run argv (no shell) on the host; DriverError when check and the exit is not 0."""

    async def sh(self, script: str, *, timeout: float = 60.0, check: bool = True) -> CommandResult:
        """Run a POSIX shell script on the host (build it with shlex.quote for values)."""
        return await self.run(["sh", "-c", script], timeout=timeout, check=check)

    @abstractmethod
    async def open_unix(
        self, path: str, timeout: float = 10.0
    ) -> tuple[SocketReader, SocketWriter]:
        """Connect to a unix socket on the host (QMP); DriverError when nobody listens."""

    async def read_file(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The file's content (its last max_bytes when given); DriverError when missing."""
        if max_bytes is None:
            return (await self.run(["cat", "--", path])).stdout
        return (await self.run(["tail", "-c", str(max_bytes), "--", path])).stdout

    async def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file atomically (a temporary name, then rename), creating its folder."""
        tmp = f"{path}.tmp{os.getpid()}-{secrets.token_hex(4)}"  # unique: concurrent writers
        q = shlex.quote
        script = (
            f"mkdir -p {q(os.path.dirname(path) or '.')} && cat > {q(tmp)} && "
            f"chmod {mode:o} {q(tmp)} && mv -f {q(tmp)} {q(path)}"
        )
        await self.run(["sh", "-c", script], input=data)

    @abstractmethod
    async def push(self, local_path: str, remote_path: str, *, timeout: float = 600.0) -> None:
        """Copy a front-end file or directory to remote_path on the host, creating its folder.

        remote_path becomes the copy (a directory's content is merged into it, never nested);
        sparse files stay sparse."""

    @abstractmethod
    async def pull(self, remote_path: str, local_path: str, *, timeout: float = 600.0) -> None:
        """Copy a file or directory of the host to local_path on the front-end."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Drop connections."""


class LocalAccess(HostAccess):
    """This machine: commands are subprocesses, files are files."""

    where = "local"
    is_local = True

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> CommandResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise DriverError(f"{argv[0]} is not installed on this host") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # the whole process group: `sh -c` scripts leave their children behind otherwise
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            if isinstance(exc, asyncio.CancelledError):
                raise
            name = Path(argv[0]).name
            raise DriverTimeout(f"{name} did not finish within {timeout:g} s on local") from exc
        result = CommandResult(proc.returncode or 0, out, err)
        if check and result.returncode != 0:
            raise command_error(argv, self.where, result)
        return result

    async def open_unix(
        self, path: str, timeout: float = 10.0
    ) -> tuple[SocketReader, SocketWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        except TimeoutError as exc:
            raise DriverTimeout(f"no answer on {path} within {timeout:g} s") from exc
        except OSError as exc:
            raise DriverError(f"cannot connect to {path}: {exc.strerror or exc}") from exc

    async def push(self, local_path: str, remote_path: str, *, timeout: float = 600.0) -> None:
        if os.path.realpath(local_path) == os.path.realpath(remote_path):
            return
        await self.run(["mkdir", "-p", os.path.dirname(remote_path) or "."])
        # -T: remote_path becomes the copy (never a folder inside it), as rsync src/ dst does
        await self.run(
            ["cp", "-a", "-T", "--reflink=auto", "--sparse=always", "--", local_path, remote_path],
            timeout=timeout,
        )

    async def pull(self, remote_path: str, local_path: str, *, timeout: float = 600.0) -> None:
        await self.push(remote_path, local_path, timeout=timeout)


def system_datastore(host: HostInfo, data_dir: Path) -> str:
    """Where VM directories live on the host: the `datastore` option, else a default.

    Local hosts share `<data_dir>/datastores/system` by default, so several host entries
    on one machine share storage (as hosts on a shared filesystem do), which is what live
    migration between them needs. Remote hosts default to /var/lib/stratus/datastores/system.
    """
    configured = host.options.get("datastore")
    if configured:
        return str(configured)
    if host.options.get("ssh_host"):
        return "/var/lib/stratus/datastores/system"
    return str(data_dir / "datastores" / "system")


class AccessPool:
    """One HostAccess per host, reused across calls (SSH connections stay open)."""

    def __init__(self) -> None:
        self._local = LocalAccess()
        self._remote: dict[tuple[object, ...], HostAccess] = {}

    async def get(self, host: HostInfo) -> HostAccess:
        if not host.options.get("ssh_host"):
            return self._local
        from stratus.drivers.ssh import SshAccess, ssh_params  # asyncssh only when needed

        params = ssh_params(host)
        access = self._remote.get(params.key)
        if access is None:
            access = SshAccess(params)
            self._remote[params.key] = access
        return access

    async def close(self) -> None:
        for access in self._remote.values():
            await access.close()
        self._remote.clear()


def which(program: str) -> str | None:
    """A program on this machine's PATH (sbin included, where Debian keeps ip and lxc)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return shutil.which(program, path=path)
