"""Every error leaves the API as `{"error": {"type", "message", "hint", ...details}}`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from stratus.api.schemas import ErrorOut
from stratus.api.views import JsonResponse
from stratus.model.errors import StratusError

__all__ = ["ERROR_RESPONSES", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

#: Documented error answers, shared by every authenticated route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "Invalid input (template or expression syntax...)"),
        (401, "Missing or wrong bearer token"),
        (404, "No such object"),
        (409, "The object's state does not allow the request"),
        (422, "A request field failed validation"),
    )
}

_HTTP_TYPES = {401: "AuthError", 404: "NotFound", 405: "MethodNotAllowed", 413: "TooLarge"}
_AUTH_HEADERS = {"WWW-Authenticate": "Bearer"}


def error_response(
    status: int,
    type_: str,
    message: str,
    hint: str | None = None,
    details: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The one error body of the API."""
    body: dict[str, object] = {"type": type_, "message": message, "hint": hint}
    body.update(details or {})
    if status == 401:
        headers = {**_AUTH_HEADERS, **(headers or {})}
    return JsonResponse({"error": body}, status_code=status, headers=headers)


async def _stratus_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StratusError)
    status = exc.status if 400 <= exc.status <= 599 else 500
    if status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(status, type(exc).__name__, exc.message, exc.hint, exc.details())


def _field(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field(error.get("loc", ())), "message": str(error.get("msg", "invalid"))}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return error_response(
        422,
        "ValidationError",
        f"invalid request: {summary}",
        "fix the named fields; the schema is at /api/v1/docs",
        {"errors": errors},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "HTTPError")
    hint = "see /api/v1/docs for the routes" if exc.status_code in (404, 405) else None
    return error_response(exc.status_code, type_, str(exc.detail), hint, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return error_response(
        500,
        "InternalError",
        "the server failed unexpectedly; the details are in its log",
        "retry; if it happens again, report it with the server log",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the API's JSON shape."""
    app.add_exception_handler(StratusError, _stratus_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
