"""Alembic environment: runs on the connection that `stratus.store.db.upgrade` passes in.

New revisions are written by hand as `versions/NNNN_what.py` (script.py.mako is the
shape); tests/store/test_migrations.py checks that the migrated schema matches tables.py.
"""

from __future__ import annotations

from alembic import context

from stratus.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through stratus.store.open_store(url), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: later revisions rebuild tables in batch mode.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
