"""Image records, their import states, and which VMs use them (image_uses).

USED is never stored: an image is USED when it is READY and has rows in image_uses, so
the state cannot drift from the uses. Taking uses (at VM submit) locks the image rows
(FOR UPDATE on PostgreSQL; SQLite's write transactions are serial anyway), so a delete, a
disable or a second user of a persistent image cannot slip in between check and insert.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, delete, exists, select
from sqlalchemy.exc import IntegrityError

from stratus.model.errors import Conflict, InvalidInput, NotFound
from stratus.model.records import Image, ImageState, ImageType
from stratus.store.events import StateChange, write_events
from stratus.store.tables import image_uses, images, vms

__all__ = [
    "fail_import",
    "fail_interrupted_imports",
    "find_image",
    "find_images_by_name",
    "finish_import",
    "image_not_found",
    "image_users",
    "insert_image",
    "record_image_uses",
    "release_image_uses",
    "remove_image",
    "select_images",
    "set_image_enabled",
    "set_image_prestage",
    "set_import_progress",
]

_OBJECT = "image"  # object_type of image events
_LIST_HINT = "see `stratus image list`"


def image_not_found(ref: int | str) -> NotFound:
    shown = f"'{ref}'" if isinstance(ref, str) else str(ref)
    return NotFound(f"image {shown} does not exist", hint=_LIST_HINT)


def _image(row: Row[Any], users: Sequence[int]) -> Image:
    state = ImageState(row.state)
    if state is ImageState.READY and users:
        state = ImageState.USED
    return Image(
        id=row.id,
        name=row.name,
        type=ImageType(row.type),
        state=state,
        persistent=bool(row.persistent),
        format=row.format,
        size=row.size,
        actual_size=row.actual_size,
        checksum=row.checksum,
        path=row.path,
        source=row.source,
        datastore=row.datastore,
        progress=row.progress,
        reason=row.reason,
        description=row.description,
        created=row.created,
        updated=row.updated,
        version=row.version,
        vms=tuple(users),
        prestage=bool(row.prestage),
    )


def _with_users(conn: Connection, stmt: Select[Any]) -> list[Image]:
    """Run an image query and fill each image's users with one query over the ids returned."""
    rows = conn.execute(stmt).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    users: dict[int, list[int]] = defaultdict(list)
    found = conn.execute(
        select(image_uses.c.image_id, image_uses.c.vm_id)
        .where(image_uses.c.image_id.between(min(ids), max(ids)))
        .distinct()
        .order_by(image_uses.c.image_id, image_uses.c.vm_id)
    )
    for image_id, vm_id in found:
        users[image_id].append(vm_id)
    return [_image(row, users.get(row.id, ())) for row in rows]


def _where_ref(ref: int | str) -> Any:
    return images.c.id == ref if isinstance(ref, int) else images.c.name == ref


def find_image(conn: Connection, ref: int | str, *, lock: bool = False) -> Image:
    """One image by id or name, with its users; NotFound otherwise (`lock`: FOR UPDATE)."""
    stmt = select(images).where(_where_ref(ref))
    found = _with_users(conn, stmt.with_for_update() if lock else stmt)
    if not found:
        raise image_not_found(ref)
    return found[0]


def select_images(
    conn: Connection, *, state: ImageState | None, limit: int, after_id: int
) -> list[Image]:
    """A page of images in id order, with their users (two queries)."""
    stmt = select(images).where(images.c.id > after_id).order_by(images.c.id).limit(limit)
    if state is not None:
        stored = ImageState.READY if state is ImageState.USED else state
        stmt = stmt.where(images.c.state == stored.value)
        if stored is ImageState.READY:
            used = exists().where(image_uses.c.image_id == images.c.id)
            stmt = stmt.where(used if state is ImageState.USED else ~used)
    return _with_users(conn, stmt)


def find_images_by_name(conn: Connection, names: Sequence[str]) -> dict[str, Image]:
    """Images by name, with their users; NotFound naming every missing one."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    stmt = select(images).where(images.c.name.in_(wanted)).order_by(images.c.id)
    found = {image.name: image for image in _with_users(conn, stmt)}
    missing = [name for name in wanted if name not in found]
    if missing:
        if len(missing) == 1:
            raise image_not_found(missing[0])
        shown = ", ".join(f"'{name}'" for name in missing)
        raise NotFound(f"images {shown} do not exist", hint=_LIST_HINT)
    return found


def image_users(conn: Connection, image_id: int) -> list[int]:
    """Ids of the VMs using an image, ascending."""
    stmt = (
        select(image_uses.c.vm_id)
        .where(image_uses.c.image_id == image_id)
        .distinct()
        .order_by(image_uses.c.vm_id)
    )
    return list(conn.execute(stmt).scalars())


def insert_image(
    conn: Connection,
    now: datetime,
    *,
    name: str,
    image_type: ImageType,
    persistent: bool,
    source: str,
    datastore: str,
    description: str,
    reason: str,
) -> Image:
    """A new image, LOCKED for its import, with its "registered" event; Conflict on its name."""
    if not name:
        raise InvalidInput("an image needs a name")
    if conn.execute(select(images.c.id).where(images.c.name == name)).first() is not None:
        raise _duplicate(name)
    values: dict[str, Any] = {
        "name": name,
        "type": ImageType(image_type).value,
        "state": ImageState.LOCKED.value,
        "persistent": persistent,
        "format": "",
        "size": 0,
        "actual_size": 0,
        "checksum": "",
        "path": "",
        "source": source,
        "datastore": datastore,
        "progress": 0.0,
        "reason": reason,
        "description": description,
        "created": now,
        "updated": now,
        "version": 1,
    }
    try:
        image_id = conn.execute(images.insert().returning(images.c.id), values).scalar_one()
    except IntegrityError as exc:  # registered by another request since the check above
        raise _duplicate(name) from exc
    write_events(conn, [StateChange(_OBJECT, image_id, "", ImageState.LOCKED.value, reason)], now)
    return find_image(conn, image_id)


def _duplicate(name: str) -> Conflict:
    return Conflict(
        f"image '{name}' already exists",
        hint=f"choose another name, or `stratus image delete {name}` first",
    )


def _move(
    conn: Connection,
    now: datetime,
    image: Image,
    to: ImageState,
    reason: str,
    **values: Any,
) -> Image:
    """Change a stored state (one conditional update and one event); Conflict on a race."""
    stored = ImageState.READY if image.state is ImageState.USED else image.state
    done = conn.execute(
        images.update()
        .where(images.c.id == image.id, images.c.version == image.version)
        .values(state=to.value, reason=reason, updated=now, version=image.version + 1, **values)
    )
    if done.rowcount != 1:
        raise Conflict(f"image '{image.name}' changed meanwhile", hint="reload it and retry")
    if to is not stored:
        write_events(conn, [StateChange(_OBJECT, image.id, stored.value, to.value, reason)], now)
    return find_image(conn, image.id)


def set_import_progress(
    conn: Connection, now: datetime, image_id: int, progress: float, reason: str
) -> None:
    """Record how far a LOCKED image's import got (no version bump, no event: it is advice)."""
    conn.execute(
        images.update()
        .where(images.c.id == image_id, images.c.state == ImageState.LOCKED.value)
        .values(progress=min(max(progress, 0.0), 1.0), reason=reason, updated=now)
    )


def finish_import(
    conn: Connection,
    now: datetime,
    image_id: int,
    *,
    fmt: str,
    size: int,
    actual_size: int,
    checksum: str,
    path: str,
    reason: str,
) -> Image:
    """LOCKED -> READY with what the import found; Conflict unless it is still LOCKED."""
    image = find_image(conn, image_id, lock=True)
    if image.state is not ImageState.LOCKED:
        raise Conflict(f"image '{image.name}' is {image.state.value}, not importing any more")
    facts = {"format": fmt, "size": size, "actual_size": actual_size, "checksum": checksum}
    return _move(conn, now, image, ImageState.READY, reason, path=path, progress=1.0, **facts)


def fail_import(conn: Connection, now: datetime, image_id: int, reason: str) -> Image | None:
    """LOCKED -> ERROR with the reason; None when the image is gone or no longer LOCKED."""
    try:
        image = find_image(conn, image_id, lock=True)
    except NotFound:
        return None
    if image.state is not ImageState.LOCKED:
        return None
    return _move(conn, now, image, ImageState.ERROR, reason, path="")


def fail_interrupted_imports(
    conn: Connection, now: datetime, reason: str, *, exclude: Collection[int] = ()
) -> list[Image]:
    """Every LOCKED image not in `exclude` -> ERROR (their import died with a process)."""
    stmt = select(images).where(images.c.state == ImageState.LOCKED.value).order_by(images.c.id)
    failed = []
    for image in _with_users(conn, stmt.with_for_update()):
        if image.id not in exclude:
            failed.append(_move(conn, now, image, ImageState.ERROR, reason))
    return failed


def set_image_enabled(conn: Connection, now: datetime, ref: int | str, enabled: bool) -> Image:
    """DISABLED -> READY (enabled) or READY -> DISABLED; the same state again is a no-op."""
    image = find_image(conn, ref, lock=True)
    stored = ImageState.READY if image.state is ImageState.USED else image.state
    want = ImageState.READY if enabled else ImageState.DISABLED
    if stored is want:
        return image
    if stored is ImageState.LOCKED:
        raise Conflict(
            f"image '{image.name}' is still importing ({image.progress:.0%})",
            hint=f"wait until `stratus image show {image.name}` says READY",
        )
    if stored is ImageState.ERROR:
        raise Conflict(
            f"image '{image.name}' failed to import: {image.reason}",
            hint=f"`stratus image delete {image.name}`, then register it again",
        )
    reason = "enabled" if enabled else "disabled: no new VM may use it"
    return _move(conn, now, image, want, reason)


def set_image_prestage(conn: Connection, ref: int | str, prestage: bool) -> Image:
    """Mark an image for pre-staging to partner zones, or back to on demand."""
    image = find_image(conn, ref, lock=True)
    if image.prestage is not prestage:
        conn.execute(
            images.update()
            .where(images.c.id == image.id)
            .values(prestage=prestage, version=images.c.version + 1)
        )
    return find_image(conn, image.id)


def _vm_list(conn: Connection, vm_ids: Sequence[int], shown: int = 5) -> str:
    names = dict(
        conn.execute(select(vms.c.id, vms.c.name).where(vms.c.id.in_(vm_ids[:shown]))).all()
    )
    text = ", ".join(f"{vm_id} ({names.get(vm_id, '?')})" for vm_id in vm_ids[:shown])
    return text + (f" and {len(vm_ids) - shown} more" if len(vm_ids) > shown else "")


def remove_image(conn: Connection, now: datetime, ref: int | str) -> Image:
    """Delete an image no VM uses and that is not importing; returns it as it was."""
    image = find_image(conn, ref, lock=True)
    if image.vms:
        label = "VM" if len(image.vms) == 1 else "VMs"
        raise Conflict(
            f"image '{image.name}' is used by {label} {_vm_list(conn, image.vms)}",
            hint="terminate them (or wait until they are DONE), then delete it",
        )
    if image.state is ImageState.LOCKED:
        raise Conflict(
            f"image '{image.name}' is still importing ({image.progress:.0%})",
            hint="wait for the import to end, then delete it",
        )
    conn.execute(images.delete().where(images.c.id == image.id))
    stored = ImageState.READY if image.state is ImageState.USED else image.state
    write_events(conn, [StateChange(_OBJECT, image.id, stored.value, "DELETED", "deleted")], now)
    return image


def _unusable(image: Image) -> Conflict | None:
    """Why a VM may not take this image now (None when it may)."""
    name = image.name
    if image.state is ImageState.LOCKED:
        return Conflict(
            f"image '{name}' is still importing ({image.progress:.0%})",
            hint=f"wait until `stratus image show {name}` says READY, then submit again",
        )
    if image.state is ImageState.ERROR:
        return Conflict(
            f"image '{name}' failed to import: {image.reason}",
            hint=f"`stratus image delete {name}` and register it again",
        )
    if image.state is ImageState.DISABLED:
        return Conflict(
            f"image '{name}' is disabled", hint=f"enable it first: `stratus image enable {name}`"
        )
    return None


def record_image_uses(conn: Connection, vm_id: int, uses: Sequence[tuple[int, int]]) -> None:
    """Record that a VM uses images: (image_id, disk_index) pairs, in the VM's transaction.

    Refused (Conflict) when an image is LOCKED, ERROR or DISABLED, or is persistent and
    another VM uses it; InvalidInput when a VM names one persistent image twice.
    """
    if not uses:
        return
    ids = sorted({image_id for image_id, _ in uses})
    stmt = select(images).where(images.c.id.in_(ids)).order_by(images.c.id).with_for_update()
    found = {image.id: image for image in _with_users(conn, stmt)}
    for image_id in ids:
        image = found.get(image_id)
        if image is None:
            raise image_not_found(image_id)
        refusal = _unusable(image)
        if refusal is not None:
            raise refusal
        if not image.persistent:
            continue
        others = [user for user in image.vms if user != vm_id]
        if others:
            raise Conflict(
                f"image '{image.name}' is persistent and VM {_vm_list(conn, others)}"
                " already uses it",
                hint="a persistent image serves one VM at a time: terminate that VM first,"
                " or use a non-persistent image",
            )
        if sum(1 for used, _ in uses if used == image_id) > 1:
            raise InvalidInput(
                f"image '{image.name}' is persistent: a VM may attach it only once",
                hint="attach it to one disk, or make the image non-persistent",
            )
    conn.execute(
        image_uses.insert(),
        [{"image_id": image_id, "vm_id": vm_id, "disk_index": index} for image_id, index in uses],
    )


def release_image_uses(conn: Connection, vm_id: int) -> list[int]:
    """Forget a VM's image uses; the ids of the images it used."""
    released = list(
        conn.execute(
            select(image_uses.c.image_id).where(image_uses.c.vm_id == vm_id).distinct()
        ).scalars()
    )
    if released:
        conn.execute(delete(image_uses).where(image_uses.c.vm_id == vm_id))
    return sorted(released)
