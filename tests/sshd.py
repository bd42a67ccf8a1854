"""A real OpenSSH server on 127.0.0.1 for tests: keys, config, start, stop, start again.

    with ssh_server() as sshd:           # skips the test when sshd is not installed
        host = HostInfo(1, "h", dict(sshd.options), {})
        sshd.stop()                      # SSH down: listener and every open session killed
        sshd.start()                     # back on the same port, with the same keys

Everything lives in one temporary directory (host key, client key, authorized_keys,
known_hosts, sshd_config, pid file, log), removed by `close()`. The server runs as the
current user (root in CI) and lets that user in with the client key only.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["SSHD_MISSING_HINT", "SshServer", "find_sshd", "ssh_server"]

SSHD_MISSING_HINT = "install openssh-server and openssh-client (apt-get install openssh-server)"
_START_TIMEOUT = 10.0


def find_sshd() -> str | None:
    """The sshd binary (it must be called by its absolute path), or None."""
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    return os.path.realpath(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stratus-test", "-f", str(path)],
        check=True,
        timeout=30,
        capture_output=True,
    )


def _children(pid: int) -> list[int]:
    """Every descendant of pid (read from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class SshServer:
    """One sshd on 127.0.0.1 at a free port; `options` are the host options to reach it."""

    host = "127.0.0.1"

    def __init__(self, sshd: str) -> None:
        self.sshd = sshd
        self.user = getpass.getuser()
        self.root = Path(tempfile.mkdtemp(prefix="stratus-sshd-"))
        self.port = _free_port()
        self.host_key = self.root / "host_ed25519"
        self.key = self.root / "client_ed25519"  # the client's private key
        self.known_hosts = self.root / "known_hosts"
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepare()

    @property
    def options(self) -> dict[str, str]:
        """What a Stratus host needs to reach this server (as `host add -o` gives them)."""
        return {
            "ssh_host": self.host,
            "ssh_port": str(self.port),
            "ssh_user": self.user,
            "ssh_key": str(self.key),
            "ssh_known_hosts": str(self.known_hosts),
        }

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _prepare(self) -> None:
        _keygen(self.host_key)
        _keygen(self.key)
        shutil.copyfile(f"{self.key}.pub", self.root / "authorized_keys")
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # the temp dir's modes are not sshd's business
                    "AllowStreamLocalForwarding yes",  # open_unix: QMP sockets
                    "Subsystem sftp internal-sftp",  # the SFTP fallback, no sftp-server needed
                    # bash skips ~/.bashrc over SSH when SHLVL says it is nested: a
                    # developer's rc file (pyenv init: 0.15 s) stays out of every command
                    "SetEnv SHLVL=1",
                    "LogLevel INFO",
                    "",
                ]
            )
        )

    def start(self) -> None:
        """Start sshd and wait until it accepts connections (RuntimeError with its log if not)."""
        if self.running:
            return
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((self.host, self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"sshd did not start on {self.host}:{self.port}: {tail}")

    def stop(self) -> None:
        """Take SSH down: the listener and every session it forked (open connections drop)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGSTOP)  # no new connections while we gather its children
        for pid in [proc.pid, *_children(proc.pid)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def ssh_server() -> Iterator[SshServer]:
    """A started SshServer, closed at exit; skips the calling test when sshd is missing."""
    sshd = find_sshd()
    if sshd is None or shutil.which("ssh-keygen") is None:
        pytest.skip(f"OpenSSH server not found: {SSHD_MISSING_HINT}")
    server = SshServer(sshd)
    try:
        server.start()
        yield server
    finally:
        server.close()
