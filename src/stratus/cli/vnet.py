"""`stratus vnet ...` (being written)."""

from __future__ import annotations

import typer

__all__ = ["vnet_app"]

vnet_app = typer.Typer(
    help="Create and manage virtual networks and their leases.", no_args_is_help=True
)
