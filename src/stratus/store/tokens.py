"""API tokens: only their hashes are stored; the plaintext is shown once and forgotten."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, or_, select
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict, InvalidInput
from stratus.store.tables import api_tokens

__all__ = ["insert_token", "token_exists"]


def insert_token(conn: Connection, now: datetime, name: str, token_hash: str) -> None:
    """Store a token hash under a unique name; Conflict when the name or hash is taken."""
    if not name or not token_hash:
        raise InvalidInput("a token needs a name and a hash")
    taken = conn.execute(
        select(api_tokens.c.name).where(
            or_(api_tokens.c.name == name, api_tokens.c.token_hash == token_hash)
        )
    ).first()
    if taken is not None:
        raise _taken(name)
    try:
        conn.execute(api_tokens.insert().values(name=name, token_hash=token_hash, created=now))
    except IntegrityError as exc:  # added by another server since the check above
        raise _taken(name) from exc


def _taken(name: str) -> Conflict:
    return Conflict(
        f"token '{name}' (or one with the same value) already exists: choose another name"
    )


def token_exists(conn: Connection, token_hash: str) -> bool:
    stmt = select(api_tokens.c.id).where(api_tokens.c.token_hash == token_hash)
    return conn.execute(stmt).first() is not None
