"""Real figures read on a host through its HostAccess, in one round trip."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from stratus.drivers.access import HostAccess
from stratus.model.errors import DriverError

__all__ = ["HostFigures", "read_figures"]

# One shell script, so an SSH host costs one round trip. Each line is KEY VALUE.
_SCRIPT = """
set -e
mkdir -p {ds}
echo "cpus $(nproc)"
awk '/^MemTotal:/ {{print "mem_total_kb", $2}} /^MemAvailable:/ {{print "mem_free_kb", $2}}' \
    /proc/meminfo
echo "load $(cut -d' ' -f1 /proc/loadavg)"
df -Pk {ds} | awk 'NR==2 {{print "disk_total_kb", $2; print "disk_free_kb", $4}}'
echo "kernel $(uname -r)"
echo "arch $(uname -m)"
"""


@dataclass(frozen=True)
class HostFigures:
    cpus: int
    memory_mb: int
    free_memory_mb: int
    load1: float
    disk_total_mb: int  # of the filesystem holding the system datastore
    disk_free_mb: int
    kernel: str
    arch: str

    def attributes(self) -> dict[str, str]:
        """The host attributes a probe reports (usable in SCHED_REQUIREMENTS)."""
        return {
            "ARCH": self.arch,
            "KERNEL": self.kernel,
            "DISK_FREE_MB": str(self.disk_free_mb),
            "DISK_TOTAL_MB": str(self.disk_total_mb),
        }


async def read_figures(access: HostAccess, datastore: str, timeout: float = 15.0) -> HostFigures:
    """Cores, memory total and free, load, disk free in the datastore, kernel and arch."""
    result = await access.sh(_SCRIPT.format(ds=shlex.quote(datastore)), timeout=timeout)
    values: dict[str, str] = {}
    for line in result.text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            values[key] = value.strip()
    try:
        return HostFigures(
            cpus=int(values["cpus"]),
            memory_mb=int(values["mem_total_kb"]) // 1024,
            free_memory_mb=int(values["mem_free_kb"]) // 1024,
            load1=float(values["load"]),
            disk_total_mb=int(values["disk_total_kb"]) // 1024,
            disk_free_mb=int(values["disk_free_kb"]) // 1024,
            kernel=values["kernel"],
            arch=values["arch"],
        )
    except (KeyError, ValueError) as exc:
        raise DriverError(
            f"could not read the host's figures on {access.where} ({exc}); got: "
            f"{result.text[:300]!r}"
        ) from exc
