"""The `stratus` command line (floor 5): Typer + Rich over the REST API, never the store."""
