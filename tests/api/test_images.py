"""Image routes over a live server: register, poll until READY or ERROR, list, show, delete."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from stratus.api.schemas import ImageDetail, ImageOut, ImagePage
from tests.api.conftest import LiveServer, wait_for
from tests.imagefiles import FileServer, file_server, make_qcow2  # noqa: F401 (a fixture)
from tests.store.helpers import new_vm


@pytest.fixture
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test's image files live: outside the daemon's data dir, which is refused."""
    return tmp_path_factory.mktemp("sources")


def _settled(api: httpx.Client, image_id: int) -> dict[str, object]:
    return wait_for(api, f"/images/{image_id}", lambda i: i["state"] != "LOCKED")


def _register(api: httpx.Client, **body: object) -> dict[str, object]:
    response = api.post("/images", json=body)
    assert response.status_code == 201, response.text
    image = ImageOut.model_validate(response.json())
    assert image.state == "LOCKED"
    return response.json()  # type: ignore[no-any-return]


def test_an_image_registered_from_a_path_is_locked_then_ready(
    api: httpx.Client, sources: Path
) -> None:
    source = make_qcow2(sources / "debian.qcow2", "32M")
    image = _register(api, name="debian", path=str(source), description="Debian 12")
    ready = ImageDetail.model_validate(_settled(api, int(str(image["id"]))))
    assert (ready.state, ready.format, ready.size, ready.type) == ("READY", "qcow2", 32 << 20, "OS")
    assert ready.checksum.startswith("sha256:") and ready.path.endswith("/disk.qcow2")
    assert [(e.from_, e.to) for e in ready.events] == [("", "LOCKED"), ("LOCKED", "READY")]
    by_name = ImageDetail.model_validate(api.get("/images/debian").json())
    assert by_name.id == ready.id
    page = ImagePage.model_validate(api.get("/images", params={"state": "READY"}).json())
    assert [i.name for i in page.items] == ["debian"] and page.next is None


def test_an_image_registered_from_a_loopback_url_becomes_ready(
    api: httpx.Client,
    sources: Path,
    file_server: FileServer,  # noqa: F811
) -> None:
    disk = make_qcow2(sources / "a.qcow2", "8M")
    url = file_server.serve("/a.qcow2", disk.read_bytes())
    image = _register(api, name="remote", url=url, type="DATABLOCK", persistent=True)
    ready = _settled(api, int(str(image["id"])))
    assert (ready["state"], ready["format"], ready["source"], ready["persistent"]) == (
        "READY",
        "qcow2",
        url,
        True,
    )


def test_a_text_file_registered_as_an_os_disk_ends_in_error_with_the_reason(
    api: httpx.Client, sources: Path
) -> None:
    notes = sources / "notes.txt"
    notes.write_text("just text\n")
    image = _register(api, name="notes", path=str(notes))
    failed = _settled(api, int(str(image["id"])))
    assert failed["state"] == "ERROR"
    assert "is not a disk image" in str(failed["reason"])
    assert [i["state"] for i in api.get("/images", params={"state": "ERROR"}).json()["items"]] == [
        "ERROR"
    ]


def test_bad_registrations_are_refused_at_once_with_a_400(api: httpx.Client, sources: Path) -> None:
    disk = str(make_qcow2(sources / "a.qcow2"))
    for body, message in (
        ({"path": disk, "type": "KERNEL", "format": "raw"}, "KERNEL image is kept as it is"),
        ({"path": disk, "url": "http://127.0.0.1:9/a"}, "not both"),
        ({"path": "a.qcow2"}, "is relative"),
        ({"url": "file:///etc/passwd"}, "not an http or https URL"),
    ):
        response = api.post("/images", json={"name": "x", **body})
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]["message"]
    assert api.post("/images", json={"name": "123", "path": disk}).status_code == 422
    assert api.get("/images").json()["items"] == []


def test_an_unknown_image_is_a_404_with_a_hint(api: httpx.Client) -> None:
    for response in (
        api.get("/images/ghost"),
        api.post("/images/ghost/enable"),
        api.delete("/images/42"),
    ):
        assert response.status_code == 404
        error = response.json()["error"]
        assert "does not exist" in error["message"]
        assert error["hint"] == "see `stratus image list`"


def test_an_image_in_use_cannot_be_deleted_and_the_409_names_the_vm(
    api: httpx.Client, live_server: LiveServer, sources: Path
) -> None:
    image = _register(api, name="debian", path=str(make_qcow2(sources / "a.qcow2")))
    ready = _settled(api, int(str(image["id"])))
    store = live_server.store
    [vm] = store.create_vms([new_vm("web")])
    store.record_image_uses(vm.id, [(ready["id"], 0)])  # type: ignore[list-item]
    used = api.get("/images/debian").json()
    assert (used["state"], used["vms"]) == ("USED", [vm.id])
    refused = api.delete("/images/debian")
    assert refused.status_code == 409
    assert f"used by VM {vm.id} (web)" in refused.json()["error"]["message"]
    store.release_image_uses(vm.id)
    assert api.delete("/images/debian").status_code == 204
    assert not Path(str(ready["path"])).exists()
    assert api.get("/images/debian").status_code == 404


def test_disable_and_enable_an_image(api: httpx.Client, sources: Path) -> None:
    image = _register(api, name="debian", path=str(make_qcow2(sources / "a.qcow2")))
    _settled(api, int(str(image["id"])))
    disabled = api.post("/images/debian/disable")
    assert disabled.status_code == 200 and disabled.json()["state"] == "DISABLED"
    assert api.post(f"/images/{image['id']}/enable").json()["state"] == "READY"
    assert api.post("/images/debian/resize").status_code == 422
