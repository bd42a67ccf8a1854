"""Images in the store: import states, derived USED, uses taken and refused, delete rules."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event

from stratus.model.errors import Conflict, InvalidInput, NotFound
from stratus.model.lifecycle import VmState
from stratus.model.records import Image, ImageState, ImageType
from stratus.store import Store
from stratus.store import db as store_db
from stratus.store import images as images_mod
from tests.store.helpers import new_vm


def _image(
    store: Store,
    name: str = "debian",
    *,
    ready: bool = True,
    persistent: bool = False,
    image_type: ImageType = ImageType.OS,
) -> Image:
    image = store.add_image(
        name, image_type, persistent=persistent, source=f"/srv/{name}.qcow2", datastore="images"
    )
    if not ready:
        return image
    return store.finish_image_import(
        image.id,
        fmt="qcow2",
        size=2 * 1024**3,
        actual_size=300 * 1024**2,
        checksum="sha256:" + "ab" * 32,
        path=f"/data/datastores/images/{image.id}/disk.qcow2",
    )


def _vm_ids(store: Store, count: int) -> list[int]:
    return [vm.id for vm in store.create_vms([new_vm(f"vm{i}") for i in range(count)])]


def test_a_registered_image_is_locked_until_its_import_finishes(store: Store) -> None:
    image = _image(store, ready=False)
    assert (image.state, image.progress, image.format, image.checksum) == (
        ImageState.LOCKED,
        0.0,
        "",
        "",
    )
    store.set_image_progress(image.id, 0.25, "copying: 512M of 2G")
    assert (store.get_image("debian").progress, store.get_image(image.id).reason) == (
        0.25,
        "copying: 512M of 2G",
    )
    ready = store.finish_image_import(
        image.id, fmt="raw", size=4096, actual_size=0, checksum="sha256:00", path="/x/disk.raw"
    )
    assert (ready.state, ready.format, ready.size, ready.path, ready.progress) == (
        ImageState.READY,
        "raw",
        4096,
        "/x/disk.raw",
        1.0,
    )
    events = store.events(object_type="image", object_id=image.id)
    assert [(e.from_state, e.to_state) for e in events] == [("", "LOCKED"), ("LOCKED", "READY")]


def test_progress_is_only_recorded_while_locked(store: Store) -> None:
    image = _image(store)
    store.set_image_progress(image.id, 0.5, "late report")
    assert store.get_image(image.id) == image


def test_a_failed_import_keeps_its_reason(store: Store) -> None:
    image = _image(store, ready=False)
    failed = store.fail_image_import(image.id, "x is not a disk image")
    assert failed is not None
    assert (failed.state, failed.reason) == (ImageState.ERROR, "x is not a disk image")
    assert store.fail_image_import(image.id, "again") is None  # not LOCKED any more
    with pytest.raises(Conflict, match="not importing"):
        store.finish_image_import(image.id, fmt="raw", size=1, actual_size=1, checksum="", path="")


def test_a_duplicate_image_name_is_a_conflict_with_a_hint(store: Store) -> None:
    _image(store)
    with pytest.raises(Conflict, match="image 'debian' already exists") as caught:
        _image(store)
    assert caught.value.hint is not None and "stratus image delete debian" in caught.value.hint
    assert len(store.list_images()) == 1


def test_an_unknown_image_says_how_to_list_images(store: Store) -> None:
    with pytest.raises(NotFound, match="image 'nope' does not exist") as caught:
        store.get_image("nope")
    assert caught.value.hint == "see `stratus image list`"
    with pytest.raises(NotFound, match="image 7 does not exist"):
        store.get_image(7)


def test_images_are_found_by_name_or_refused_naming_the_missing_ones(store: Store) -> None:
    debian, alpine = _image(store, "debian"), _image(store, "alpine")
    with store_db.read(store.engine) as conn:
        found = images_mod.find_images_by_name(conn, ["debian", "alpine", "debian"])
        assert found == {"debian": debian, "alpine": alpine}
        with pytest.raises(NotFound, match="image 'arch' does not exist"):
            images_mod.find_images_by_name(conn, ["debian", "arch"])
        with pytest.raises(NotFound, match="images 'arch', 'gentoo' do not exist"):
            images_mod.find_images_by_name(conn, ["gentoo", "arch"])


def test_an_image_with_uses_is_used_until_they_are_released(store: Store) -> None:
    image = _image(store)
    first, second = _vm_ids(store, 2)
    store.record_image_uses(first, [(image.id, 0)])
    store.record_image_uses(second, [(image.id, 0), (image.id, 1)])
    used = store.get_image(image.id)
    assert (used.state, used.vms) == (ImageState.USED, (first, second))
    assert store.image_vms("debian") == [first, second]
    assert [i.name for i in store.list_images(state=ImageState.USED)] == ["debian"]
    assert store.list_images(state=ImageState.READY) == []
    assert store.release_image_uses(first) == [image.id]
    assert store.release_image_uses(second) == [image.id]
    assert store.get_image(image.id).state is ImageState.READY
    assert [i.name for i in store.list_images(state=ImageState.READY)] == ["debian"]


@pytest.mark.parametrize(
    ("state", "message", "hint"),
    [
        (ImageState.LOCKED, "image 'debian' is still importing (0%)", "says READY"),
        (ImageState.ERROR, "image 'debian' failed to import: broken", "register it again"),
        (ImageState.DISABLED, "image 'debian' is disabled", "stratus image enable debian"),
    ],
)
def test_an_unusable_image_is_refused_with_what_to_do(
    store: Store, state: ImageState, message: str, hint: str
) -> None:
    image = _image(store, ready=state is ImageState.DISABLED)
    if state is ImageState.ERROR:
        store.fail_image_import(image.id, "broken")
    if state is ImageState.DISABLED:
        store.set_image_enabled(image.id, False)
    [vm_id] = _vm_ids(store, 1)
    with pytest.raises(Conflict) as caught:
        store.record_image_uses(vm_id, [(image.id, 0)])
    assert caught.value.message == message
    assert caught.value.hint is not None and hint in caught.value.hint
    assert store.get_image(image.id).vms == ()


def test_a_persistent_image_serves_one_vm_at_a_time(store: Store) -> None:
    image = _image(store, "db", persistent=True)
    first, second = _vm_ids(store, 2)
    store.record_image_uses(first, [(image.id, 0)])
    with pytest.raises(Conflict, match=rf"image 'db' is persistent and VM {first} \(vm0\)"):
        store.record_image_uses(second, [(image.id, 0)])
    with pytest.raises(InvalidInput, match="attach it only once"):
        store.record_image_uses(first, [(image.id, 1), (image.id, 2)])
    assert store.get_image(image.id).vms == (first,)


def test_vms_racing_for_a_persistent_image_leave_it_to_exactly_one(store: Store) -> None:
    image = _image(store, "db", persistent=True)
    vm_ids = _vm_ids(store, 8)
    start = threading.Barrier(len(vm_ids))

    def slow_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO image_uses"):
            time.sleep(0.05)  # widen the gap between the check and the insert

    event.listen(store.engine, "before_cursor_execute", slow_insert)

    def take(vm_id: int) -> str:
        start.wait(timeout=10)
        try:
            store.record_image_uses(vm_id, [(image.id, 0)])
        except Conflict:
            return "refused"
        return "taken"

    with ThreadPoolExecutor(len(vm_ids)) as pool:
        outcomes = list(pool.map(take, vm_ids))
    assert sorted(outcomes) == ["refused"] * 7 + ["taken"]
    assert len(store.get_image(image.id).vms) == 1


def test_a_refused_use_takes_none_of_the_others(store: Store) -> None:
    good, bad = _image(store, "good"), _image(store, "bad", ready=False)
    [vm_id] = _vm_ids(store, 1)
    with pytest.raises(Conflict):
        store.record_image_uses(vm_id, [(good.id, 0), (bad.id, 1)])
    assert store.get_image(good.id).vms == ()


def test_disable_and_enable_move_between_ready_and_disabled(store: Store) -> None:
    image = _image(store)
    disabled = store.set_image_enabled("debian", False)
    assert (disabled.state, disabled.version) == (ImageState.DISABLED, image.version + 1)
    assert store.set_image_enabled("debian", False) == disabled  # again: nothing changes
    assert store.set_image_enabled(image.id, True).state is ImageState.READY
    locked = _image(store, "new", ready=False)
    with pytest.raises(Conflict, match="still importing"):
        store.set_image_enabled(locked.id, False)
    events = store.events(object_type="image", object_id=image.id)
    assert [e.to_state for e in events] == ["LOCKED", "READY", "DISABLED", "READY"]


def test_an_image_in_use_cannot_be_deleted_and_the_error_names_the_vms(store: Store) -> None:
    image = _image(store)
    [vm_id] = _vm_ids(store, 1)
    store.record_image_uses(vm_id, [(image.id, 0)])
    with pytest.raises(Conflict, match=rf"image 'debian' is used by VM {vm_id} \(vm0\)"):
        store.delete_image("debian")
    store.release_image_uses(vm_id)
    assert store.delete_image("debian").id == image.id
    with pytest.raises(NotFound):
        store.get_image(image.id)
    last = store.events(object_type="image", object_id=image.id)[-1]
    assert (last.from_state, last.to_state) == ("READY", "DELETED")


def test_a_locked_image_cannot_be_deleted(store: Store) -> None:
    _image(store, ready=False)
    with pytest.raises(Conflict, match="still importing"):
        store.delete_image("debian")


def test_interrupted_imports_fail_except_the_ones_still_running(store: Store) -> None:
    running, orphan, ready = (
        _image(store, "running", ready=False),
        _image(store, "orphan", ready=False),
        _image(store),
    )
    failed = store.fail_interrupted_imports("interrupted", exclude={running.id})
    assert [image.name for image in failed] == ["orphan"]
    assert store.get_image(orphan.id).state is ImageState.ERROR
    assert store.get_image(running.id).state is ImageState.LOCKED
    assert store.get_image(ready.id).state is ImageState.READY


def test_images_are_listed_a_page_at_a_time(store: Store) -> None:
    for name in ("a", "b", "c"):
        _image(store, name)
    first = store.list_images(limit=2)
    rest = store.list_images(limit=2, after_id=first[-1].id)
    assert [i.name for i in first + rest] == ["a", "b", "c"]
    assert store.list_images(state=ImageState.LOCKED) == []


def test_image_detail_holds_its_users_and_events(store: Store) -> None:
    image = _image(store)
    [vm] = store.create_vms([new_vm("held", state=VmState.HOLD)])
    store.record_image_uses(vm.id, [(image.id, 0)])
    detail, events = store.image_detail("debian")
    assert (detail.state, detail.vms) == (ImageState.USED, (vm.id,))
    assert [e.to_state for e in events] == ["LOCKED", "READY"]
