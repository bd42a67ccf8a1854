"""Sealed host credentials: the key file, round trips, wrong keys, and the driver's view."""

from __future__ import annotations

import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stratus.engine.drivers import DriverSet
from stratus.engine.secrets import KEY_FILE, SecretBox
from stratus.model.credentials import check_secrets, looks_secret
from stratus.model.errors import InvalidInput, SecretsError
from stratus.model.records import Host, HostState

SECRETS = {"access_key_id": "AKIAPLAIN", "secret_access_key": "plain-secret-value"}


def test_sealed_credentials_open_again_and_hide_their_text(tmp_path: Path) -> None:
    box = SecretBox(tmp_path)
    sealed = box.seal(SECRETS)
    assert "plain-secret-value" not in sealed and "access_key_id" not in sealed
    assert box.seal(SECRETS) != sealed  # every sealing is unique
    assert SecretBox(tmp_path).open(sealed, "host aws") == SECRETS  # the key is kept
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_no_credentials_seal_to_nothing_and_make_no_key(tmp_path: Path) -> None:
    box = SecretBox(tmp_path)
    assert box.seal({}) == ""
    assert box.open("", "host node1") == {}
    assert not (tmp_path / KEY_FILE).exists()


def test_another_key_gives_a_clear_error_naming_the_host_and_no_data(tmp_path: Path) -> None:
    sealed = SecretBox(tmp_path / "a").seal(SECRETS)
    with pytest.raises(SecretsError) as caught:
        SecretBox(tmp_path / "b").open(sealed, "host aws")
    message = str(caught.value)
    assert "credentials of host aws cannot be decrypted" in message
    assert "secret.key" in message and "stratus host credentials" in message
    assert sealed[:20] not in message and caught.value.__cause__ is None


@pytest.mark.parametrize("sealed", ["garbage", "gAAAAAB-corrupt", "é"])
def test_a_corrupt_sealed_text_gives_the_same_clear_error(tmp_path: Path, sealed: str) -> None:
    with pytest.raises(SecretsError, match="host aws cannot be decrypted"):
        SecretBox(tmp_path).open(sealed, "host aws")


def test_a_damaged_key_file_says_to_restore_it(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("not a key\n")
    with pytest.raises(SecretsError, match="not a valid key") as caught:
        SecretBox(tmp_path).seal(SECRETS)
    assert "not a key" not in str(caught.value)


def _host(sealed: str) -> Host:
    now = datetime.now(UTC)
    return Host(
        id=7, name="aws", driver="dummy", state=HostState.MONITORED, cpu=1, memory=512,
        labels={}, options={}, reason="", monitoring={}, last_monitored=None, created=now,
        version=1, sealed_secrets=sealed,
    )  # fmt: skip


class CountingBox(SecretBox):
    opened = 0

    def open(self, sealed: str, owner: str) -> dict[str, str]:
        self.opened += 1
        return super().open(sealed, owner)


def test_the_driver_view_opens_each_sealing_once_and_never_prints_it(tmp_path: Path) -> None:
    box = CountingBox(tmp_path)
    drivers = DriverSet(tmp_path, box)
    host = _host(box.seal(SECRETS))
    assert "plain-secret-value" not in repr(host) and host.has_secrets
    for version in range(1, 4):  # probes bump the version; the credentials stay the same
        info = drivers.host_info(replace(host, version=version))
        assert info.secrets == SECRETS
    assert box.opened == 1
    assert "plain-secret-value" not in repr(info)
    rotated = {"access_key_id": "AKIANEW", "secret_access_key": "new"}
    assert drivers.host_info(replace(host, sealed_secrets=box.seal(rotated))).secrets == rotated
    assert box.opened == 2
    assert drivers.host_info(_host("")).secrets == {}


def test_credential_names_are_checked_without_quoting_values() -> None:
    assert check_secrets(SECRETS) == SECRETS
    for bad in ({"Bad": "v"}, {"ok": ""}, {"ok": 3}, {f"k{i}": "v" for i in range(33)}):
        with pytest.raises(InvalidInput) as caught:
            check_secrets(bad)
        assert "'v'" not in str(caught.value)
    assert looks_secret("aws_secret") and looks_secret("AuthToken")
    assert not looks_secret("ssh_key") and not looks_secret("endpoint")
