"""A host reached over SSH: commands, unix sockets and file copies through one connection.

`SshAccess` keeps one asyncssh connection per host, opened on first use (10 s connect
timeout, keepalives every 15 s) and opened again once when it has dropped. Commands run
in their own channel, at most `max_sessions` at a time (sshd's MaxSessions defaults to 10);
unix socket forwards (QMP) do not count. Files travel with rsync over the ssh client, or
with SFTP when rsync is missing on either side.

Host keys are checked against `ssh_known_hosts` (else ~/.ssh/known_hosts); an unknown key
is refused unless the host says `ssh_insecure=yes`. Keys never appear in messages or logs.

The remote login shell must be POSIX (sh, bash, dash): every command is started as
`echo <marker>$$ >&2; exec <argv>` so its process group can be killed on a timeout (sshd
refuses "signal" requests on root sessions, and closing the channel kills nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from stratus.drivers.access import (
    CommandResult,
    HostAccess,
    LocalAccess,
    SocketReader,
    SocketWriter,
    command_error,
    which,
)
from stratus.drivers.base import HostInfo
from stratus.drivers.sshcopy import (
    remote_sizes_argv,
    repair_pulled,
    rsync_argv,
    sftp_get,
    sftp_put,
)
from stratus.model.errors import DriverError, DriverTimeout, HostUnreachable, InvalidInput

__all__ = ["SshAccess", "SshParams", "ssh_argv", "ssh_params"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 15.0  # a dead connection is noticed after 3 unanswered keepalives
_KILL_TIMEOUT = 5.0
_SESSION_RETRY_FOR = 5.0  # seconds to keep asking when sshd refuses a session channel
_PID_MARKER = b"stratus-pid="
_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off", ""}


@dataclass(frozen=True)
class SshParams:
    """How to reach one host over SSH, from its `ssh_*` options."""

    host: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None  # private key; None: ~/.ssh/id_* and the agent
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    insecure: bool = False  # accept any host key (ssh_insecure=yes)

    @property
    def key(self) -> tuple[object, ...]:
        """What AccessPool shares one connection by: hosts that differ in nothing share it."""
        return (self.host, self.port, self.user, self.key_file, self.known_hosts, self.insecure)

    @property
    def target(self) -> str:
        """host:port, IPv6 in brackets, for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _option_file(options: dict[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value in (None, ""):
        return None
    path = os.path.expanduser(str(value))
    if not os.path.isfile(path):
        raise InvalidInput(f"host option {name}: no such file {path}", hint="give an existing path")
    return path


def ssh_params(host: HostInfo) -> SshParams:
    """Read and check a host's ssh_* options; InvalidInput names the option that is wrong."""
    options = host.options
    address = str(options.get("ssh_host") or "").strip()
    if not address:
        raise InvalidInput(f"host {host.name} has no ssh_host option")
    raw_port = options.get("ssh_port", 22)
    try:
        port = int(str(raw_port).strip() or 22)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise InvalidInput(
            f"host option ssh_port must be a port number (1-65535), not {raw_port!r}"
        )
    insecure_text = str(options.get("ssh_insecure", "no")).strip().lower()
    if insecure_text not in _TRUE | _FALSE:
        raise InvalidInput(f"host option ssh_insecure must be yes or no, not {insecure_text!r}")
    return SshParams(
        host=address,
        port=port,
        user=str(options.get("ssh_user") or "root"),
        key_file=_option_file(options, "ssh_key"),
        known_hosts=_option_file(options, "ssh_known_hosts"),
        insecure=insecure_text in _TRUE,
    )


def ssh_argv(params: SshParams, connect_timeout: float = CONNECT_TIMEOUT) -> list[str]:
    """The OpenSSH client command (without destination) that checks keys as SshAccess does."""
    argv = ["ssh", "-F", "none", "-p", str(params.port), "-l", params.user]
    if params.key_file:
        argv += ["-i", params.key_file, "-o", "IdentitiesOnly=yes"]
    if params.insecure:
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    else:
        argv += ["-o", "StrictHostKeyChecking=yes"]
        if params.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={params.known_hosts}"]
    return [
        *argv,
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
        "-o", f"ServerAliveInterval={int(KEEPALIVE_INTERVAL)}",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def _why(params: SshParams, exc: BaseException, connect_timeout: float) -> str:
    """The reason a connection failed, in words, with what to check."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused — is sshd running?"
    if isinstance(exc, TimeoutError):
        return f"no answer within {connect_timeout:g} s — is the host up and the port open?"
    if isinstance(exc, asyncssh.PermissionDenied):
        key = f"the key {params.key_file}" if params.key_file else "the default keys"
        return (
            f"authentication failed for user {params.user} with {key} — "
            "is its public key in the host's authorized_keys?"
        )
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        where = params.known_hosts or "~/.ssh/known_hosts"
        return (
            f"host key not trusted ({exc.reason}) — add the host's key to {where} "
            "(ssh-keyscan), or set ssh_insecure=yes to skip the check"
        )
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class SshAccess(HostAccess):
    """One host over SSH, through one reused asyncssh connection."""

    is_local = False

    def __init__(
        self,
        params: SshParams,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_sessions: int = 8,
        rsync: bool = True,
    ) -> None:
        """max_sessions: concurrent commands per connection (stay under sshd's MaxSessions);
        rsync=False copies files with SFTP even where rsync is installed."""
        self.params = params
        self.connect_timeout = connect_timeout
        self.use_rsync = rsync
        self.where = f"ssh {params.user}@{params.target}"
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connecting: asyncio.Future[asyncssh.SSHClientConnection] | None = None
        self._sessions = asyncio.Semaphore(max_sessions)
        self._warned_insecure = False

    # -- the connection ------------------------------------------------------------------

    def _why(self, exc: BaseException) -> str:
        return _why(self.params, exc, self.connect_timeout)

    async def _connect(self) -> asyncssh.SSHClientConnection:
        p = self.params
        if p.insecure and not self._warned_insecure:
            self._warned_insecure = True
            log.warning("%s: ssh_insecure=yes, the host key is not checked", self.where)
        known_hosts: Any = None if p.insecure else (p.known_hosts or ())
        try:
            return await asyncio.wait_for(
                asyncssh.connect(
                    p.host,
                    p.port,
                    username=p.user,
                    client_keys=[p.key_file] if p.key_file else (),
                    agent_path=None if p.key_file else (),
                    known_hosts=known_hosts,
                    config=None,  # no ~/.ssh/config surprises: the options say it all
                    connect_timeout=self.connect_timeout,
                    keepalive_interval=KEEPALIVE_INTERVAL,
                    keepalive_count_max=3,
                ),
                self.connect_timeout + 1,
            )
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise InvalidInput(
                f"host option ssh_key: cannot use {p.key_file} ({type(exc).__name__})",
                hint="give an unencrypted OpenSSH or PEM private key",
            ) from exc
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise HostUnreachable(f"cannot reach {p.target} over SSH: {self._why(exc)}") from exc

    async def _connection(self) -> asyncssh.SSHClientConnection:
        """The open connection, opened now if there is none or it has dropped.

        Callers arriving while a connection is being opened wait for that same attempt, so
        a dead host costs them all one connect timeout, not one each."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        # shielded: one caller's cancellation does not cancel the others' attempt
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Future[asyncssh.SSHClientConnection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled() and task.exception() is None:  # exception(): retrieved
            self._conn = task.result()

    async def _open(self, opener: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
        """Open a channel with opener; when the connection turns out dead, reconnect once."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                return await opener(conn)
            except (OSError, asyncssh.Error) as exc:
                if not conn.is_closed() and not isinstance(exc, asyncssh.ConnectionLost):
                    raise  # the connection is fine: the channel itself was refused
                if self._conn is conn:
                    self._conn = None
                if attempt == 2:
                    raise HostUnreachable(
                        f"lost the SSH connection to {self.params.target}: {self._why(exc)}"
                    ) from exc
        raise AssertionError("unreachable")

    async def _open_session(
        self, opener: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]
    ) -> T:
        """_open for session channels (commands, SFTP), which sshd may refuse for a moment.

        sshd frees a finished session's MaxSessions slot a little after its channel closes,
        so a burst of commands can find the slots full: wait briefly and ask again."""
        delay, waited = 0.01, 0.0
        while True:
            try:
                return await self._open(opener)
            except asyncssh.ChannelOpenError:
                if waited >= _SESSION_RETRY_FOR:
                    raise
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 0.25)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), _KILL_TIMEOUT)

    # -- commands ------------------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> CommandResult:
        if not argv:
            raise InvalidInput("no command to run")
        name = Path(argv[0]).name
        command = f"echo {_PID_MARKER.decode()}$$ >&2; exec {shlex.join(argv)}"
        await self._connection()  # unreachable hosts fail here, on the connect timeout
        proc: asyncssh.SSHClientProcess[bytes] | None = None
        pid: int | None = None
        try:
            async with asyncio.timeout(timeout), self._sessions:
                proc = started = await self._open_session(
                    lambda c: c.create_process(command, encoding=None)
                )
                if input:
                    started.stdin.write(input)
                started.stdin.write_eof()
                pid, early = await _read_pid(started)
                out, err = await started.communicate()
        except (TimeoutError, asyncio.CancelledError) as exc:
            await self._kill(proc, pid)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise DriverTimeout(
                f"{name} did not finish within {timeout:g} s on {self.where}"
            ) from exc
        except asyncssh.ChannelOpenError as exc:
            raise DriverError(
                f"sshd on {self.where} refused to run {name}: {exc.reason}",
                hint="too many commands at once for its MaxSessions?",
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            raise HostUnreachable(
                f"lost the SSH connection to {self.params.target} while running {name}: "
                f"{self._why(exc)}"
            ) from exc
        returncode = started.returncode
        if returncode is None:
            raise HostUnreachable(
                f"lost the SSH connection to {self.params.target} while running {name}"
            )
        result = CommandResult(returncode, out, early + err)
        if returncode == 127 and f"exec: {argv[0]}: not found".encode() in err:  # our exec
            raise DriverError(f"{name} is not installed on {self.where}")
        if check and returncode != 0:
            raise command_error(argv, self.where, result)
        return result

    async def _kill(self, proc: asyncssh.SSHClientProcess[bytes] | None, pid: int | None) -> None:
        """Kill a timed-out command's process group on the host, then drop its channel."""
        if pid is not None:
            kill = f"kill -KILL -- -{pid}"  # the group: the command and all it started
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._open_session(lambda c: c.run(kill, check=False)), _KILL_TIMEOUT
                )
        if proc is not None:
            proc.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait_closed(), _KILL_TIMEOUT)

    # -- sockets -------------------------------------------------------------------------

    async def open_unix(
        self, path: str, timeout: float = 10.0
    ) -> tuple[SocketReader, SocketWriter]:
        await self._connection()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await self._open(lambda c: c.open_unix_connection(path))
        except TimeoutError as exc:
            raise DriverTimeout(
                f"no answer on {path} on {self.where} within {timeout:g} s"
            ) from exc
        except asyncssh.ChannelOpenError as exc:
            raise DriverError(f"cannot connect to {path} on {self.where}: {exc.reason}") from exc
        return reader, writer

    # -- files ---------------------------------------------------------------------------

    async def push(self, local_path: str, remote_path: str, *, timeout: float = 600.0) -> None:
        if not os.path.lexists(local_path):
            raise DriverError(f"cannot copy {local_path} to {self.where}: no such file here")
        is_dir = os.path.isdir(local_path)
        parent = os.path.dirname(remote_path.rstrip("/")) or "."
        _, rsync_there = await self._inspect(remote_path, make_dir=parent)
        if rsync_there and self._rsync_here():
            source = local_path.rstrip("/") + "/" if is_dir else local_path
            await self._rsync(source, self._remote_spec(remote_path), timeout)
            return
        await self._sftp(
            lambda sftp: sftp_put(sftp, local_path, remote_path),
            f"copy {local_path} to {self.where}",
            timeout,
        )

    async def pull(self, remote_path: str, local_path: str, *, timeout: float = 600.0) -> None:
        kind, rsync_there = await self._inspect(remote_path)
        if kind == "missing":
            raise DriverError(f"cannot copy {remote_path} from {self.where}: no such file there")
        os.makedirs(os.path.dirname(local_path.rstrip("/")) or ".", exist_ok=True)
        if rsync_there and self._rsync_here():
            source = remote_path.rstrip("/") + "/" if kind == "dir" else remote_path
            await self._rsync(self._remote_spec(source), local_path, timeout)
            return
        await self._sftp(
            lambda sftp: sftp_get(sftp, remote_path, local_path),
            f"copy {remote_path} from {self.where}",
            timeout,
        )
        sizes = await self.run(remote_sizes_argv(remote_path), timeout=timeout)
        await repair_pulled(sizes.stdout, local_path, timeout)

    async def _inspect(self, path: str, make_dir: str | None = None) -> tuple[str, bool]:
        """One round trip: create make_dir; is path a dir, a file or missing; has it rsync?"""
        q = shlex.quote(path)
        script = f"mkdir -p {shlex.quote(make_dir)} || exit 1; " if make_dir else ""
        script += (
            f"if [ -d {q} ]; then echo dir; elif [ -e {q} ]; then echo file; "
            "else echo missing; fi; command -v rsync >/dev/null 2>&1 && echo rsync || echo no-rsync"
        )
        words = (await self.sh(script, timeout=30)).text.split()
        return (words[0] if words else "missing"), "rsync" in words

    def _remote_spec(self, path: str) -> str:
        host = self.params.host
        return f"[{host}]:{path}" if ":" in host else f"{host}:{path}"

    def _rsync_here(self) -> bool:
        """rsync and its ssh are installed on the front-end (and not turned off)."""
        return self.use_rsync and which("rsync") is not None and which("ssh") is not None

    async def _rsync(self, source: str, target: str, timeout: float) -> None:
        argv = rsync_argv(ssh_argv(self.params, self.connect_timeout), source, target)
        result = await LocalAccess().run(argv, timeout=timeout, check=False)
        if result.returncode != 0:
            raise command_error(argv, self.where, result)

    async def _sftp(
        self,
        work: Callable[[asyncssh.SFTPClient], Awaitable[None]],
        what: str,
        timeout: float,
    ) -> None:
        """Run work with an SFTP client (rsync is missing on one side)."""
        try:
            async with asyncio.timeout(timeout), self._sessions:
                sftp = await self._open_session(lambda c: c.start_sftp_client())
                try:
                    await work(sftp)
                finally:
                    sftp.exit()
        except TimeoutError as exc:
            raise DriverTimeout(f"cannot {what} within {timeout:g} s") from exc
        except (OSError, asyncssh.Error) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise DriverError(f"cannot {what} over SFTP: {reason}") from exc


async def _read_pid(proc: asyncssh.SSHClientProcess[bytes]) -> tuple[int | None, bytes]:
    """The pid our wrapper prints first on stderr, and any login-shell noise before it."""
    early = b""
    while True:
        line = await proc.stderr.readline()
        if not line:
            return None, early
        if line.startswith(_PID_MARKER):
            with contextlib.suppress(ValueError):
                return int(line[len(_PID_MARKER) :]), early
            return None, early
        early += line
