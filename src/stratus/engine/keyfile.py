"""Key files in the data dir: created once (mode 0600, race-safe), read afterwards."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["read_or_create_key"]


def read_or_create_key(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content (stripped); first `make()` it into a new 0600 file if missing.

    O_EXCL makes two processes starting together agree on one key: the loser reads the
    winner's file.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(make() + b"\n")
    return path.read_bytes().strip()
