"""The REST API (floor 5): FastAPI over the engine, everything under /api/v1."""

from __future__ import annotations

from stratus.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
