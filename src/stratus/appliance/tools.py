"""Running the build's outside tools (apt, dpkg, depmod, mke2fs, qemu-img) with deadlines."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from stratus.model.errors import DriverError, DriverTimeout

__all__ = ["find_tool", "run"]

_STDERR_TAIL = 800


def find_tool(name: str, package: str) -> str:
    """The path of a program (sbin included); DriverError naming the package when missing."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise DriverError(
            f"{name} is not installed, and the appliance build needs it",
            hint=f"install the Debian package {package} (apt-get install {package})",
        )
    return path


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run argv without a shell; its stdout, or DriverError with the tail of its stderr."""
    args = [str(a) for a in argv]
    name = Path(args[0]).name
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DriverTimeout(
            f"{name} did not finish within {timeout:g} s: {' '.join(args)}"
        ) from exc
    except FileNotFoundError as exc:
        raise DriverError(f"{name} is not installed") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
        raise DriverError(f"{' '.join(args)} failed (exit {done.returncode}): {tail}")
    return done.stdout.decode(errors="replace")
