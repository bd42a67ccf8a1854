"""The event log: every state change of every VM and host, paged by id."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from stratus.api.deps import After, Limit, ReaderDep
from stratus.api.errors import ERROR_RESPONSES
from stratus.api.schemas import MAX_ID, EventPage
from stratus.api.views import JsonResponse, build_items, event_view, page_view
from stratus.store import Store

__all__ = ["router"]

router = APIRouter(prefix="/events", tags=["events"], responses=ERROR_RESPONSES)


@router.get("", response_model=EventPage, summary="Read the event log")
async def list_events(
    reader: ReaderDep,
    object_type: Annotated[Literal["vm", "host"] | None, Query()] = None,
    object_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = 1000,
    after: After = None,
) -> Response:
    """Events in id order (oldest first); follow `next` to read on, or to tail the log."""
    return await reader.run(_event_page, object_type, object_id, limit, after or 0)


def _event_page(
    store: Store, object_type: str | None, object_id: int | None, limit: int, after: int
) -> Response:
    events = store.events(object_type=object_type, object_id=object_id, limit=limit, after_id=after)
    return JsonResponse(page_view(build_items(events, event_view), limit))
