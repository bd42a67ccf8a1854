"""Virtual networks: create, list, delete, hold and release leases (being written)."""

from __future__ import annotations

from stratus.store import Store

__all__ = ["NetworkService"]


class NetworkService:
    def __init__(self, store: Store) -> None:
        self.store = store
