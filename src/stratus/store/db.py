"""Engines, transactions and migrations for SQLite (embedded) and PostgreSQL (scale-out).

SQLite follows SQLAlchemy's documented pysqlite recipe: the driver's own BEGIN is disabled
and we emit `BEGIN IMMEDIATE` for writes, so two writers queue on the busy timeout instead
of deadlocking on a lock upgrade, and plain `BEGIN` for reads (WAL lets them run alongside).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from stratus.model.errors import InvalidInput, StratusError

__all__ = ["BUSY_TIMEOUT_S", "create_db_engine", "database_url", "read", "upgrade", "write"]

BUSY_TIMEOUT_S = 30
_MIGRATIONS = Path(__file__).parent / "migrations"
# Key of the PostgreSQL advisory lock that serialises migrations of concurrent servers.
_MIGRATION_LOCK = 0x5374726174  # "Strat"
_BEGIN_OPTION = "stratus_sqlite_begin"


def database_url(url: str) -> URL:
    """Parse a database URL; a plain path means a SQLite file, `postgresql://` means psycopg 3."""
    if "://" not in url:
        if url in ("", ":memory:"):
            raise InvalidInput(f"database {url!r} is not a file: give a path in the data dir")
        return URL.create("sqlite", database=str(Path(url).expanduser().resolve()))
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"cannot parse database URL {url!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise InvalidInput(f"{url!r} is an in-memory database: give sqlite:///path/to/file")
        return parsed
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidInput(
        f"unsupported database URL {url!r}: use a file path, sqlite:///path or postgresql://..."
    )


def create_db_engine(url: URL) -> Engine:
    """One pooled, thread-safe Engine for the URL (see `database_url`)."""
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=8,
            max_overflow=16,
            pool_timeout=BUSY_TIMEOUT_S,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_timeout=BUSY_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10},
    )
    event.listen(engine, "connect", _postgres_connect)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from pysqlite (SQLAlchemy's pysqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL once (it stays so). The switch needs the file to itself and
    SQLite does not wait for it with the busy timeout, so a first start racing another
    process retries for a bounded time instead."""
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _postgres_connect(dbapi_connection: Any, _record: Any) -> None:
    # A lock wait gives up like SQLite's busy timeout does, instead of hanging a loop.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = '{BUSY_TIMEOUT_S}s'")
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any error."""
    with engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def read(engine: Engine, *, snapshot: bool = False) -> Iterator[Connection]:
    """A read transaction; `snapshot` makes several queries see one consistent state."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # A deferred transaction in WAL mode already reads from one snapshot.
            conn.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
        elif snapshot:
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest schema (a no-op when it is there already)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with write(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except CommandError as exc:
        raise StratusError(
            f"cannot migrate the database schema: {exc}",
            hint="a newer Stratus may have migrated it: run that version, or restore a backup",
        ) from exc
