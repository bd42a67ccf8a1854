"""What every action handler gets: the caller, the engine, the store in threads, DryRun."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from sqlalchemy import Connection

from stratus.ec2api.config import Ec2ApiConfig
from stratus.ec2api.protocol import Ec2Error
from stratus.ec2api.users import Caller
from stratus.engine.core import Engine
from stratus.store import db as store_db

__all__ = ["Ec2Context", "Handler", "UserLocks"]

P = ParamSpec("P")
T = TypeVar("T")


class UserLocks:
    """One asyncio lock per user, for what must not run twice at once for one user."""

    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}

    def get(self, user_id: int) -> asyncio.Lock:
        return self._locks.setdefault(user_id, asyncio.Lock())


class Ec2Context:
    """One request: who asks, and the means to answer (store reads and writes in threads)."""

    def __init__(
        self,
        *,
        engine: Engine,
        config: Ec2ApiConfig,
        caller: Caller,
        request_id: str,
        dry_run: bool,
        endpoint: str,
        limiter: CapacityLimiter,
        locks: UserLocks,
    ) -> None:
        self.engine = engine
        self.config = config
        self.caller = caller
        self.request_id = request_id
        self.dry_run = dry_run
        self.endpoint = endpoint  # the URL clients reach this API at
        self._limiter = limiter
        self._locks = locks

    @property
    def user_id(self) -> int:
        return self.caller.user_id

    @property
    def owner_id(self) -> str:
        return self.caller.owner_id

    def user_lock(self) -> asyncio.Lock:
        """The caller's lock: their RunInstances calls run one at a time."""
        return self._locks.get(self.caller.user_id)

    def commit(self) -> None:
        """Call once the request is checked, before it changes or reads anything: with
        DryRun it ends here with DryRunOperation (HTTP 412), as EC2 does."""
        if self.dry_run:
            raise Ec2Error(
                "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412
            )

    def now(self) -> datetime:
        return datetime.now(UTC)

    def visible_since(self) -> datetime:
        """Terminated instances that ended before this are no longer described."""
        return self.now() - timedelta(seconds=self.config.terminated_visible)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker thread (store work, big answers)."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(conn, ...)` in a read transaction, in a worker thread."""

        def call() -> T:
            with store_db.read(self.engine.store.engine, snapshot=True) as conn:
                return fn(conn, *args, **kwargs)

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(conn, ...)` in a write transaction (committed when it returns), in a thread."""

        def call() -> T:
            with store_db.write(self.engine.store.engine) as conn:
                return fn(conn, *args, **kwargs)

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)


Handler = Callable[[Ec2Context, Any], Any]  # (context, Params) -> awaitable answer body
