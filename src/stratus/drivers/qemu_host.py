"""What the QEMU driver reads and keeps on a host: run files, acceleration, free ports.

Each host entry has its own run directory `<ds>/.hosts/<host name>/` holding, per
instance, `<deploy_id>.json` (the run record: request id, VM id, the Launch), `.pid` and
`.qmp`. Listing a run directory, with each process's liveness, CPU ticks and RSS, is one
shell script: one round trip for an SSH host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from stratus.drivers.access import HostAccess
from stratus.drivers.qemu_argv import (
    DEBUG_EXIT_CODE,
    QEMU_BINARY,
    Launch,
    launch_from_dict,
    launch_to_dict,
)
from stratus.model.errors import DriverError

__all__ = [
    "AccelInfo",
    "AccelProber",
    "CpuMeter",
    "LiveRecord",
    "RunRecord",
    "choose_accel",
    "list_records",
    "qmp_socket_path",
    "remove_run_files",
    "write_record",
]

_QUICK = 30.0
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
_SHORT_SOCKET_DIR = "/tmp/stratus-qmp"


@dataclass(frozen=True)
class RunRecord:
    """One instance of one host entry, as its run file keeps it."""

    deploy_id: str
    request_id: str
    vm_id: int
    launch: Launch
    qmp: str  # the QMP socket path on the host
    suspended: str | None = None  # the saved state file while suspended
    taps: tuple[str, ...] = ()  # tap devices made for it (deleted with it)
    ports: dict[str, str] = field(default_factory=dict)  # guest port -> "127.0.0.1:PORT"

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "deploy_id": self.deploy_id,
            "request_id": self.request_id,
            "vm_id": self.vm_id,
            "qmp": self.qmp,
            "suspended": self.suspended,
            "taps": list(self.taps),
            "ports": self.ports,
            "launch": launch_to_dict(self.launch),
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        data = json.loads(text)
        return cls(
            deploy_id=data["deploy_id"],
            request_id=data["request_id"],
            vm_id=int(data["vm_id"]),
            launch=launch_from_dict(data["launch"]),
            qmp=data["qmp"],
            suspended=data.get("suspended"),
            taps=tuple(data.get("taps", ())),
            ports=dict(data.get("ports", {})),
        )


@dataclass(frozen=True)
class LiveRecord:
    """A run record with what the host says of its process right now."""

    record: RunRecord
    pid: int
    alive: bool
    rss_kb: int = 0
    cpu_ticks: int = 0  # utime + stime
    sampled_at: float = 0.0  # host uptime (s) when read
    started_at: float = 0.0  # host uptime (s) when the process started


def qmp_socket_path(run_dir: str, deploy_id: str) -> str:
    """`<run>/<deploy_id>.qmp`, or a short path in /tmp when that is too long for a
    unix socket (deep data directories)."""
    path = f"{run_dir}/{deploy_id}.qmp"
    if len(path.encode()) <= _UNIX_PATH_MAX:
        return path
    digest = hashlib.sha256(path.encode()).hexdigest()[:20]
    return f"{_SHORT_SOCKET_DIR}/{digest}.qmp"


async def write_record(access: HostAccess, run_dir: str, record: RunRecord) -> None:
    await access.write_file(f"{run_dir}/{record.deploy_id}.json", record.to_json())


async def remove_run_files(access: HostAccess, run_dir: str, record: RunRecord) -> None:
    base = f"{run_dir}/{record.deploy_id}"
    files = [f"{base}.json", f"{base}.pid", f"{base}.qmp", record.qmp]
    await access.run(["rm", "-f", "--", *files], timeout=_QUICK)


# Prints the clock, then per run file a header line and the record on one line.
_LIST_SCRIPT = r"""
cd {run} 2>/dev/null || exit 0
echo "@clock $(getconf CLK_TCK) $(cut -d' ' -f1 /proc/uptime)"
for f in *.json; do
  [ -e "$f" ] || continue
  id=${{f%.json}}
  pid=$(cat "$id.pid" 2>/dev/null || echo 0)
  case "$pid" in ''|*[!0-9]*) pid=0;; esac
  line="@run $id $pid 0"
  if [ "$pid" -gt 0 ] && tr '\0' '\n' < /proc/$pid/cmdline 2>/dev/null | grep -qF -- "/$id.pid"
  then
    stat=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f12,13,20)
    rss=$(awk '/^VmRSS:/ {{print $2}}' /proc/$pid/status)
    line="@run $id $pid 1 ${{rss:-0}} $stat"
  fi
  echo "$line"
  tr -d '\n' < "$f"; echo
done
"""


async def list_records(access: HostAccess, run_dir: str) -> list[LiveRecord]:
    """Every instance of this host entry with its process's state; unreadable run files
    (a crash while one was written) are skipped."""
    result = await access.sh(_LIST_SCRIPT.format(run=shlex.quote(run_dir)), timeout=_QUICK)
    lines = result.text.splitlines()
    clk_tck, uptime = 100.0, 0.0
    found: list[LiveRecord] = []
    for i, line in enumerate(lines):
        fields = line.split()
        if fields[:1] == ["@clock"] and len(fields) == 3:
            clk_tck, uptime = float(fields[1]), float(fields[2])
        elif fields[:1] == ["@run"] and i + 1 < len(lines):
            try:
                record = RunRecord.from_json(lines[i + 1])
            except (ValueError, KeyError, TypeError):
                continue
            found.append(_live(record, fields, clk_tck, uptime))
    return found


def _live(record: RunRecord, fields: list[str], clk_tck: float, uptime: float) -> LiveRecord:
    pid, alive = int(fields[2]), fields[3] == "1"
    if not alive or len(fields) < 8:
        return LiveRecord(record, pid, False)
    utime, stime, start = int(fields[5]), int(fields[6]), int(fields[7])
    return LiveRecord(
        record,
        pid,
        True,
        rss_kb=int(fields[4]),
        cpu_ticks=round((utime + stime) * 100 / clk_tck),  # in 1/100 s whatever CLK_TCK
        sampled_at=uptime,
        started_at=start / clk_tck,
    )


class CpuMeter:
    """Physical CPUs an instance used since it was last sampled (over its life at first)."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, str, int], tuple[int, float]] = {}

    def usage(self, host_id: int, live: LiveRecord) -> float:
        if live.sampled_at <= 0:
            return 0.0  # not measured (a record made by this driver, not read from the host)
        key = (host_id, live.record.deploy_id, live.pid)
        previous = self._last.get(key, (0, live.started_at))
        self._last[key] = (live.cpu_ticks, live.sampled_at)
        elapsed = live.sampled_at - previous[1]
        if elapsed <= 0:
            return 0.0
        return round(max(0.0, (live.cpu_ticks - previous[0]) / 100 / elapsed), 3)

    def forget(self, host_id: int, keep: set[str]) -> None:
        """Drop samples of this host's instances that are gone."""
        for key in [k for k in self._last if k[0] == host_id and k[1] not in keep]:
            del self._last[key]


# A 512-byte boot sector: mov al,1; out 0xf4,al; hlt; jmp $-1 -- then the 0x55AA mark.
# Run under each accelerator with isa-debug-exit, QEMU exits with DEBUG_EXIT_CODE at once.
_ACCEL_SCRIPT = r"""
d=$(mktemp -d) || exit 1
trap 'rm -rf "$d"' EXIT
{{ printf '\260\001\346\364\364\353\375'; head -c 503 /dev/zero; printf '\125\252'; }} > "$d/b"
echo "@version $({qemu} --version | head -n 1)"
for accel in {accels}; do
  if [ "$accel" = kvm ] && [ ! -w /dev/kvm ]; then echo "@accel kvm 255 0"; continue; fi
  s=$(date +%s%N)
  timeout -s KILL {limit} {qemu} -accel $accel -machine pc -m 32 -nodefaults -no-user-config \
    -display none -drive file="$d/b",format=raw,if=ide \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 >/dev/null 2>&1
  rc=$?
  e=$(date +%s%N)
  echo "@accel $accel $rc $(( (e - s) / 1000000 ))"
done
"""


@dataclass(frozen=True)
class AccelInfo:
    accel: str  # kvm or tcg
    version: str  # QEMU's version line
    detail: str  # why: the probe's measurements


class AccelProber:
    """KVM when /dev/kvm is there AND runs a guest at least about as fast as emulation
    (under nested virtualisation it may exist but crawl: guests then hang); else TCG.
    Probed once per machine (host entries on one machine share it; concurrent callers
    wait for one probe), again after `ttl` seconds."""

    def __init__(self, ttl: float = 600.0, limit: float = 5.0) -> None:
        self.ttl = ttl
        self.limit = limit
        self._cache: dict[tuple[str, str | None], tuple[float, AccelInfo]] = {}
        self._locks: dict[tuple[str, str | None], asyncio.Lock] = {}

    async def get(self, access: HostAccess, forced: str | None = None) -> AccelInfo:
        key = (access.where, forced)
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached and time.monotonic() - cached[0] < self.ttl:
                return cached[1]
            info = await self._probe(access, forced)
            self._cache[key] = (time.monotonic(), info)
            return info

    async def _probe(self, access: HostAccess, forced: str | None) -> AccelInfo:
        accels = "" if forced else "tcg kvm"  # forced: only QEMU's version is wanted
        script = _ACCEL_SCRIPT.format(qemu=QEMU_BINARY, limit=f"{self.limit:g}", accels=accels)
        result = await access.sh(script, timeout=2 * self.limit + 20, check=False)
        version, runs = "", {}
        for line in result.text.splitlines():
            tag, _, rest = line.partition(" ")
            if tag == "@version":
                version = rest.strip()
            elif tag == "@accel" and len(rest.split()) == 3:
                name, rc, ms = rest.split()
                runs[name] = (int(rc), int(ms))
        if not version.startswith("QEMU"):
            raise DriverError(
                f"{QEMU_BINARY} does not run on {access.where}",
                hint="install qemu-system-x86 on the host",
            )
        return choose_accel(runs, forced, version)


def choose_accel(runs: dict[str, tuple[int, int]], forced: str | None, version: str) -> AccelInfo:
    detail = ", ".join(f"{name}: exit {rc} in {ms} ms" for name, (rc, ms) in sorted(runs.items()))
    if forced in ("kvm", "tcg"):
        return AccelInfo(forced, version, f"forced by the host's accel option ({detail})")
    tcg_rc, tcg_ms = runs.get("tcg", (255, 0))
    kvm_rc, kvm_ms = runs.get("kvm", (255, 0))
    if tcg_rc != DEBUG_EXIT_CODE and kvm_rc != DEBUG_EXIT_CODE:
        raise DriverError(f"QEMU could not run a test guest ({detail})")
    fast_enough = kvm_ms <= max(1000, 3 * tcg_ms)
    if kvm_rc == DEBUG_EXIT_CODE and (fast_enough or tcg_rc != DEBUG_EXIT_CODE):
        return AccelInfo("kvm", version, detail)
    return AccelInfo("tcg", version, detail)
