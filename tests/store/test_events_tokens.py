"""The event log's paging and filters, and API token hashes."""

from __future__ import annotations

import pytest

from stratus.model.errors import Conflict
from stratus.store import Store
from tests.store.helpers import add_host, new_vm


def test_events_page_by_id_and_filter_by_object(store: Store) -> None:
    host = add_host(store)
    vms = store.create_vms([new_vm() for _ in range(7)])
    everything = store.events(limit=1000)
    assert len(everything) == 8
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    first = store.events(limit=3)
    second = store.events(limit=3, after_id=first[-1].id)
    third = store.events(limit=3, after_id=second[-1].id)
    assert first + second + third == everything
    assert [e.object_id for e in store.events(object_type="vm")] == [vm.id for vm in vms]
    [only] = store.events(object_type="vm", object_id=vms[3].id)
    assert (only.object_type, only.object_id, only.to_state) == ("vm", vms[3].id, "PENDING")
    assert [e.object_type for e in store.events(object_type="host")] == ["host"]
    assert store.events(object_type="host")[0].object_id == host.id


def test_tokens_are_found_by_hash_only(store: Store) -> None:
    store.add_token("ci", "a" * 64)
    assert store.token_exists("a" * 64)
    assert not store.token_exists("b" * 64)
    assert not store.token_exists("ci")


def test_duplicate_token_name_or_hash_is_a_conflict(store: Store) -> None:
    store.add_token("ci", "a" * 64)
    with pytest.raises(Conflict, match="token 'ci'"):
        store.add_token("ci", "b" * 64)
    with pytest.raises(Conflict, match="already exists"):
        store.add_token("other", "a" * 64)
    assert not store.token_exists("b" * 64)
