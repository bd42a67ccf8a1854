"""The event log route: every state change, filtered by object and paged by id."""

from __future__ import annotations

import httpx

from stratus.api.schemas import EventPage
from tests.api.conftest import add_host, submit


def test_events_record_each_state_change_of_vms_and_hosts(api: httpx.Client) -> None:
    host = add_host(api, "node1")
    vm_id = submit(api, hold=True)[0]["id"]
    api.post(f"/vms/{vm_id}/release")
    page = EventPage.model_validate(api.get("/events").json())
    vm_changes = [(e.from_, e.to) for e in page.items if e.object_type == "vm"]
    assert vm_changes[:2] == [("", "HOLD"), ("HOLD", "PENDING")]
    host_changes = [
        (e.from_, e.to) for e in page.items if (e.object_type, e.object_id) == ("host", host["id"])
    ]
    assert host_changes == [("", "INIT"), ("INIT", "MONITORED")]


def test_events_filter_by_object_and_page_by_id(api: httpx.Client) -> None:
    first, second = (vm["id"] for vm in submit(api, count=2, hold=True))
    for _ in range(2):
        api.post(f"/vms/{second}/release")
        api.post(f"/vms/{second}/hold")
    params = {"object_type": "vm", "object_id": second, "limit": 2}
    seen = []
    after = None
    while True:
        page = api.get("/events", params=params | ({"after": after} if after else {})).json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        after = page["next"]
        if after is None:
            break
    assert {e["object_id"] for e in seen} == {second}
    assert [e["to"] for e in seen] == ["HOLD", "PENDING", "HOLD", "PENDING", "HOLD"]
    assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
    assert first != second


def test_a_bad_event_filter_is_422(api: httpx.Client) -> None:
    assert api.get("/events", params={"object_type": "disk"}).status_code == 422
    assert api.get("/events", params={"object_id": 0}).status_code == 422
    assert api.get("/events", params={"limit": 50_001}).status_code == 422
