"""The CLI's HTTP client of the Stratus API; the CLI never touches the store.

Where to connect: `STRATUS_URL` and `STRATUS_TOKEN`; each one that is unset is read from
the daemon's data dir (`<data dir>/endpoint`, `<data dir>/admin.token`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "ClientError",
    "DaemonUnreachable",
    "StratusClient",
    "Target",
    "connect",
    "default_data_dir",
    "resolve_target",
]

DEFAULT_URL = "http://127.0.0.1:8421"
API_PREFIX = "/api/v1"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ClientError(Exception):
    """An error the CLI reports as a message and a hint, without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class DaemonUnreachable(ClientError):
    """No daemon answers at the URL."""


class ApiError(ClientError):
    """The API answered with an error body."""

    def __init__(
        self, status: int, type_: str, message: str, hint: str | None, body: dict[str, Any]
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.type = type_
        self.body = body


def default_data_dir() -> Path:
    """`$STRATUS_DATA_DIR`, else `~/.local/share/stratus`."""
    env = os.environ.get("STRATUS_DATA_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "stratus"


@dataclass(frozen=True)
class Target:
    """Where the daemon listens and the token to show it."""

    url: str
    token: str | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def resolve_target(data_dir: Path | None = None) -> Target:
    """The daemon's URL and token from the environment, else from its data dir."""
    directory = data_dir or default_data_dir()
    url = os.environ.get("STRATUS_URL") or _read(directory / "endpoint") or DEFAULT_URL
    token = os.environ.get("STRATUS_TOKEN") or _read(directory / "admin.token")
    return Target(url=url.rstrip("/"), token=token)


class StratusClient:
    """Typed-enough calls of the REST API; every error becomes a ClientError."""

    def __init__(self, target: Target, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = target.url
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        self._http = httpx.Client(
            base_url=f"{self.url}{API_PREFIX}",
            headers=headers,
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StratusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; the decoded JSON answer (None for 204) or a ClientError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise DaemonUnreachable(
                f"the Stratus daemon at {self.url} did not answer in time",
                "check that it is running and not overloaded",
            ) from exc
        except httpx.TransportError as exc:
            raise DaemonUnreachable(
                f"cannot reach the Stratus daemon at {self.url}: start it with `stratus serve`"
                " or set STRATUS_URL",
            ) from exc
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code,
                "BadResponse",
                f"{self.url} answered {response.status_code} without JSON: is it Stratus?",
                "check STRATUS_URL",
                {},
            ) from exc
        if response.is_error:
            raise _api_error(response.status_code, body)
        return body

    # -- VMs --------------------------------------------------------------------------
    def submit(self, template: str, *, fmt: str, hold: bool, count: int) -> dict[str, Any]:
        body = {"template": template, "format": fmt, "hold": hold, "count": count}
        result: dict[str, Any] = self.request("POST", "/vms", json=body)
        return result

    def iter_vms(self, *, state: str | None = None, page: int = 5000) -> Iterator[dict[str, Any]]:
        """Every VM (optionally in one state), fetched a page at a time."""
        return self._pages("/vms", {"state": state}, page)

    def vm(self, vm_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/vms/{vm_id}")
        return result

    def operate(self, vm_id: int, operation: str, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/vms/{vm_id}/{operation}", json=args)
        return result

    def disk_saveas(self, vm_id: int, disk: int, name: str) -> dict[str, Any]:
        body = {"disk": disk, "name": name}
        result: dict[str, Any] = self.request("POST", f"/vms/{vm_id}/disk-saveas", json=body)
        return result

    def vm_log(self, vm_id: int, max_bytes: int) -> str:
        result = self.request("GET", f"/vms/{vm_id}/log", params={"bytes": max_bytes})
        return str(result["log"])

    # -- hosts ------------------------------------------------------------------------
    def add_host(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/hosts", json=fields)
        return result

    def iter_hosts(self, *, state: str | None = None, page: int = 5000) -> Iterator[dict[str, Any]]:
        return self._pages("/hosts", {"state": state}, page)

    def host(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/hosts/{_segment(ref)}")
        return result

    def set_host_credentials(self, ref: str, secrets: dict[str, str]) -> dict[str, Any]:
        """Replace a host's credentials; the answer says only whether it has some."""
        path = f"/hosts/{_segment(ref)}/credentials"
        result: dict[str, Any] = self.request("PUT", path, json={"secrets": secrets})
        return result

    def host_operation(self, ref: str, operation: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/hosts/{_segment(ref)}/{operation}")
        return result

    def delete_host(self, ref: str) -> None:
        self.request("DELETE", f"/hosts/{_segment(ref)}")

    # -- images -----------------------------------------------------------------------
    def register_image(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/images", json=fields)
        return result

    def iter_images(
        self, *, state: str | None = None, page: int = 5000
    ) -> Iterator[dict[str, Any]]:
        return self._pages("/images", {"state": state}, page)

    def image(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/images/{_segment(ref)}")
        return result

    def image_operation(self, ref: str, operation: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/images/{_segment(ref)}/{operation}")
        return result

    def delete_image(self, ref: str) -> None:
        self.request("DELETE", f"/images/{_segment(ref)}")

    # -- virtual networks -------------------------------------------------------------
    def create_vnet(self, template: str, *, fmt: str = "auto") -> dict[str, Any]:
        body = {"template": template, "format": fmt}
        result: dict[str, Any] = self.request("POST", "/vnets", json=body)
        return result

    def iter_vnets(self, *, page: int = 5000) -> Iterator[dict[str, Any]]:
        return self._pages("/vnets", {}, page)

    def vnet(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/vnets/{_segment(ref)}")
        return result

    def delete_vnet(self, ref: str) -> None:
        self.request("DELETE", f"/vnets/{_segment(ref)}")

    def vnet_address(self, ref: str, operation: str, address: str) -> dict[str, Any]:
        """hold or release one address of a network."""
        path = f"/vnets/{_segment(ref)}/{operation}"
        result: dict[str, Any] = self.request("POST", path, json={"address": address})
        return result

    def _pages(self, path: str, params: dict[str, Any], page: int) -> Iterator[dict[str, Any]]:
        query = {key: value for key, value in params.items() if value is not None}
        after: int | None = None
        while True:
            paging = {"limit": page} | ({"after": after} if after is not None else {})
            body = self.request("GET", path, params=query | paging)
            yield from body["items"]
            after = body["next"]
            if after is None:
                return


def _segment(ref: str) -> str:
    """A host name or id as one URL path segment."""
    return quote(ref, safe="")


def _api_error(status: int, body: Any) -> ApiError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ApiError(status, "HTTPError", f"the API answered {status}", None, {})
    return ApiError(
        status,
        str(error.get("type", "Error")),
        str(error.get("message", f"the API answered {status}")),
        error.get("hint"),
        error,
    )


def connect(data_dir: Path | None) -> StratusClient:
    """A client of the daemon found from the environment or `data_dir`."""
    return StratusClient(resolve_target(data_dir))
