"""The Debian packages the appliance is made of: the cloud kernel and busybox-static.

Resolved with apt-cache (the versioned kernel package behind linux-image-cloud-amd64),
fetched with `apt-get download` (no installation, no root needed) and unpacked with
`dpkg -x`. When apt's package lists are missing and we are root, `apt-get update` runs once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stratus.appliance.tools import find_tool, run
from stratus.model.errors import DriverError

__all__ = ["KERNEL_META_PACKAGE", "Packages", "download", "extract", "resolve_packages"]

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"


@dataclass(frozen=True)
class Packages:
    """The exact package versions one appliance is built from (its cache key, with the scripts)."""

    kernel_package: str  # linux-image-6.1.0-56-cloud-amd64
    kernel_package_version: str  # 6.1.192-2
    busybox_version: str  # 1:1.35.0-4+deb12u1+b1

    @property
    def kernel_version(self) -> str:
        """The kernel release (uname -r), which names /lib/modules/<release>."""
        return self.kernel_package.removeprefix("linux-image-")


def resolve_packages(progress: Callable[[str], None]) -> Packages:
    """The versions apt would download now; runs `apt-get update` once when lists are missing."""
    find_tool("apt-cache", "apt")
    arch = run(["dpkg", "--print-architecture"], timeout=30).strip()
    if arch != "amd64":
        raise DriverError(
            f"the appliance is built from Debian's amd64 cloud kernel; this machine is {arch}",
            hint="build it on an amd64 Debian machine and copy the output directory",
        )
    found = _query(KERNEL_META_PACKAGE)
    if found is None and os.geteuid() == 0:
        progress("apt package lists are missing: running apt-get update")
        run(["apt-get", "update"], timeout=600)
        found = _query(KERNEL_META_PACKAGE)
    if found is None:
        raise DriverError(
            f"apt knows no {KERNEL_META_PACKAGE} or {BUSYBOX_PACKAGE}",
            hint="run `apt-get update` as root (Debian bookworm or later with main enabled)",
        )
    return found


def download(packages: Packages, dest: Path) -> dict[str, Path]:
    """Download both .deb files into dest; returns {"kernel": path, "busybox": path}."""
    run(
        [
            "apt-get",
            "download",
            f"{packages.kernel_package}={packages.kernel_package_version}",
            f"{BUSYBOX_PACKAGE}={packages.busybox_version}",
        ],
        cwd=dest,
        timeout=600,
    )
    debs = {
        "kernel": sorted(dest.glob(f"{packages.kernel_package}_*.deb")),
        "busybox": sorted(dest.glob(f"{BUSYBOX_PACKAGE}_*.deb")),
    }
    missing = [name for name, paths in debs.items() if not paths]
    if missing:
        raise DriverError(f"apt-get download left no .deb for {', '.join(missing)} in {dest}")
    return {name: paths[0] for name, paths in debs.items()}


def extract(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files under dest (dpkg -x: no scripts run, nothing installed)."""
    run(["dpkg", "-x", deb, dest], timeout=300)


def _query(meta: str) -> Packages | None:
    """The versioned kernel package behind `meta` and both candidate versions, or None."""
    try:
        depends = run(["apt-cache", "depends", meta], timeout=60)
    except DriverError:
        return None
    match = re.search(r"Depends:\s*(linux-image-\S+)", depends)
    if match is None:
        return None
    kernel = match.group(1)
    versions = _candidates(kernel, BUSYBOX_PACKAGE)
    if kernel not in versions or BUSYBOX_PACKAGE not in versions:
        return None
    return Packages(kernel, versions[kernel], versions[BUSYBOX_PACKAGE])


def _candidates(*packages: str) -> dict[str, str]:
    """The versions `apt-get download` would fetch, from one `apt-cache policy` call."""
    try:
        policy = run(["apt-cache", "policy", *packages], timeout=60)
    except DriverError:
        return {}
    found: dict[str, str] = {}
    package = None
    for line in policy.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            package = line[:-1]
        elif package and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version != "(none)":
                found[package] = version
    return found
