"""What guests tell the engine and what the engine shows of them: READY reports (checked
with per-VM tokens) and console logs.

Per-VM guest tokens: what a guest presents to report READY, without a table.

A VM's token is an HMAC of its id under a secret kept in the data dir (mode 0600), so it
can be checked without storing anything and it means nothing for another VM or daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from pathlib import Path

from stratus.engine.drivers import DriverSet, with_deadline
from stratus.engine.keyfile import read_or_create_key
from stratus.engine.runner import DbRunner
from stratus.model.errors import AuthError, Conflict
from stratus.model.lifecycle import VmState
from stratus.model.records import Vm
from stratus.store import VmChange

__all__ = ["GuestTokens", "read_console", "report_ready"]

SECRET_FILE = "guest.secret"


class GuestTokens:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / SECRET_FILE
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            made = read_or_create_key(self._path, lambda: secrets.token_hex(32).encode())
            self._secret = bytes.fromhex(made.decode())
        return self._secret

    def token_for(self, vm_id: int) -> str:
        return hmac.new(self._key(), f"vm:{vm_id}".encode(), hashlib.sha256).hexdigest()

    def verify(self, vm_id: int, token: str) -> bool:
        return hmac.compare_digest(self.token_for(vm_id), token)


async def report_ready(db: DbRunner, tokens: GuestTokens, vm_id: int, token: str) -> Vm:
    """Record that a guest finished booting (its context script reported READY).

    AuthError for a wrong token, so a VM cannot be marked by anyone but its own guest.
    """
    if not tokens.verify(vm_id, token):
        raise AuthError("this token does not belong to that VM")
    for _ in range(5):
        vm = await db.call(db.store.get_vm, vm_id)
        if vm.state is not VmState.RUNNING:
            raise Conflict(f"VM {vm_id} is {vm.state}, not RUNNING: READY ignored")
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        change = VmChange(
            vm.id,
            vm.version,
            VmState.RUNNING,
            "guest reported READY",
            info={**vm.info, "ready": stamp},
        )
        result = (await db.call(db.store.apply, [change]))[0]
        if not isinstance(result, Conflict):
            return result
    raise Conflict(f"VM {vm_id} keeps changing", hint="report READY again")


async def read_console(
    db: DbRunner, drivers: DriverSet, vm_id: int, max_bytes: int, timeout: float
) -> bytes:
    """The tail of a VM's serial console (QEMU) or container log (LXC), from its host."""
    vm = await db.call(db.store.get_vm, vm_id)
    if vm.host_id is None:
        raise Conflict(f"VM {vm_id} is {vm.state} and on no host: it has no console log")
    if not vm.deploy_id:
        raise Conflict(f"VM {vm_id} is {vm.state} with no instance on its host: no console log")
    host = await db.call(db.store.get_host, vm.host_id)
    driver = drivers.get(host.driver)
    call = driver.console_log(drivers.host_info(host), vm.deploy_id, max_bytes)
    return await with_deadline(call, timeout, "reading the console log")
