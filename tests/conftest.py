"""Shared fixtures: a real SQLite file and a real PostgreSQL server for the whole session.

`store` runs a test once on each database; `sqlite_store` when SQLite alone will do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratus.store import Store, open_store
from tests.pg import MISSING_HINT, PostgresServer, find_pg_bin

_TEMPLATE_DB = "stratus_template"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster, stopped and deleted at the end of the session."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL binaries not found: {MISSING_HINT}")
        pytest.skip(f"PostgreSQL binaries not found: {MISSING_HINT}")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a database ("stratus") on the session's PostgreSQL server."""
    return postgres_server.create_database("stratus")


@pytest.fixture(scope="session")
def _migrated_postgres_template(postgres_server: PostgresServer) -> str:
    """A migrated database that each test copies: faster than migrating every time."""
    open_store(postgres_server.create_database(_TEMPLATE_DB)).close()
    return _TEMPLATE_DB


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database (no schema yet), on each database kind."""
    if request.param == "sqlite":
        yield str(tmp_path / "stratus.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, migrated Store, once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        with open_store(str(tmp_path / "stratus.db")) as fresh:
            yield fresh
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("_migrated_postgres_template")
    url = server.create_database(template=template)
    try:
        with open_store(url) as fresh:
            yield fresh
    finally:
        server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh, migrated Store on a SQLite file."""
    with open_store(str(tmp_path / "stratus.db")) as fresh:
        yield fresh
