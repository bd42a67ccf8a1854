"""QMP-level steps on one running QEMU instance: status, start, save, migrate, kill.

QEMU serves one QMP client at a time (a second one waits until the first leaves), so
every step holds its session briefly and long waits poll in short sessions: a host probe
running meanwhile gets its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from typing import Any

from stratus.drivers.access import HostAccess
from stratus.drivers.base import InstanceState
from stratus.drivers.qemu_argv import usernet_forwards
from stratus.drivers.qmp import qmp_session
from stratus.model.errors import DriverError, DriverTimeout

__all__ = [
    "STATE_OF_STATUS",
    "is_alive",
    "kill_instance",
    "query_status",
    "read_forwards",
    "save_state",
    "start_migration",
    "start_when_loaded",
    "wait_gone",
    "wait_migration",
]

_POLL = 0.25
_SESSION_TIMEOUT = 10.0
_NO_LIMIT = 1 << 40  # bytes/s: QEMU's default (32 MiB/s) would make saves crawl
_PAUSED = {
    "paused", "postmigrate", "prelaunch", "inmigrate", "finish-migrate", "suspended",
    "save-vm", "restore-vm", "debug", "colo", "watchdog",
}  # fmt: skip
_FAILED = {"internal-error", "io-error", "guest-panicked"}

#: QEMU run states (query-status) -> instance states
STATE_OF_STATUS: dict[str, InstanceState] = {
    "running": InstanceState.RUNNING,
    "shutdown": InstanceState.OFF,
    **dict.fromkeys(_PAUSED, InstanceState.PAUSED),
    **dict.fromkeys(_FAILED, InstanceState.ERROR),
}


async def query_status(access: HostAccess, qmp: str, timeout: float = _SESSION_TIMEOUT) -> str:
    """QEMU's run state: running, paused, postmigrate, inmigrate, shutdown..."""
    async with qmp_session(access, qmp, timeout) as client:
        answer = await client.execute("query-status", timeout=timeout)
    return str(answer.get("status", ""))


async def read_forwards(access: HostAccess, qmp: str) -> dict[str, str]:
    """The user-network forwards QEMU set up: guest port -> "127.0.0.1:<host port>"
    (first NIC first when two forward the same guest port)."""
    async with qmp_session(access, qmp) as client:
        text = await client.execute(
            "human-monitor-command", {"command-line": "info usernet"}, timeout=_SESSION_TIMEOUT
        )
    ports: dict[str, str] = {}
    for _, forwards in sorted(usernet_forwards(str(text)).items()):
        for guest, host in sorted(forwards.items()):
            ports.setdefault(str(guest), f"127.0.0.1:{host}")
    return ports


async def start_when_loaded(access: HostAccess, qmp: str, timeout: float) -> None:
    """Wait until an incoming state is loaded, then make sure the guest runs (a state
    saved from a stopped guest comes back paused)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (status := await query_status(access, qmp)) != "running":
        if status in _FAILED or status == "shutdown":
            raise DriverError(f"the restored instance stopped in state {status!r}")
        if loop.time() > deadline:
            raise DriverTimeout(f"the restored instance is still {status} after {timeout:g} s")
        if status == "inmigrate":
            await asyncio.sleep(_POLL)
            continue
        async with qmp_session(access, qmp) as client:
            await client.execute("cont")


async def wait_migration(access: HostAccess, qmp: str, timeout: float) -> dict[str, Any]:
    """Poll query-migrate on the sending QEMU until the migration completes; DriverError
    (after migrate_cancel) when it fails or outlives `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with qmp_session(access, qmp) as client:
            info = await client.execute("query-migrate") or {}
            status = info.get("status")
            if status == "completed":
                return dict(info)
            failed = status in ("failed", "cancelled")
            if failed or loop.time() > deadline:
                await client.execute("migrate_cancel")
                why = info.get("error-desc") or status if failed else f"over {timeout:g} s"
                raise DriverError(f"the migration failed ({why}); the instance was not moved")
        await asyncio.sleep(_POLL)


async def start_migration(access: HostAccess, qmp: str, uri: str, stop_first: bool) -> None:
    """Start sending the instance's state to `uri` (exec:... or tcp:...), at full speed."""
    async with qmp_session(access, qmp) as client:
        if stop_first:
            await client.execute("stop")
        await client.execute("migrate-set-parameters", {"max-bandwidth": _NO_LIMIT})
        await client.execute("migrate", {"uri": uri})


async def save_state(access: HostAccess, qmp: str, state_file: str, timeout: float) -> None:
    """Stop the guest and write its state to `state_file` (complete or not at all); the
    QEMU process stays, paused, for the caller to end. On failure the guest runs again."""
    partial = f"{state_file}.tmp"
    await start_migration(access, qmp, f"exec:cat > {shlex.quote(partial)}", stop_first=True)
    try:
        await wait_migration(access, qmp, timeout)
    except DriverError:
        async with qmp_session(access, qmp) as client:
            await client.execute("cont")
        await access.run(["rm", "-f", partial], check=False)
        raise
    await access.run(["mv", "-f", partial, state_file])


async def is_alive(access: HostAccess, pid: int, deploy_id: str) -> bool:
    """The process is there and is this instance's QEMU (not a reused pid, not a zombie)."""
    if pid <= 0:
        return False
    script = f"tr '\\0' '\\n' < /proc/{pid}/cmdline 2>/dev/null | grep -qF -- {_arg(deploy_id)}"
    return (await access.sh(script, timeout=_SESSION_TIMEOUT, check=False)).returncode == 0


async def wait_gone(access: HostAccess, pid: int, deploy_id: str, timeout: float) -> bool:
    """Wait until the instance's process has exited; False if it still runs at the end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await is_alive(access, pid, deploy_id):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


async def kill_instance(access: HostAccess, qmp: str, pid: int, deploy_id: str) -> None:
    """End the QEMU process: QMP quit, then SIGKILL when it does not go."""
    if not await is_alive(access, pid, deploy_id):
        return
    with contextlib.suppress(DriverError):  # no QMP (hung, socket gone): SIGKILL ends it
        async with qmp_session(access, qmp, timeout=3.0) as client:
            await client.quit(timeout=3.0)
    if await wait_gone(access, pid, deploy_id, 5.0):
        return
    if await is_alive(access, pid, deploy_id):
        await access.run(["kill", "-9", str(pid)], check=False)
    if not await wait_gone(access, pid, deploy_id, 10.0):
        raise DriverError(f"QEMU process {pid} ({deploy_id}) survived SIGKILL on {access.where}")


def _arg(deploy_id: str) -> str:
    return shlex.quote(f"/{deploy_id}.pid")
