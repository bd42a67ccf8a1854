"""EC2 users and access keys: made here, sealed by the engine's SecretBox, checked by SigV4.

The REST routes (`api/users.py`) manage users and keys through `UserService`; the EC2 app
asks it for the secret of the key that signed a request. Opened secrets are kept in
memory for `ttl` seconds, so a key deleted through another server stops working within
that time (at once through this one).
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from stratus.engine.secrets import SecretBox
from stratus.store import Store
from stratus.store import db as store_db
from stratus.store import users as users_mod
from stratus.store.users import AccessKey, Quota, User

__all__ = ["Caller", "NewKey", "UserService"]

_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_FIELD = "secret_access_key"


@dataclass(frozen=True)
class Caller:
    """Who signed a request."""

    user_id: int
    user_name: str
    access_key_id: str

    @property
    def owner_id(self) -> str:
        """The 12-digit account id EC2 answers show for this user."""
        return f"{self.user_id:012d}"


@dataclass(frozen=True)
class NewKey:
    """A key just made: the only time its secret is shown."""

    access_key_id: str
    secret_access_key: str
    user_name: str
    created: datetime

    def __repr__(self) -> str:  # never the secret, even in a traceback
        return f"NewKey({self.access_key_id!r}, user={self.user_name!r})"


class UserService:
    """Users and keys in the store; the opened secrets of recently used keys in memory."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        *,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._box = box
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._opened: dict[str, tuple[float, Caller, str]] = {}

    # -- users ---------------------------------------------------------------------------------
    def create_user(self, name: str, quota: Quota) -> User:
        with store_db.write(self.store.engine) as conn:
            return users_mod.insert_user(conn, datetime.now(UTC), name, quota)

    def users(self) -> list[User]:
        with store_db.read(self.store.engine) as conn:
            return users_mod.select_users(conn)

    def user(self, name: str) -> User:
        with store_db.read(self.store.engine) as conn:
            return users_mod.find_user(conn, name)

    def delete_user(self, name: str) -> None:
        with store_db.write(self.store.engine) as conn:
            user = users_mod.delete_user(conn, name)
        self._forget(lambda caller: caller.user_id == user.id)

    # -- keys ----------------------------------------------------------------------------------
    def create_key(self, user_name: str) -> NewKey:
        """A new key for the user; its secret is sealed before it reaches the store."""
        key_id = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
        secret = secrets.token_urlsafe(30)  # 40 characters
        sealed = self._box.seal({_SECRET_FIELD: secret})
        now = datetime.now(UTC)
        with store_db.write(self.store.engine) as conn:
            user = users_mod.find_user(conn, user_name)
            users_mod.insert_access_key(conn, now, user.id, key_id, sealed)
        return NewKey(key_id, secret, user_name, now)

    def keys(self, user_name: str) -> list[AccessKey]:
        with store_db.read(self.store.engine) as conn:
            user = users_mod.find_user(conn, user_name)
            return users_mod.select_access_keys(conn, user.id)

    def delete_key(self, access_key_id: str) -> None:
        with store_db.write(self.store.engine) as conn:
            users_mod.delete_access_key(conn, access_key_id)
        self._forget(lambda caller: caller.access_key_id == access_key_id)

    def _forget(self, which: Callable[[Caller], bool]) -> None:
        with self._lock:
            for key_id in [k for k, (_, c, _) in self._opened.items() if which(c)]:
                del self._opened[key_id]

    # -- the signature check ---------------------------------------------------------------------
    def secret_of(self, access_key_id: str) -> str | None:
        """The key's secret (None when there is no such key); opened at most once per ttl."""
        opened = self._opened.get(access_key_id)
        if opened is not None and opened[0] > self._clock():
            return opened[2]
        with store_db.read(self.store.engine) as conn:
            stored = users_mod.find_access_key(conn, access_key_id)
        if stored is None:
            return None
        secret = self._box.open(stored.sealed_secret, f"access key {access_key_id}")
        caller = Caller(stored.user_id, stored.user_name, access_key_id)
        with self._lock:
            self._opened[access_key_id] = (self._clock() + self._ttl, caller, secret[_SECRET_FIELD])
        return secret[_SECRET_FIELD]

    def caller(self, access_key_id: str) -> Caller | None:
        """Who owns a key `secret_of` just opened (None if it was deleted meanwhile)."""
        opened = self._opened.get(access_key_id)
        return None if opened is None else opened[1]
