"""Disk staging: a VM disk as a qcow2 clone (transfer.prepare_disks) versus a full copy.

    python bench/bench_clone.py [--runs 3] [--big-gib 10] [--dir /var/tmp]

Makes a sparse raw image of --big-gib GiB (1 GiB of it written, so a copy has real data
to move) and a 10 MiB one, then times, as a mean of --runs runs:

    clone 10 MiB   prepare_disks: qemu-img create -b (a qcow2 header, whatever the size)
    clone 10 GiB   the same from the big image
    cp 10 GiB      cp --sparse=always of the big image (what a full copy costs at best)
    convert 10 GiB qemu-img convert -O qcow2 of the big image

Prints a table, then one JSON line with the means in seconds. Everything lives in a
temporary folder under --dir, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from stratus.drivers.access import LocalAccess
from stratus.drivers.base import DiskSpec
from stratus.drivers.transfer import prepare_disks

MIB = 1024 * 1024
GIB = 1024 * MIB


def _make_image(path: Path, size: int, written: int) -> None:
    """A sparse raw image of `size` bytes whose first `written` bytes hold data."""
    with path.open("wb") as f:
        f.truncate(size)
        block = bytes(range(256)) * (MIB // 256)
        for _ in range(written // MIB):
            f.write(block)


def _clone(image: Path, vm_dir: Path) -> None:
    disk = DiskSpec(0, 1, image.name, str(image), "raw", "OS", persistent=False)
    asyncio.run(prepare_disks(LocalAccess(), str(vm_dir.parent), str(vm_dir), [disk]))


def _mean(action: Callable[[int], object], runs: int) -> float:
    times = []
    for run in range(runs):
        started = time.perf_counter()
        action(run)
        times.append(time.perf_counter() - started)
    return statistics.mean(times)


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, timeout=1800, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement")
    parser.add_argument("--big-gib", type=int, default=10, help="size of the big image")
    parser.add_argument("--written-mib", type=int, default=1024, help="data in the big image")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to work")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-clone-", dir=args.dir))
    try:
        small, big = work / "small.raw", work / "big.raw"
        _make_image(small, 10 * MIB, 10 * MIB)
        _make_image(big, args.big_gib * GIB, min(args.written_mib * MIB, args.big_gib * GIB))
        copies = work / "copies"
        copies.mkdir()

        def fresh(name: str) -> Path:
            target = copies / name
            target.unlink(missing_ok=True)
            return target

        big_name = f"{args.big_gib} GiB"
        figures = {
            "clone 10 MiB": _mean(lambda r: _clone(small, work / "ds" / f"1{r}"), args.runs),
            f"clone {big_name}": _mean(lambda r: _clone(big, work / "ds" / f"2{r}"), args.runs),
            f"cp {big_name}": _mean(
                lambda r: _run(["cp", "--sparse=always", str(big), str(fresh("cp.raw"))]),
                args.runs,
            ),
            f"convert {big_name}": _mean(
                lambda r: _run(
                    ["qemu-img", "convert", "-O", "qcow2", str(big), str(fresh("c.qcow2"))]
                ),
                args.runs,
            ),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'operation':<20} {'mean (s)':>10}   ({args.runs} runs)")
    for name, seconds in figures.items():
        print(f"{name:<20} {seconds:>10.4f}")
    print(json.dumps({"runs": args.runs, **{k: round(v, 4) for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
