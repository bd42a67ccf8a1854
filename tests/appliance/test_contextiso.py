"""The context CD-ROM builder: names survive, the label is cidata, bad input is refused."""

from __future__ import annotations

import pytest

from stratus.drivers.contextiso import MAX_FILES, build_context_iso, read_context_iso
from stratus.model.errors import InvalidInput

_PVD_OFFSET = 16 * 2048  # the primary volume descriptor is sector 16
_VOLUME_ID = slice(_PVD_OFFSET + 40, _PVD_OFFSET + 72)


def test_context_files_round_trip_with_their_names_and_contents() -> None:
    files = {
        "context.sh": b"VMID='7'\nETH0_IP='192.168.150.100'\n",
        "init.sh": b"#!/bin/sh\necho hi\n",
        "meta-data": b"instance-id: vm-7\n",
        "user-data": b"",
        "id_rsa.pub": b"ssh-ed25519 AAAA test\n",
        "archive.tar.gz": bytes(range(256)) * 40,
    }
    assert read_context_iso(build_context_iso(files)) == files


def test_names_that_differ_only_in_case_stay_distinct() -> None:
    files = {"a.sh": b"lower", "A.sh": b"upper", "a_sh": b"under"}
    assert read_context_iso(build_context_iso(files)) == files


def test_volume_label_is_cidata_for_cloud_init() -> None:
    image = build_context_iso({"context.sh": b""})
    assert image[_VOLUME_ID].decode().rstrip() == "cidata"


def test_a_custom_label_is_written() -> None:
    image = build_context_iso({"context.sh": b""}, label="CONTEXT")
    assert image[_VOLUME_ID].decode().rstrip() == "CONTEXT"


@pytest.mark.parametrize("name", ["a/b", "..", "../etc/passwd", "", "x" * 65, "bad\nname", "c:d"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        build_context_iso({name: b"x"})
    assert repr(name) in caught.value.message


def test_more_files_than_the_limit_are_refused() -> None:
    files = {f"file{i}": b"" for i in range(MAX_FILES + 1)}
    with pytest.raises(InvalidInput, match=f"at most {MAX_FILES}"):
        build_context_iso(files)


def test_a_bad_label_is_refused() -> None:
    with pytest.raises(InvalidInput, match="label"):
        build_context_iso({"context.sh": b""}, label="no spaces allowed")


def test_reading_bytes_that_are_not_an_iso_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not an ISO 9660 image"):
        read_context_iso(b"\0" * 70000)
