"""A store with one bridge network and VMs of every shape the metadata tree has, and the
metadata service serving it on a real unix socket (module scope: they only read)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stratus.drivers.metadata_proxy import preamble_for_address, preamble_for_vm
from stratus.store import Store, open_store
from tests.metadata.support import (
    ServiceThread,
    add_disk_image,
    create_network,
    lease_ip,
    network_template,
    running_service,
    set_info,
    submit,
)

NETNS = "imds-unit"  # never created: the unit tests talk to the socket directly
USER_DATA = b"#!/bin/sh\necho hello from user-data\n"
FULL = f"""
NAME = "web-1"
VCPU = 2
MEMORY = 1024
DISK = [ IMAGE = "debian" ]
NIC = [ NETWORK = "lan" ]
CONTEXT = [ SET_HOSTNAME = "web-$VMID" ]
METADATA = [
  INSTANCE_TYPE = "m5.large", KEY_NAME = "laptop", PUBLIC_KEY = "ssh-ed25519 AAAAC3Nz me@laptop",
  SECURITY_GROUPS = "web, ssh", AVAILABILITY_ZONE = "eu-west-1b",
  USER_DATA = "{base64.b64encode(USER_DATA).decode()}" ]
"""
BARE = """
NAME = "bare"
MEMORY = 256
DISK = [ IMAGE = "alpine" ]
NIC = [ NETWORK = "lan" ]
"""
STRICT = """
NAME = "strict"
MEMORY = 128
NIC = [ NETWORK = "lan" ]
METADATA = [ HTTP_TOKENS = "required", AMI_ID = "ami-0123abcd" ]
"""


@dataclass(frozen=True)
class Guest:
    """A VM of the test store and how a proxy would introduce its connections."""

    vm_id: int
    ip: str
    image_id: int | None = None

    @property
    def preamble(self) -> bytes:
        return preamble_for_address(NETNS, self.ip)

    @property
    def relay_preamble(self) -> bytes:
        return preamble_for_vm(self.vm_id)


@dataclass(frozen=True)
class World:
    store: Store
    socket: Path
    service: ServiceThread
    full: Guest
    bare: Guest
    strict: Guest


class Clock:
    """A clock the test moves (token expiry)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, clock: Clock) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("imds")
    store = open_store(str(data_dir / "stratus.db"))
    try:
        create_network(store, network_template("lan", NETNS, "imdsbr0", "192.168.180"))
        debian = add_disk_image(store, "debian")
        add_disk_image(store, "alpine")
        full = submit(store, FULL)
        set_info(store, full, {"address": "203.0.113.7"})
        bare = submit(store, BARE)
        set_info(store, bare, {"address": lease_ip(store, bare.id)})  # the same: no public
        strict = submit(store, STRICT)
        with running_service(store, data_dir, clock) as service:
            yield World(
                store=store,
                socket=service.service.socket_path,
                service=service,
                full=Guest(full.id, lease_ip(store, full.id), debian),
                bare=Guest(bare.id, lease_ip(store, bare.id)),
                strict=Guest(strict.id, lease_ip(store, strict.id)),
            )
    finally:
        store.close()
