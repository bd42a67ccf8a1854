"""The store's error messages, written once so every caller words them the same way."""

from __future__ import annotations

from stratus.model.errors import Conflict, NotFound

__all__ = ["changed_meanwhile", "host_not_found", "vm_not_found"]


def changed_meanwhile(kind: str, object_id: int, expected: int, current: int | None) -> Conflict:
    """The optimistic-concurrency miss: someone else updated the record first."""
    now = f", now {current}" if current is not None else ""
    return Conflict(
        f"{kind} {object_id} changed meanwhile (version {expected}{now}): reload and retry"
    )


def host_not_found(ref: int | str) -> NotFound:
    shown = f"'{ref}'" if isinstance(ref, str) else str(ref)
    return NotFound(f"host {shown} does not exist: see `stratus host list`")


def vm_not_found(vm_id: int) -> NotFound:
    return NotFound(f"VM {vm_id} does not exist: see `stratus vm list`")
