"""Dependencies injected into routes (`Annotated` aliases), validated parameters, shared reads."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Concatenate, ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, Path, Query, Request

from stratus.api.schemas import MAX_ID, NAME_PATTERN
from stratus.engine.core import Engine
from stratus.model.records import Event
from stratus.store import Store

__all__ = [
    "RECENT_EVENTS",
    "After",
    "EngineDep",
    "HostRef",
    "Limit",
    "ReaderDep",
    "StoreDep",
    "StoreReader",
    "VmId",
    "host_ref",
    "recent_events",
]

P = ParamSpec("P")
T = TypeVar("T")

RECENT_EVENTS = 50  # state changes shown with a VM or a host


class StoreReader:
    """Runs big store reads (pages, and the views built from them) off the event loop.

    Point reads (one VM, one host, a token: a few indexed queries, about 1 ms) run on
    the loop instead: handing them to threads costs more in GIL hand-offs than it saves,
    and measured p99 latency under 50 concurrent clients (2,000 VMs) went from ~50 ms to
    ~20 ms (docs/benchmarks.md has the 20,000-VM figures).
    A few threads, not Starlette's forty, for the same reason.
    """

    def __init__(self, store: Store, threads: int) -> None:
        self.store = store
        self._limiter = CapacityLimiter(threads)

    async def run(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(store, *args, **kwargs)` in a worker thread."""
        call = partial(fn, self.store, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _store(request: Request) -> Store:
    engine: Engine = request.app.state.engine
    return engine.store


async def _reader(request: Request) -> StoreReader:
    reader: StoreReader = request.app.state.reader
    return reader


EngineDep = Annotated[Engine, Depends(_engine)]
StoreDep = Annotated[Store, Depends(_store)]  # for point reads only (see StoreReader)
ReaderDep = Annotated[StoreReader, Depends(_reader)]

VmId = Annotated[int, Path(ge=1, le=MAX_ID, description="VM id")]
HostRef = Annotated[str, Path(pattern=NAME_PATTERN, description="host id or name")]
Limit = Annotated[int, Query(ge=1, le=50_000, description="page size")]
After = Annotated[
    int | None, Query(ge=0, le=MAX_ID, description="return items with a larger id (paging)")
]


def host_ref(ref: str) -> int | str:
    """A host reference as the store reads it: digits are an id, anything else a name."""
    # Ids beyond MAX_ID cannot exist; keep them a string so the store reports "not found".
    return int(ref) if ref.isdigit() and int(ref) <= MAX_ID else ref


def recent_events(store: Store, object_type: str, object_id: int) -> list[Event]:
    """The last RECENT_EVENTS events of one object, oldest first."""
    return store.events(
        object_type=object_type, object_id=object_id, limit=RECENT_EVENTS, newest=True
    )
