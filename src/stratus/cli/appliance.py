"""`stratus appliance build` (being written)."""

from __future__ import annotations

import typer

__all__ = ["appliance_app"]

appliance_app = typer.Typer(
    help="Build the test appliance (a tiny Linux VM and container image).", no_args_is_help=True
)
