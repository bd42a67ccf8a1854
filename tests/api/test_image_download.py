"""Image downloads: by a signed, expiring link (what a partner zone gets) or an API token."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import LiveServer, wait_for
from tests.imagefiles import make_qcow2


@pytest.fixture
def image(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    source = make_qcow2(tmp_path_factory.mktemp("sources") / "disk.qcow2", "8M")
    created = api.post("/images", json={"name": "disk", "path": str(source)}).json()
    return wait_for(api, f"/images/{created['id']}", lambda i: i["state"] == "READY")


def test_a_signed_link_downloads_the_image_with_its_checksum(
    live_server: LiveServer, image: dict[str, object]
) -> None:
    url = live_server.engine.image_links.url_for(live_server.url, int(str(image["id"])))
    response = httpx.get(url, timeout=10)  # no token: the link is the authority
    assert response.status_code == 200
    assert f"sha256:{hashlib.sha256(response.content).hexdigest()}" == image["checksum"]
    assert response.headers["x-stratus-checksum"] == image["checksum"]


def test_a_tampered_expired_or_foreign_link_is_refused(
    live_server: LiveServer, image: dict[str, object], tmp_path: Path
) -> None:
    links = live_server.engine.image_links
    image_id = int(str(image["id"]))
    good = links.url_for(live_server.url, image_id)
    expired = links.url_for(live_server.url, image_id, ttl=-10)
    other_image = good.replace(f"/images/{image_id}/", f"/images/{image_id + 1}/")
    forged = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
    for url in (expired, other_image, forged):
        response = httpx.get(url, timeout=10)
        assert response.status_code == 401, url
        assert response.json()["error"]["type"] == "AuthError"
    assert "expired" in httpx.get(expired, timeout=10).json()["error"]["message"]


def test_without_a_link_an_api_token_is_needed(
    live_server: LiveServer, api: httpx.Client, image: dict[str, object]
) -> None:
    path = f"/images/{image['id']}/download"
    assert httpx.get(live_server.api + path, timeout=10).status_code == 401
    by_name = api.get("/images/disk/download")
    assert by_name.status_code == 200
    assert f"sha256:{hashlib.sha256(by_name.content).hexdigest()}" == image["checksum"]
