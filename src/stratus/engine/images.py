"""Images: register (import in the background), list, enable/disable, delete (being written)."""

from __future__ import annotations

from pathlib import Path

from stratus.store import Store

__all__ = ["ImageService"]


class ImageService:
    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir
