"""Host credentials sealed at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key file.

The key lives in the data dir (`secret.key`, mode 0600, made at first use), apart from
the database: a copy of the database alone, or a PostgreSQL server, never holds a usable
credential. The store only ever sees the sealed text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import orjson
from cryptography.fernet import Fernet, InvalidToken

from stratus.engine.keyfile import read_or_create_key
from stratus.model.errors import SecretsError

__all__ = ["KEY_FILE", "SecretBox"]

KEY_FILE = "secret.key"


class SecretBox:
    """Seals dicts of credentials into text and opens them again."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / KEY_FILE
        self._fernet: Fernet | None = None

    def _box(self) -> Fernet:
        if self._fernet is None:
            try:
                self._fernet = Fernet(read_or_create_key(self._path, Fernet.generate_key))
            except ValueError:
                raise SecretsError(
                    f"the credentials key {self._path} is not a valid key",
                    hint="restore the data dir's original secret.key from a backup",
                ) from None
        return self._fernet

    def seal(self, secrets: Mapping[str, str]) -> str:
        """The sealed text of `secrets`; "" for none, so a host without them stores nothing."""
        if not secrets:
            return ""
        return self._box().encrypt(orjson.dumps(dict(secrets))).decode("ascii")

    def open(self, sealed: str, owner: str) -> dict[str, str]:
        """The credentials in `sealed`; SecretsError naming `owner` (e.g. "host aws") if it
        cannot be opened. The error carries no part of the sealed text or the key."""
        if not sealed:
            return {}
        try:
            opened = orjson.loads(self._box().decrypt(sealed.encode("ascii")))
        except (InvalidToken, UnicodeEncodeError, orjson.JSONDecodeError):
            opened = None
        if not isinstance(opened, dict):
            raise SecretsError(
                f"the credentials of {owner} cannot be decrypted with {self._path} "
                "(the key changed, or the stored text is corrupt)",
                hint="restore the original secret.key, or give the credentials again with "
                "`stratus host credentials`",
            )
        return {str(key): str(value) for key, value in opened.items()}
