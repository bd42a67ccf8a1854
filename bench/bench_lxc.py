"""LXC driver: one container's deploy time, and N containers from deploy to all answering.

    python bench/bench_lxc.py [--containers 20] [--singles 5]

Runs as root: containers of the test appliance (built on first use) in a network namespace
of the bench's own with a bridge at 192.168.150.1/24, reached only inside it. Everything is
cleaned up at the end. Prints a table, then one JSON line with the figures.

    single deploy    prepare (image cached) and deploy() of one container: median of
                     --singles, each deployed, timed, then cleaned up
    first answer     from deploy() to the container's first HTTP answer (median)
    N deploy         prepare + deploy of N containers at once (the first extracts the image)
    N all answering  from the start of the N deploys until every container answered
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lxc_support import Lab, lxc_lab


async def _singles(lab: Lab, count: int, offset: int) -> dict[str, float]:
    """Deploy one container at a time (image already cached); time prepare and deploy."""
    prepares, deploys, answers = [], [], []
    for n in range(count):
        spec = lab.spec(offset + n)
        lab.track(spec)
        started = time.perf_counter()
        await lab.driver.prepare(lab.host, spec)
        prepared = time.perf_counter()
        await lab.driver.deploy(lab.host, spec)
        deployed = time.perf_counter()
        await lab.answer(offset + n)
        prepares.append(prepared - started)
        deploys.append(deployed - prepared)
        answers.append(time.perf_counter() - deployed)
        await lab.cleanup()
    return {
        "prepare_ms": statistics.median(prepares) * 1000,
        "deploy_ms": statistics.median(deploys) * 1000,
        "first_answer_s": statistics.median(answers),
    }


async def _many(lab: Lab, count: int) -> dict[str, float]:
    started = time.perf_counter()
    await asyncio.gather(*(lab.up(lab.spec(i)) for i in range(1, count + 1)))
    deployed = time.perf_counter() - started
    answers = await asyncio.gather(*(lab.answer(i, within=60) for i in range(1, count + 1)))
    answering = time.perf_counter() - started
    for i, got in enumerate(answers, start=1):
        if got.get("name") != f"web{i}":
            raise SystemExit(f"bench: container {i} answered as {got.get('name')!r}")
    cleanup_started = time.perf_counter()
    await lab.cleanup()
    return {
        "deploy_s": deployed,
        "all_answering_s": answering,
        "cleanup_s": time.perf_counter() - cleanup_started,
    }


async def bench(containers: int, singles: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="stratus-bench-lxc-") as tmp:
        async with lxc_lab(Path(tmp)) as lab:
            many = await _many(lab, containers)
            one = await _singles(lab, singles, offset=containers + 1)
    return {"containers": containers, "singles": singles, "many": many, "single": one}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--containers", type=int, default=20, help="containers at once (<=150)")
    parser.add_argument("--singles", type=int, default=5, help="single deploys to time")
    args = parser.parse_args(argv)
    if not 1 <= args.containers <= 150 or not 1 <= args.singles <= 100:
        parser.error("--containers must be 1..150 and --singles 1..100")
    figures = asyncio.run(bench(args.containers, args.singles))
    many, one = figures["many"], figures["single"]
    assert isinstance(many, dict) and isinstance(one, dict)
    n = args.containers
    rows = [
        ("single deploy (median)", f"{one['deploy_ms']:.0f} ms"),
        ("single prepare, image cached (median)", f"{one['prepare_ms']:.0f} ms"),
        ("deploy to first HTTP answer (median)", f"{one['first_answer_s']:.2f} s"),
        (f"{n} containers: prepare + deploy", f"{many['deploy_s']:.2f} s"),
        (f"{n} containers: until all answer", f"{many['all_answering_s']:.2f} s"),
        (f"{n} containers: cleanup", f"{many['cleanup_s']:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
