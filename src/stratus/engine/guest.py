"""Per-VM guest tokens: what a guest presents to report READY, without a table.

A VM's token is an HMAC of its id under a secret kept in the data dir (mode 0600), so it
can be checked without storing anything and it means nothing for another VM or daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["GuestTokens"]

SECRET_FILE = "guest.secret"


class GuestTokens:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / SECRET_FILE
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            if not self._path.exists():
                self._path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:  # another process made it first
                    pass
                else:
                    with os.fdopen(fd, "w") as f:
                        f.write(secrets.token_hex(32) + "\n")
            self._secret = bytes.fromhex(self._path.read_text().strip())
        return self._secret

    def token_for(self, vm_id: int) -> str:
        return hmac.new(self._key(), f"vm:{vm_id}".encode(), hashlib.sha256).hexdigest()

    def verify(self, vm_id: int, token: str) -> bool:
        return hmac.compare_digest(self.token_for(vm_id), token)
