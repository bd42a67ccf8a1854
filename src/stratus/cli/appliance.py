"""`stratus appliance build`: build the test appliance on this machine (no daemon needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stratus.cli.output import print_json, stderr, stdout

__all__ = ["appliance_app"]

appliance_app = typer.Typer(
    help="Build the test appliance (a tiny Linux VM and container image).", no_args_is_help=True
)


@appliance_app.command("build")
def build(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="output directory [default: $STRATUS_APPLIANCE_DIR, else .tools/appliance "
            "in a source checkout, else ~/.cache/stratus/appliance]",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even when up to date")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Build appliance.qcow2, vmlinuz, initrd.img and rootfs.tar.gz from Debian packages.

    Runs locally, in seconds; a second run with the same inputs does nothing. The guest
    reads the Stratus context, configures its NICs and answers GET / on port 80 with JSON.
    """
    # imported here: building pulls in nothing the other commands need
    from stratus.appliance import build_appliance, default_appliance_dir
    from stratus.appliance.build import summary

    directory = out or default_appliance_dir()
    appliance = build_appliance(
        directory, force=force, progress=lambda line: stderr.print(f"[dim]{line}[/dim]")
    )
    if as_json:
        print_json(json.loads(appliance.manifest.read_text()))
        return
    for line in summary(appliance):
        stdout.print(line)
