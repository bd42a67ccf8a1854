"""`stratus image ...` (being written)."""

from __future__ import annotations

import typer

__all__ = ["image_app"]

image_app = typer.Typer(help="Register, inspect and manage disk images.", no_args_is_help=True)
