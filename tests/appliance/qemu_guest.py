"""Boot the appliance directly with qemu-system-x86_64 (TCG), as the QEMU driver will.

A test helper: a copy-on-write overlay of appliance.qcow2, the context CD-ROM as the last
read-only virtio disk, user networking with the guest's port 80 forwarded to 127.0.0.1,
the serial console in a file and QMP on a unix socket. `stop()` kills QEMU; callers put it
in a finalizer.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from stratus.appliance import Appliance
from stratus.drivers.contextiso import build_context_iso

__all__ = ["Guest", "context_sh", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def context_sh(values: Mapping[str, str]) -> bytes:
    """context.sh as the engine writes it: KEY='value' lines, POSIX-sh sourceable."""
    quoted = {key: value.replace("'", "'\\''") for key, value in values.items()}
    return "".join(f"{key}='{value}'\n" for key, value in quoted.items()).encode()


class Guest:
    """One appliance VM under QEMU; the guest's TCP port 80 is 127.0.0.1:<http_port>."""

    def __init__(self, appliance: Appliance, workdir: Path, *, mac: str, guest_ip: str) -> None:
        self.appliance = appliance
        self.workdir = workdir
        self.mac = mac
        self.guest_ip = guest_ip
        self.http_port = free_port()
        self.console = workdir / "console.log"
        self.qmp_path = workdir / "qmp.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, context: Mapping[str, str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        disk = self.workdir / "disk.qcow2"
        backing = str(self.appliance.disk)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, str(disk)],
            check=True,
            timeout=30,
        )
        iso = self.workdir / "context.iso"
        iso.write_bytes(build_context_iso({"context.sh": context_sh(context)}))
        netdev = (
            "user,id=n0,net=192.168.150.0/24,host=192.168.150.1,"
            f"hostfwd=tcp:127.0.0.1:{self.http_port}-{self.guest_ip}:80"
        )
        argv = [
            "qemu-system-x86_64",
            "-accel", "tcg", "-m", "256", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", str(self.appliance.kernel),
            "-initrd", str(self.appliance.initrd),
            "-append", self.appliance.cmdline,
            "-drive", f"file={disk},if=virtio,format=qcow2",
            "-drive", f"file={iso},if=virtio,readonly=on,format=raw",
            "-netdev", netdev,
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
            "-serial", f"file:{self.console}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]  # fmt: skip
        with (self.workdir / "qemu.stderr").open("wb") as stderr:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def wait_http(self, timeout: float) -> dict[str, Any]:
        """GET / once the guest answers; AssertionError with the console after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.console_text()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                return self.get()
            time.sleep(0.2)
        raise AssertionError(f"no HTTP answer in {timeout:g} s\n{self.console_text()}")

    def get(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.http_port}/", timeout=2)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def qmp(self, command: str) -> dict[str, Any]:
        """Run one QMP command and return its answer (events before it are skipped)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp_path))
            stream = sock.makefile("rw")
            stream.readline()  # the greeting
            answer: dict[str, Any] = {}
            for execute in ("qmp_capabilities", command):
                stream.write(json.dumps({"execute": execute}) + "\n")
                stream.flush()
                answer = json.loads(stream.readline())
                while "return" not in answer and "error" not in answer:
                    answer = json.loads(stream.readline())
            return answer

    def wait_exit(self, timeout: float) -> int | None:
        """QEMU's exit code, or None if it still runs after `timeout`."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def console_text(self) -> str:
        """The serial console and QEMU's stderr, for assertion messages."""
        parts = []
        for path in (self.console, self.workdir / "qemu.stderr"):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts) or "(no console output)"

    def stop(self) -> None:
        """Kill QEMU (idempotent)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
