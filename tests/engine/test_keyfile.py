"""Key files: threads racing to create one all get the same, complete key."""

from __future__ import annotations

import secrets
import stat
import threading
from pathlib import Path

from stratus.engine.keyfile import read_or_create_key


def _race(path: Path, seen: list[bytes], start: threading.Barrier) -> None:
    start.wait()
    seen.append(read_or_create_key(path, lambda: secrets.token_hex(32).encode()))


def test_threads_racing_to_create_a_key_all_read_the_same_whole_key(tmp_path: Path) -> None:
    for attempt in range(20):
        path = tmp_path / f"k{attempt}.secret"
        start = threading.Barrier(8)
        seen: list[bytes] = []
        threads = [threading.Thread(target=_race, args=(path, seen, start)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(seen)) == 1 and len(seen[0]) == 64  # never empty, never two keys
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"k{i}.secret" for i in range(20))
