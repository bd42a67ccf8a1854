"""Bearer-token authentication: a token is valid when the store knows its SHA-256."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stratus.model.errors import AuthError
from stratus.store import Store

__all__ = ["TokenVerifier", "bearer", "require_token", "sha256_hex"]

bearer = HTTPBearer(
    auto_error=False,
    description="An API token; `stratus serve` writes the admin one to <data dir>/admin.token",
)


def sha256_hex(token: str) -> str:
    """The form in which the store keeps a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenVerifier:
    """Checks token hashes against the store, remembering valid ones for `ttl` seconds.

    Only the SHA-256 of a token is kept or looked up, so the lookup's timing says
    nothing useful about any token; revoked tokens stop working within `ttl`.
    """

    def __init__(self, *, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._valid_until: dict[str, float] = {}

    def cached(self, token_hash: str) -> bool:
        """True when the token was found valid less than `ttl` seconds ago."""
        return self._valid_until.get(token_hash, 0.0) > self._clock()

    def lookup(self, store: Store, token_hash: str) -> bool:
        """Ask the store (blocking); remember a positive answer."""
        if not store.token_exists(token_hash):
            return False
        self._valid_until[token_hash] = self._clock() + self._ttl
        return True


def _auth_error(message: str) -> AuthError:
    return AuthError(
        message,
        hint="send 'Authorization: Bearer <token>'; the CLI reads STRATUS_TOKEN "
        "or <data dir>/admin.token",
    )


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Dependency of every authenticated route: 401 unless the bearer token is valid."""
    if credentials is None or not credentials.credentials:
        raise _auth_error("missing bearer token")
    verifier: TokenVerifier = request.app.state.token_verifier
    token_hash = sha256_hex(credentials.credentials)
    if verifier.cached(token_hash):
        return
    # One indexed query, once per token and TTL: run on the loop (see StoreReader).
    if not verifier.lookup(request.app.state.engine.store, token_hash):
        raise _auth_error("invalid bearer token")
