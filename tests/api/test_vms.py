"""VM routes over a live server: submit, list and page, show, operations and their errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from stratus.api.schemas import SubmitOut, VmDetail, VmPage
from stratus.model.lifecycle import Operation
from tests.api.conftest import SMALL_VM, add_host, submit, wait_for


def test_a_submitted_vm_waits_then_runs_on_the_only_host(api: httpx.Client) -> None:
    add_host(api, "node1")
    response = api.post("/vms", json={"template": SMALL_VM})
    assert response.status_code == 201
    created = SubmitOut.model_validate(response.json())
    assert created.vms[0].name == "web"
    assert created.vms[0].memory == 512
    vm = wait_for(api, f"/vms/{created.vms[0].id}", lambda v: v["state"] == "RUNNING")
    assert vm["host"] == "node1"
    assert vm["host_id"] is not None
    assert vm["deploy_id"]


def test_submit_count_creates_that_many_vms_and_hold_keeps_them_out_of_scheduling(
    api: httpx.Client,
) -> None:
    add_host(api, "node1")
    vms = submit(api, count=3, hold=True)
    assert [vm["state"] for vm in vms] == ["HOLD"] * 3
    assert len({vm["id"] for vm in vms}) == 3
    assert api.get(f"/vms/{vms[0]['id']}").json()["state"] == "HOLD"


def test_a_template_syntax_error_is_400_naming_line_and_column(api: httpx.Client) -> None:
    response = api.post("/vms", json={"template": 'NAME = "x"\nCPU 1\nMEMORY = 512\n'})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "TemplateError"
    assert (error["line"], error["column"]) == (2, 5)
    assert "expected '='" in error["message"]


def test_a_template_without_memory_is_refused_with_a_message(api: httpx.Client) -> None:
    response = api.post("/vms", json={"template": 'NAME = "x"\n'})
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_listing_pages_through_every_vm_with_next(api: httpx.Client) -> None:
    ids = [vm["id"] for vm in submit(api, count=5, hold=True)]
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"after": after} if after is not None else {})
        page = VmPage.model_validate(api.get("/vms", params=params).json())
        seen += [vm.id for vm in page.items]
        pages += 1
        if page.next is None:
            break
        assert page.next == page.items[-1].id
        after = page.next
    assert seen == ids
    assert pages == 3


def test_a_full_last_page_still_says_next_then_an_empty_page_ends(api: httpx.Client) -> None:
    ids = [vm["id"] for vm in submit(api, count=2, hold=True)]
    first = api.get("/vms", params={"limit": 2}).json()
    assert first["next"] == ids[-1]
    assert api.get("/vms", params={"after": first["next"]}).json() == {"items": [], "next": None}


def test_listing_filters_by_state_and_by_host(api: httpx.Client) -> None:
    add_host(api, "node1")
    running = submit(api)[0]
    held = submit(api, hold=True)[0]
    wait_for(api, f"/vms/{running['id']}", lambda v: v["state"] == "RUNNING")
    by_state = api.get("/vms", params={"state": "HOLD"}).json()["items"]
    assert [vm["id"] for vm in by_state] == [held["id"]]
    by_host = api.get("/vms", params={"host": "node1"}).json()["items"]
    assert [vm["id"] for vm in by_host] == [running["id"]]


def test_listing_by_an_unknown_host_is_404(api: httpx.Client) -> None:
    response = api.get("/vms", params={"host": "nowhere"})
    assert response.status_code == 404
    assert "nowhere" in response.json()["error"]["message"]


def test_show_has_template_history_events_and_allowed_operations(api: httpx.Client) -> None:
    add_host(api, "node1")
    vm_id = submit(api)[0]["id"]
    body = wait_for(api, f"/vms/{vm_id}", lambda v: v["state"] == "RUNNING")
    vm = VmDetail.model_validate(body)
    assert vm.template["NAME"] == "web"
    assert [(h.seq, h.host, h.end) for h in vm.history] == [(0, "node1", None)]
    assert vm.events[0].from_ == "" and vm.events[0].to == "PENDING"
    assert vm.events[-1].to == "RUNNING"
    assert "terminate" in vm.allowed_operations
    assert "release" not in vm.allowed_operations


def test_an_illegal_operation_is_409_with_the_state_and_allowed_operations(
    api: httpx.Client,
) -> None:
    vm_id = submit(api, hold=True)[0]["id"]
    response = api.post(f"/vms/{vm_id}/suspend")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["type"] == "IllegalOperation"
    assert error["state"] == "HOLD"
    assert set(error["allowed"]) == {"release", "deploy", "terminate"}
    assert "release" in error["hint"]


def test_terminate_is_accepted_with_202_and_the_vm_ends_done(api: httpx.Client) -> None:
    add_host(api, "node1")
    vm_id = submit(api)[0]["id"]
    wait_for(api, f"/vms/{vm_id}", lambda v: v["state"] == "RUNNING")
    response = api.post(f"/vms/{vm_id}/terminate", json={"hard": True})
    assert response.status_code == 202
    assert response.json()["state"] == "SHUTTING_DOWN"
    done = wait_for(api, f"/vms/{vm_id}", lambda v: v["state"] == "DONE")
    assert done["history"][0]["end"] is not None


def test_a_held_vm_is_deployed_by_hand_on_the_named_host(api: httpx.Client) -> None:
    add_host(api, "node1")
    add_host(api, "node2")
    vm_id = submit(api, hold=True)[0]["id"]
    response = api.post(f"/vms/{vm_id}/deploy", json={"host": "node2"})
    assert response.status_code == 202
    vm = wait_for(api, f"/vms/{vm_id}", lambda v: v["state"] == "RUNNING")
    assert vm["host"] == "node2"


def test_deploy_to_an_unknown_host_is_404(api: httpx.Client) -> None:
    vm_id = submit(api, hold=True)[0]["id"]
    response = api.post(f"/vms/{vm_id}/deploy", json={"host": "ghost"})
    assert response.status_code == 404
    assert api.get(f"/vms/{vm_id}").json()["state"] == "HOLD"


def test_hold_and_release_need_no_body(api: httpx.Client) -> None:
    vm_id = submit(api, hold=True)[0]["id"]
    assert api.post(f"/vms/{vm_id}/release").json()["state"] == "PENDING"
    assert api.post(f"/vms/{vm_id}/hold").json()["state"] == "HOLD"


@pytest.mark.parametrize("path", ["/vms/999", "/vms/999/terminate"])
def test_a_vm_that_does_not_exist_is_404(api: httpx.Client, path: str) -> None:
    response = api.request("GET" if path.count("/") == 2 else "POST", path)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "NotFound"
    assert "999" in error["message"]


@pytest.mark.parametrize("vm_id", ["0", "-1", "abc", "1.5", str(2**64)])
def test_a_garbage_vm_id_is_422_naming_the_parameter(api: httpx.Client, vm_id: str) -> None:
    response = api.get(f"/vms/{vm_id}")
    assert response.status_code == 422
    assert response.json()["error"]["errors"][0]["field"] == "path.vm_id"


def test_an_unknown_operation_is_422_naming_it(api: httpx.Client) -> None:
    response = api.post("/vms/1/explode")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "ValidationError"
    assert error["errors"][0]["field"] == "path.operation"
    assert "path.operation" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": SMALL_VM, "count": 0}, "body.count"),
        ({"template": SMALL_VM, "count": 1001}, "body.count"),
        ({"template": SMALL_VM, "format": "xml"}, "body.format"),
        ({}, "body.template"),
        ({"template": SMALL_VM, "colour": "red"}, "body.colour"),
        ({"template": "x" * (1024 * 1024 + 1)}, "body.template"),
    ],
)
def test_a_bad_submit_body_is_422_naming_the_field(
    api: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = api.post("/vms", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "ValidationError"
    assert field in [e["field"] for e in error["errors"]]
    assert error["hint"]


def test_malformed_json_is_422_not_500(api: httpx.Client) -> None:
    response = api.post(
        "/vms", content=b'{"template": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "ValidationError"


def test_a_bad_recover_mode_is_422(api: httpx.Client) -> None:
    response = api.post("/vms/1/recover", json={"mode": "maybe"})
    assert response.status_code == 422
    assert response.json()["error"]["errors"][0]["field"] == "body.mode"


def test_an_unknown_route_has_the_error_shape(api: httpx.Client) -> None:
    response = api.get("/volcanoes")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFound"


def test_an_oversized_request_body_is_413_with_the_error_shape(api: httpx.Client) -> None:
    response = api.post("/vms", json={"template": "x" * (9 * 1024 * 1024)})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "TooLarge"


def test_an_oversized_streamed_body_is_413_with_the_error_shape(api: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts as it streams
        yield b'{"template": "'
        for _ in range(9):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = api.post("/vms", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "TooLarge"


def test_every_illegal_operation_is_409_and_changes_nothing(api: httpx.Client) -> None:
    add_host(api, "node1")
    held = submit(api, hold=True)[0]["id"]
    running = submit(api)[0]["id"]
    done = submit(api, hold=True)[0]["id"]
    assert api.post(f"/vms/{done}/terminate").status_code == 202
    wait_for(api, f"/vms/{running}", lambda v: v["state"] == "RUNNING")
    wait_for(api, f"/vms/{done}", lambda v: v["state"] == "DONE")
    for vm_id, state in ((held, "HOLD"), (running, "RUNNING"), (done, "DONE")):
        before = api.get(f"/vms/{vm_id}").json()
        allowed = set(before["allowed_operations"])
        for operation in sorted({op.value for op in Operation} - allowed):
            response = api.post(f"/vms/{vm_id}/{operation}", json={})
            assert response.status_code == 409, (state, operation, response.text)
            error = response.json()["error"]
            assert error["state"] == state and set(error["allowed"]) == allowed
        after = api.get(f"/vms/{vm_id}").json()
        assert (after["state"], after["version"]) == (before["state"], before["version"])
