"""The store bench runs end to end and prints its figures (tiny sizes: a smoke test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_store.py"


def test_store_bench_prints_its_figures_for_each_database(empty_database_url: str) -> None:
    args = [sys.executable, str(BENCH), "--vms", "300", "--changes", "120", "--batch", "50"]
    if empty_database_url.startswith("postgresql"):
        args += ["--pg-url", empty_database_url, "--skip-sqlite"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for figure in ("create_vms", "list_vms    300 VMs", "pending_vms", "all_hosts", "changes/s"):
        assert figure in done.stdout, done.stdout
    kind = "postgresql" if empty_database_url.startswith("postgresql") else "sqlite"
    assert all(line.startswith(kind) for line in done.stdout.splitlines())
