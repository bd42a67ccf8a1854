"""CLI tests run `stratus` in-process (Typer's CliRunner) against a live API server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import CliRunner, Result

from stratus.cli.main import app
from tests.api.conftest import LiveServer, engine_config, live_server  # noqa: F401 (fixtures)

Stratus = Callable[..., Result]


@pytest.fixture
def stratus(live_server: LiveServer) -> Stratus:  # noqa: F811 (the imported fixture)
    """Run `stratus ARGS...` with STRATUS_URL/STRATUS_TOKEN pointing at the live server."""
    env = {"STRATUS_URL": live_server.url, "STRATUS_TOKEN": live_server.token}

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(app, list(args), input=input, env=env)

    return run
