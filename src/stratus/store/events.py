"""The event log: the one writer of state-change rows, and its paged reader."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, select

from stratus.model.records import Event
from stratus.store.tables import events

__all__ = ["StateChange", "read_events", "write_events"]


class StateChange(NamedTuple):
    """One event to write: an object went from one state to another, and why."""

    object_type: str  # "vm" or "host"
    object_id: int
    from_state: str  # "" when the object was just created
    to_state: str
    reason: str


def write_events(conn: Connection, changes: Sequence[StateChange], time: datetime) -> None:
    """Append one event row per change, in the caller's transaction (one executemany)."""
    if not changes:
        return
    conn.execute(events.insert(), [{**change._asdict(), "time": time} for change in changes])


def read_events(
    conn: Connection,
    *,
    object_type: str | None = None,
    object_id: int | None = None,
    limit: int = 100,
    after_id: int = 0,
    newest: bool = False,
) -> list[Event]:
    """Events in id order, after `after_id`, optionally of one object type or one object.

    `newest` gives the last `limit` events instead of the first (still oldest first).
    """
    order = events.c.id.desc() if newest else events.c.id
    stmt = select(events).where(events.c.id > after_id).order_by(order).limit(limit)
    if object_type is not None:
        stmt = stmt.where(events.c.object_type == object_type)
    if object_id is not None:
        stmt = stmt.where(events.c.object_id == object_id)
    found = [
        Event(
            id=row.id,
            object_type=row.object_type,
            object_id=row.object_id,
            from_state=row.from_state,
            to_state=row.to_state,
            reason=row.reason,
            time=row.time,
        )
        for row in conn.execute(stmt)
    ]
    return found[::-1] if newest else found
