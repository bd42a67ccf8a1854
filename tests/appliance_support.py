"""The test appliance for tests that boot real guests (QEMU VMs, LXC containers).

`ensure_appliance()` builds it once into `appliance_dir()` and returns it; later calls,
in this process or another, find the cached build. build_appliance() holds a file lock
while it checks and builds, so two test processes starting together build it once.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from stratus.appliance import Appliance, build_appliance

__all__ = ["REPO_ROOT", "appliance_dir", "ensure_appliance"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def appliance_dir() -> Path:
    """$STRATUS_APPLIANCE_DIR, else <repo>/.tools/appliance (gitignored)."""
    configured = os.environ.get("STRATUS_APPLIANCE_DIR")
    return Path(configured) if configured else REPO_ROOT / ".tools" / "appliance"


@functools.cache
def ensure_appliance() -> Appliance:
    """The built appliance: built on first use (seconds), cached across test runs."""
    return build_appliance(appliance_dir())
