"""Key files in the data dir: created once (mode 0600, race-safe), read afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["read_or_create_key"]


def read_or_create_key(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content (stripped); first `make()` it into a new 0600 file if missing.

    The key is written whole to a private temporary file, then hard-linked to `path`,
    which fails if the name exists: two threads or processes starting together agree on
    one key, and neither can read a file the other has created but not yet written.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(make() + b"\n")
            # when another thread or process made it first, theirs is the key
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return path.read_bytes().strip()
