"""A network namespace of a test's own: uniquely named, deleted with everything in it.

Tests that need bridges, veths or taps put them in such a namespace, so they never touch
the root namespace's devices, and traffic stays between addresses the test made. Deleting
the namespace removes its devices; processes still inside (an LXC monitor, a QEMU) keep
it alive, so the test must stop those first, which its own finalizers do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["Netns", "netns_available", "new_netns"]

_TIMEOUT = 10


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=check)


def netns_available() -> bool:
    """True when this process may create namespaces (root with iproute2)."""
    return os.geteuid() == 0 and shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin") is not None


class Netns:
    """A namespace made for one test; `name` is what `ip netns` and NicSpec.netns take."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(
        self, argv: Sequence[str], *, timeout: float = _TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (its network only), without raising."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.name}", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def http_get(self, url: str, timeout: float = 3.0) -> str | None:
        """GET a URL from inside the namespace with busybox wget; None on no answer.

        busybox wget's own -T option crashes in Debian's 1.35 build, so `timeout` bounds it.
        """
        try:
            result = self.run(
                ["timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url],
                timeout=timeout + 5,
            )
        except subprocess.TimeoutExpired:
            return None
        return result.stdout if result.returncode == 0 else None

    def links(self, kind: str | None = None) -> list[str]:
        """Device names in the namespace, optionally of one kind (bridge, veth, tun)."""
        argv = ["ip", "-n", self.name, "-o", "link", "show"]
        if kind:
            argv += ["type", kind]
        out = _run(argv).stdout
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def delete(self) -> None:
        """Delete the namespace and its devices; a namespace already gone is fine."""
        _run(["ip", "netns", "delete", self.name], check=False)


@contextmanager
def new_netns(prefix: str = "st") -> Iterator[Netns]:
    """A fresh namespace with loopback up, deleted when the block ends, even on failure."""
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _run(["ip", "netns", "add", name])
    ns = Netns(name)
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield ns
    finally:
        ns.delete()
