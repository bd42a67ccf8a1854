"""The EC2 records in the store, on SQLite and PostgreSQL: ownership, filters, tags,
addresses, users and keys."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from stratus.model.ec2ids import instance_id
from stratus.model.errors import Conflict, NotFound
from stratus.store import Store, ec2_objects
from stratus.store import db as store_db
from stratus.store import ec2 as store_ec2
from stratus.store import users as store_users
from stratus.store.ec2 import InstanceQuery, Ownership
from stratus.store.users import Quota
from tests.store.helpers import new_vm


def _user(store: Store, name: str, quota: Quota | None = None) -> int:
    with store_db.write(store.engine) as conn:
        return store_users.insert_user(conn, datetime.now(UTC), name, quota or Quota()).id


def _instances(
    store: Store, user_id: int, count: int, tags: dict[str, str], token: str
) -> list[int]:
    vms = store.create_vms([new_vm(f"vm{i}") for i in range(count)])
    owners = [
        Ownership(vm.id, instance_id(vm.id), user_id, "r-1", token, index, "t2.micro")
        for index, vm in enumerate(vms)
    ]
    with store_db.write(store.engine) as conn:
        store_ec2.insert_instances(conn, user_id, owners, tags)
    return [vm.id for vm in vms]


def _ids(store: Store, user_id: int, **query: object) -> list[int]:
    since = datetime.now(UTC) - timedelta(hours=1)
    with store_db.read(store.engine) as conn:
        found = store_ec2.select_instances(conn, user_id, InstanceQuery(since, **query))  # type: ignore[arg-type]
    return [inst.vm.id for inst in found]


def test_instances_are_listed_per_user_with_tag_filters_and_paging(store: Store) -> None:
    alice, bob = _user(store, "alice"), _user(store, "bob")
    web = _instances(store, alice, 3, {"team": "web_1"}, "tok-a")
    db = _instances(store, alice, 2, {"team": "db%"}, "tok-b")
    theirs = _instances(store, bob, 2, {"team": "web_1"}, "tok-a")
    assert _ids(store, alice) == web + db and _ids(store, bob) == theirs
    assert _ids(store, alice, tags=[("team", ["web_1"])]) == web
    assert _ids(store, alice, tags=[("team", ["web?1"])]) == web  # ? is one character
    assert _ids(store, alice, tags=[("team", ["db%"])]) == db  # % and _ are literal
    assert _ids(store, alice, tags=[("team", ["w*"])]) == web
    assert _ids(store, alice, limit=2) == web[:2]
    assert _ids(store, alice, after=web[1], limit=2) == [web[2], db[0]]
    with store_db.read(store.engine) as conn:
        assert store_ec2.reservation_of_token(conn, alice, "tok-b") == db
        assert store_ec2.usage_of(conn, alice) == (5, 5.0, 5 * 512)
        assert store_ec2.owned_vm_ids(conn, bob, web + theirs) == set(theirs)
    [extra] = store.create_vms([new_vm("extra")])
    twice = Ownership(extra.id, instance_id(extra.id), alice, "r-2", "tok-a", 0, "t2.micro")
    with store_db.write(store.engine) as conn, pytest.raises(Conflict):
        store_ec2.insert_instances(conn, alice, [twice], {})  # tok-a, launch index 0 again


def test_addresses_come_from_the_pool_once(store: Store) -> None:
    alice = _user(store, "alice")
    pool = ipaddress.IPv4Network("203.0.113.0/30")  # two usable addresses
    with store_db.write(store.engine) as conn:
        first = ec2_objects.allocate_address(conn, datetime.now(UTC), alice, pool)
        second = ec2_objects.allocate_address(conn, datetime.now(UTC), alice, pool)
        third = ec2_objects.allocate_address(conn, datetime.now(UTC), alice, pool)
    assert first and second and third is None
    assert {first.public_ip, second.public_ip} == {"203.0.113.1", "203.0.113.2"}
    [vm] = _instances(store, alice, 1, {}, "t")
    with store_db.write(store.engine) as conn:
        ec2_objects.set_address_vm(conn, alice, first.id, vm)
        ec2_objects.set_address_vm(conn, alice, second.id, vm)  # moves the VM's address
        listed = ec2_objects.select_addresses(conn, alice)
    assert [(a.public_ip, a.vm_id) for a in listed] == [("203.0.113.1", None), ("203.0.113.2", vm)]


def test_deleting_a_user_removes_keys_and_objects_but_not_live_instances(store: Store) -> None:
    carol = _user(store, "carol", Quota(vms=3))
    now = datetime.now(UTC)
    with store_db.write(store.engine) as conn:
        store_users.insert_access_key(conn, now, carol, "AKIAAAAAAAAAAAAAAAA1", "sealed")
        ec2_objects.insert_keypair(
            conn, now, carol, name="k", key_type="rsa", fingerprint="f", public_key="ssh-rsa A"
        )
        assert store_users.find_access_key(conn, "AKIAAAAAAAAAAAAAAAA1") is not None
        assert store_users.user_quota(conn, carol) == Quota(vms=3)
    _instances(store, carol, 1, {"a": "b"}, "t")
    with store_db.write(store.engine) as conn, pytest.raises(Conflict, match="not terminated"):
        store_users.delete_user(conn, "carol")
    with store_db.write(store.engine) as conn:
        conn.execute(store_users.vms.update().values(state="DONE"))
        store_users.delete_user(conn, "carol")
        assert store_users.find_access_key(conn, "AKIAAAAAAAAAAAAAAAA1") is None
        with pytest.raises(NotFound):
            store_users.find_user(conn, "carol")
