"""Opening a store creates the schema through Alembic, and opening it again changes nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from stratus.model.errors import InvalidInput, StratusError
from stratus.store import open_store
from stratus.store.db import database_url
from stratus.store.tables import metadata
from tests.store.helpers import add_host

TABLES = {
    "alembic_version", "api_tokens", "events", "history", "hosts", "vms",
    "images", "image_uses", "vnets", "leases", "overlays", "overlay_peers",
    # EC2 API (issue 5)
    "users", "access_keys", "ec2_instances", "ec2_images", "ec2_keypairs",
    "ec2_security_groups", "ec2_addresses", "ec2_tags",
}  # fmt: skip


def test_opening_an_empty_database_creates_every_table_and_index(empty_database_url: str) -> None:
    with open_store(empty_database_url) as store:
        inspector = inspect(store.engine)
        assert set(inspector.get_table_names()) == TABLES
        vm_indexes = {index["name"] for index in inspector.get_indexes("vms")}
        assert {"ix_vms_state_id", "ix_vms_state_priority", "ix_vms_host_id"} <= vm_indexes
        assert "ix_events_object" in {i["name"] for i in inspector.get_indexes("events")}
        assert "ix_history_host_id" in {i["name"] for i in inspector.get_indexes("history")}
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0006"


def test_opening_twice_keeps_the_data_and_the_schema_version(empty_database_url: str) -> None:
    with open_store(empty_database_url) as store:
        add_host(store, "kept")
    with open_store(empty_database_url) as again:
        assert again.get_host("kept").name == "kept"
        with again.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [row[0] for row in versions] == ["0006"]


def test_migrated_schema_matches_the_tables_the_code_uses(empty_database_url: str) -> None:
    with open_store(empty_database_url) as store, store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, metadata) == []


def test_sqlite_store_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'data' / 'stratus.db'}") as store:
        assert store.dialect == "sqlite"
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_plain_path_and_sqlite_url_open_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "same.db"
    with open_store(str(path)) as store:
        add_host(store, "one")
    with open_store(f"sqlite:///{path}") as store:
        assert [host.name for host in store.list_hosts()] == ["one"]


def test_postgresql_url_without_driver_uses_psycopg() -> None:
    assert database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", [":memory:", "sqlite://", "mysql://u@h/db"])
def test_unusable_urls_are_refused_with_what_to_give_instead(url: str) -> None:
    with pytest.raises(InvalidInput, match=r"sqlite|path|file"):
        open_store(url)


def test_sqlite_keeps_timestamps_as_sortable_utc_text(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with open_store(str(path)) as store:
        host = add_host(store)
        assert host.created.tzinfo is UTC
    raw = create_engine(f"sqlite:///{path}")
    with raw.connect() as conn:
        stored = conn.exec_driver_sql("SELECT created FROM hosts").scalar()
    raw.dispose()
    assert stored == host.created.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_servers_starting_together_migrate_the_database_once(empty_database_url: str) -> None:
    barrier = threading.Barrier(4)

    def start() -> str:
        barrier.wait(timeout=30)
        with open_store(empty_database_url) as store:
            return store.dialect

    with ThreadPoolExecutor(4) as pool:
        assert len(set(pool.map(lambda _: start(), range(4)))) == 1
    with open_store(empty_database_url) as store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_a_schema_from_a_newer_stratus_is_refused_with_a_hint(empty_database_url: str) -> None:
    with open_store(empty_database_url) as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StratusError, match="cannot migrate") as refused:
        open_store(empty_database_url)
    assert refused.value.hint is not None and "newer Stratus" in refused.value.hint


def test_postgresql_sessions_wait_for_locks_no_longer_than_sqlite(empty_database_url: str) -> None:
    with open_store(empty_database_url) as store, store.engine.connect() as conn:
        if store.dialect != "postgresql":
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            return
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
        assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
