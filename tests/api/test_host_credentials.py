"""Host credentials over a live server: sealed at rest, handed to the driver, never shown."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from stratus.drivers.base import DeploySpec, HostInfo, InstanceInfo, ProbeResult
from stratus.drivers.dummy import DummyDriver
from stratus.engine.secrets import KEY_FILE
from tests.api.conftest import LiveServer, add_host, submit, wait_for

SECRETS = {"access_key_id": "AKIAPLAINTEXT0001", "secret_access_key": "pl41n-S3CRET-value"}
VALUES = tuple(SECRETS.values())


class RecordingDummy(DummyDriver):
    """The dummy driver, noting the credentials each call received (test-only)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.seen: dict[str, dict[str, str]] = {}

    async def probe(self, host: HostInfo) -> ProbeResult:
        self.seen[f"probe {host.name}"] = dict(host.secrets)
        return await super().probe(host)

    async def deploy(self, host: HostInfo, spec: DeploySpec) -> InstanceInfo:
        self.seen[f"deploy {host.name}"] = dict(host.secrets)
        return await super().deploy(host, spec)


@pytest.fixture
def recorder(live_server: LiveServer, tmp_path: Path) -> RecordingDummy:
    driver = RecordingDummy(tmp_path)
    live_server.engine.drivers.add(driver)
    return driver


def _assert_hidden(*texts: str) -> None:
    for shown in texts:
        for value in VALUES:
            assert value not in shown


def _stored_secrets(live_server: LiveServer, name: str) -> str:
    with live_server.store.engine.connect() as conn:
        sealed = conn.execute(
            text("SELECT secrets FROM hosts WHERE name = :name"), {"name": name}
        ).scalar_one()
    assert isinstance(sealed, str)
    return sealed


def test_credentials_are_stored_sealed_and_never_shown(
    api: httpx.Client, live_server: LiveServer, tmp_path: Path
) -> None:
    created = api.post(
        "/hosts",
        json={"name": "aws", "driver": "dummy", "cpu": 2, "memory": 1024, "secrets": SECRETS},
    )
    assert created.status_code == 201, created.text
    assert created.json()["credentials"] == "stored"
    assert "secrets" not in created.json()
    shown = api.get("/hosts/aws")
    listed = api.get("/hosts")
    assert shown.json()["credentials"] == listed.json()["items"][0]["credentials"] == "stored"
    _assert_hidden(created.text, shown.text, listed.text, api.get("/events").text)
    sealed = _stored_secrets(live_server, "aws")
    assert sealed and "access_key_id" not in sealed
    _assert_hidden(sealed)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_a_host_without_credentials_shows_none_and_stores_nothing(
    api: httpx.Client, live_server: LiveServer
) -> None:
    assert add_host(api, "node1")["credentials"] is None
    assert _stored_secrets(live_server, "node1") == ""


def test_the_driver_receives_the_opened_credentials_and_their_replacement(
    api: httpx.Client, recorder: RecordingDummy
) -> None:
    add_host(api, "aws", secrets=SECRETS)
    assert recorder.seen["probe aws"] == SECRETS
    vm_id = submit(api)[0]["id"]
    wait_for(api, f"/vms/{vm_id}", lambda vm: vm["state"] == "RUNNING")
    assert recorder.seen["deploy aws"] == SECRETS

    new = {"access_key_id": "AKIAROTATED", "secret_access_key": "rotated-value"}
    replaced = api.put("/hosts/aws/credentials", json={"secrets": new})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["credentials"] == "stored"
    assert "rotated-value" not in replaced.text
    wait_for(api, "/hosts/aws", lambda _: recorder.seen["probe aws"] == new)

    removed = api.put("/hosts/aws/credentials", json={"secrets": {}})
    assert removed.json()["credentials"] is None
    wait_for(api, "/hosts/aws", lambda _: recorder.seen["probe aws"] == {})


BAD_SECRETS: list[Any] = [
    {"Bad Key": VALUES[0]},
    {"UPPER": VALUES[0]},
    {"empty": ""},
    {"listed": [VALUES[0]]},
    {"nested": {"v": VALUES[1]}},
    {"long": VALUES[1] * 1000},
    {f"k{i}": VALUES[0] for i in range(40)},
    VALUES[0],
    [VALUES[0]],
]


@pytest.mark.parametrize("secrets", BAD_SECRETS)
def test_a_bad_secrets_body_is_422_without_echoing_a_value(api: httpx.Client, secrets: Any) -> None:
    body = {"name": "aws", "driver": "dummy", "cpu": 1, "memory": 512, "secrets": secrets}
    added = api.post("/hosts", json=body)
    assert added.status_code == 422, added.text
    assert any(e["field"].startswith("body.secrets") for e in added.json()["error"]["errors"])
    api.post("/hosts", json=body | {"name": "node1", "secrets": {}})
    replaced = api.put("/hosts/node1/credentials", json={"secrets": secrets})
    assert replaced.status_code == 422, replaced.text
    _assert_hidden(added.text, replaced.text)


def test_secret_looking_options_are_refused_with_a_hint_to_use_credentials(
    api: httpx.Client,
) -> None:
    for name in ("password", "api_key", "AuthToken", "client-secret", "Credentials_file"):
        response = api.post(
            "/hosts",
            json={
                "name": "c",
                "driver": "dummy",
                "cpu": 1,
                "memory": 512,
                "options": {name: VALUES[1]},
            },
        )
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert name in error["message"] and "--credentials" in error["hint"]
        _assert_hidden(response.text)
    assert api.get("/hosts").json()["items"] == []
    # a key file's path and a key pair's name are not secrets
    options = {"ssh_key": "/root/.ssh/id_ed25519", "keypair": "ops"}
    response = api.post(
        "/hosts", json={"name": "c", "driver": "dummy", "cpu": 1, "memory": 512, "options": options}
    )
    assert response.status_code == 201, response.text
    assert options.items() <= response.json()["options"].items()


def test_credentials_that_cannot_be_opened_put_the_host_in_error_saying_why(
    api: httpx.Client, live_server: LiveServer
) -> None:
    add_host(api, "aws", secrets=SECRETS)
    with live_server.store.engine.begin() as conn:  # a corrupt row (or a key changed under it)
        conn.execute(text("UPDATE hosts SET secrets = 'gAAAAnot-a-token' WHERE name = 'aws'"))
    host = wait_for(api, "/hosts/aws", lambda h: h["state"] == "ERROR")
    assert "credentials of host aws cannot be decrypted" in host["reason"]
    assert "stratus host credentials" in host["reason"]
    assert "gAAAA" not in host["reason"]
    # giving them again heals it
    assert api.put("/hosts/aws/credentials", json={"secrets": SECRETS}).status_code == 200
    wait_for(api, "/hosts/aws", lambda h: h["state"] == "MONITORED")
