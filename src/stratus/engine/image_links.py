"""Signed, expiring download links to images, for partner zones that import them.

A link names the image and an expiry time, signed with an HMAC under a secret kept in
the data dir (mode 0600): whoever holds the link may download that one image until it
expires, and nothing else. No API token travels to the partner, and no table is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

from stratus.engine.keyfile import read_or_create_key
from stratus.model.errors import AuthError

__all__ = ["DEFAULT_TTL", "ImageLinks"]

SECRET_FILE = "image-links.secret"
DEFAULT_TTL = 6 * 3600.0  # seconds: a partner's import of a large image may queue a while


class ImageLinks:
    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = data_dir / SECRET_FILE
        self._clock = clock
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            made = read_or_create_key(self._path, lambda: secrets.token_hex(32).encode())
            self._secret = bytes.fromhex(made.decode())
        return self._secret

    def _signature(self, image_id: int, expires: int) -> str:
        message = f"image:{image_id}:{expires}".encode()
        return hmac.new(self._key(), message, hashlib.sha256).hexdigest()

    def url_for(self, base_url: str, image_id: int, ttl: float = DEFAULT_TTL) -> str:
        """`<base>/api/v1/images/<id>/download?expires=..&signature=..`, valid `ttl` s."""
        expires = int(self._clock() + ttl)
        query = urlencode({"expires": expires, "signature": self._signature(image_id, expires)})
        return f"{base_url.rstrip('/')}/api/v1/images/{image_id}/download?{query}"

    def verify(self, image_id: int, expires: int, signature: str) -> None:
        """AuthError unless the signature is this daemon's for that image and not expired."""
        if not hmac.compare_digest(self._signature(image_id, expires), signature):
            raise AuthError("this download link is not valid for that image")
        if expires < self._clock():
            raise AuthError(
                "this download link has expired", hint="ask the zone that made it for a new one"
            )
