"""`python -m stratus.appliance [--out DIR] [--force] [--json]`: `stratus appliance build`
without the CLI's dependencies, for Makefiles and CI scripts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stratus.appliance.build import build_appliance, default_appliance_dir, summary
from stratus.model.errors import StratusError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stratus.appliance", description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--json", action="store_true", help="print the manifest")
    args = parser.parse_args(argv)
    out = args.out or default_appliance_dir()
    try:
        appliance = build_appliance(
            out, force=args.force, progress=lambda line: print(line, file=sys.stderr)
        )
    except StratusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(json.loads(appliance.manifest.read_text()), indent=2))
    else:
        print("\n".join(summary(appliance)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
