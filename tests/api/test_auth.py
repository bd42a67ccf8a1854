"""Every route but /health needs a valid bearer token; a refusal says how to authenticate."""

from __future__ import annotations

from typing import cast

import httpx
import pytest

from stratus.api.auth import TokenVerifier, sha256_hex
from stratus.store import Store
from tests.api.conftest import LiveServer


def _routes(live_server: LiveServer) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document, path parameters filled in."""
    with live_server.client() as client:
        doc = client.get("/openapi.json").json()
    fill = {"{vm_id}": "1", "{operation}": "hold", "{ref}": "node1"}
    routes = []
    for path, methods in doc["paths"].items():
        for name, value in fill.items():
            path = path.replace(name, value)
        routes += [(method.upper(), path) for method in methods]
    return routes


def test_health_answers_without_a_token(live_server: LiveServer) -> None:
    with live_server.client(token=None) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": response.json()["version"]}
    assert response.json()["version"]


def test_every_other_route_refuses_a_request_without_a_token(live_server: LiveServer) -> None:
    routes = [route for route in _routes(live_server) if route != ("GET", "/api/v1/health")]
    assert len(routes) >= 10
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        for method, path in routes:
            response = client.request(method, path)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            error = response.json()["error"]
            assert error["type"] == "AuthError"
            assert "Bearer" in error["hint"]


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "test-token-0123456789"],
    ids=["wrong-token", "basic-scheme", "empty-token", "no-scheme"],
)
def test_a_wrong_token_or_scheme_is_refused_on_every_route(
    live_server: LiveServer, header: str
) -> None:
    routes = [route for route in _routes(live_server) if route != ("GET", "/api/v1/health")]
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        for method, path in routes:
            response = client.request(method, path, headers={"Authorization": header})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"


def test_the_valid_token_is_accepted(api: httpx.Client) -> None:
    assert api.get("/vms").status_code == 200


def test_a_token_added_after_a_refusal_works_at_once(live_server: LiveServer) -> None:
    with live_server.client(token="late-token") as client:
        assert client.get("/hosts").status_code == 401
        live_server.store.add_token("late", sha256_hex("late-token"))
        assert client.get("/hosts").status_code == 200


class _CountingStore:
    """Answers token lookups from a set and counts them (the verifier's only store call)."""

    def __init__(self, hashes: set[str]) -> None:
        self.hashes = hashes
        self.lookups = 0

    def token_exists(self, token_hash: str) -> bool:
        self.lookups += 1
        return token_hash in self.hashes


def test_verifier_remembers_valid_tokens_until_the_ttl_ends() -> None:
    now = [0.0]
    counting = _CountingStore({sha256_hex("good")})
    store = cast(Store, counting)
    verifier = TokenVerifier(ttl=60.0, clock=lambda: now[0])
    good = sha256_hex("good")
    assert not verifier.cached(good)
    assert verifier.lookup(store, good)
    now[0] = 59.0
    assert verifier.cached(good)
    counting.hashes.clear()  # revoked: noticed once the remembered answer expires
    now[0] = 61.0
    assert not verifier.cached(good)
    assert not verifier.lookup(store, good)
    assert counting.lookups == 2


def test_verifier_never_remembers_an_invalid_token() -> None:
    verifier = TokenVerifier()
    bad = sha256_hex("bad")
    assert not verifier.lookup(cast(Store, _CountingStore(set())), bad)
    assert not verifier.cached(bad)


def test_the_openapi_document_is_served_under_api_v1_to_a_token_holder(
    live_server: LiveServer,
) -> None:
    with live_server.client(token=None) as anonymous:
        refused = anonymous.get("/openapi.json")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "AuthError"
    with live_server.client() as client:
        doc = client.get("/openapi.json").json()
    assert "/api/v1/vms/{vm_id}/{operation}" in doc["paths"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
