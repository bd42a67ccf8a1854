"""Persistence (floor 2): SQLAlchemy Core over SQLite or PostgreSQL, migrated by Alembic.

Every record carries a version and every update is conditional on it; every state change
writes one event row in the same transaction.
"""

from __future__ import annotations

from stratus.store.changes import VmChange
from stratus.store.store import Clock, Store, open_store
from stratus.store.vms import NewVm

__all__ = ["Clock", "NewVm", "Store", "VmChange", "open_store"]
