"""The EC2 Query protocol: form parameters in, XML out, errors as AWS writes them.

Parameters arrive flat ("Filter.1.Value.2=x") and are read as a tree (`Params`); every
reader validates and names the parameter it refuses. Answers are written by a small
escaping writer (`render`): tag names come from this code, every value is escaped, so
no user text can change the document's shape.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

__all__ = [
    "NAMESPACE",
    "Ec2Error",
    "Params",
    "check_text",
    "decode_token",
    "encode_token",
    "error_body",
    "invalid",
    "iso_time",
    "missing",
    "render",
]

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
MAX_PARAMETERS = 10_000  # pairs in one request
MAX_LIST = 1000  # items of one list parameter
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPECIAL = re.compile("[&<>\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Ec2Error(Exception):
    """An error the API answers with: an AWS error code, a message and an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def invalid(name: str, value: object, why: str = "") -> Ec2Error:
    """InvalidParameterValue naming the parameter and the value refused."""
    shown = str(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    text = f"Value ({shown}) for parameter {name} is invalid."
    return Ec2Error("InvalidParameterValue", f"{text} {why}".strip())


def missing(name: str) -> Ec2Error:
    return Ec2Error("MissingParameter", f"The request must contain the parameter {name}")


def check_text(name: str, value: str, max_len: int) -> str:
    """`value` unless it is too long or holds control characters (InvalidParameterValue)."""
    if len(value) > max_len:
        raise invalid(name, value, f"It is longer than {max_len} characters.")
    if _CONTROL.search(value):
        raise invalid(name, value.encode("unicode_escape").decode(), "It has control characters.")
    return value


class Params:
    """A request's parameters as a tree: "Filter.1.Name" is p.items("Filter")[0].text("Name")."""

    def __init__(self, node: Mapping[str, Any], prefix: str = "") -> None:
        self._node = node
        self._prefix = prefix

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> Params:
        """Build the tree; InvalidParameterValue for a name that is both a value and a list."""
        root: dict[str, Any] = {}
        for count, (key, value) in enumerate(pairs):
            if count >= MAX_PARAMETERS:
                raise Ec2Error("InvalidParameterValue", f"more than {MAX_PARAMETERS} parameters")
            parts = key.split(".")
            if not all(parts):
                raise invalid(key, value, "The parameter name is malformed.")
            node = root
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise invalid(key, value, "The parameter is given twice in two forms.")
                node = child
            if isinstance(node.get(parts[-1]), dict):
                raise invalid(key, value, "The parameter is given twice in two forms.")
            node[parts[-1]] = value
        return cls(root)

    def name(self, key: str) -> str:
        """The parameter's full name, for messages."""
        return f"{self._prefix}{key}"

    def has(self, key: str) -> bool:
        return key in self._node

    def text(
        self, key: str, *, required: bool = False, default: str | None = None, max_len: int = 255
    ) -> str | None:
        value = self._node.get(key)
        if value is None:
            if required:
                raise missing(self.name(key))
            return default
        if not isinstance(value, str):
            raise invalid(self.name(key), "...", "Expected a single value.")
        return check_text(self.name(key), value, max_len)

    def required(self, key: str, *, max_len: int = 255) -> str:
        value = self.text(key, required=True, max_len=max_len)
        assert value is not None
        if not value:
            raise invalid(self.name(key), value, "It must not be empty.")
        return value

    def number(self, key: str, *, default: int | None = None, low: int, high: int) -> int | None:
        text = self.text(key, max_len=20)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise invalid(self.name(key), text, "Expected a whole number.") from None
        if not low <= value <= high:
            raise invalid(self.name(key), text, f"Expected a number from {low} to {high}.")
        return value

    def flag(self, key: str, *, default: bool = False) -> bool:
        text = self.text(key, max_len=5)
        if text is None:
            return default
        if text.lower() not in ("true", "false"):
            raise invalid(self.name(key), text, "Expected true or false.")
        return text.lower() == "true"

    def sub(self, key: str) -> Params | None:
        """The structure key.* (e.g. Placement.AvailabilityZone), None when absent."""
        node = self._node.get(key)
        if node is None:
            return None
        if not isinstance(node, dict):
            raise invalid(self.name(key), node, f"Expected {self.name(key)}.<member>.")
        return Params(node, f"{self.name(key)}.")

    def _list(self, key: str) -> list[tuple[str, Any]]:
        node = self._node.get(key)
        if node is None:
            return []
        if not isinstance(node, dict):
            raise invalid(self.name(key), node, f"Expected {self.name(key)}.1, .2, ...")
        if len(node) > MAX_LIST:
            raise invalid(self.name(key), "...", f"At most {MAX_LIST} items are allowed.")
        for index in node:
            if not index.isdigit() or int(index) < 1:
                raise invalid(f"{self.name(key)}.{index}", "...", "Expected a number from 1.")
        return [(index, node[index]) for index in sorted(node, key=int)]

    def texts(self, key: str, *, max_len: int = 255) -> list[str]:
        """The values of key.1, key.2, ... in index order."""
        found = []
        for index, value in self._list(key):
            name = f"{self.name(key)}.{index}"
            if not isinstance(value, str):
                raise invalid(name, "...", "Expected a single value.")
            found.append(check_text(name, value, max_len))
        return found

    def items(self, key: str) -> list[Params]:
        """The structures key.1.*, key.2.*, ... in index order."""
        found = []
        for index, value in self._list(key):
            name = f"{self.name(key)}.{index}"
            if not isinstance(value, dict):
                raise invalid(name, value, f"Expected {name}.<member>.")
            found.append(Params(value, f"{name}."))
        return found


# --- XML -------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    if _SPECIAL.search(text) is None:  # most values: nothing to escape
        return text
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _INVALID_XML.sub("\ufffd", text)


def iso_time(value: datetime) -> str:
    """EC2's timestamp form: 2026-11-21T18:08:33.000Z."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso_time(value)
    return _escape(str(value))


def _write(out: list[str], body: Mapping[str, Any]) -> None:
    append = out.append
    for tag, value in body.items():
        if value is None:
            continue
        if isinstance(value, dict):
            append(f"<{tag}>")
            _write(out, value)
            append(f"</{tag}>")
        elif isinstance(value, list):
            append(f"<{tag}>")
            for item in value:
                if isinstance(item, dict):
                    append("<item>")
                    _write(out, item)
                    append("</item>")
                else:
                    append(f"<item>{_text(item)}</item>")
            append(f"</{tag}>")
        else:
            append(f"<{tag}>{_text(value)}</{tag}>")


def render(action: str, request_id: str, body: Mapping[str, Any]) -> bytes:
    """An action's answer: <ActionResponse xmlns=...><requestId/>...body...</...>.

    Mappings become nested elements, lists <item> children, None is left out.
    """
    out = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NAMESPACE}">',
        f"<requestId>{_escape(request_id)}</requestId>",
    ]
    _write(out, body)
    out.append(f"</{action}Response>")
    return "".join(out).encode()


def error_body(error: Ec2Error, request_id: str) -> bytes:
    """AWS's error document (the one botocore's EC2 parser reads)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{_escape(error.code)}</Code><Message>{_escape(error.message)}</Message>"
        f"</Error></Errors><RequestID>{_escape(request_id)}</RequestID></Response>"
    ).encode()


# --- paging ----------------------------------------------------------------------------------


def encode_token(kind: str, position: Any) -> str:
    """An opaque NextToken: where a listing of `kind` continues."""
    return base64.urlsafe_b64encode(orjson.dumps([kind, position])).decode().rstrip("=")


def decode_token(token: str | None, kind: str) -> Any:
    """The position in a NextToken made by `encode_token` for `kind`; None for no token."""
    if not token:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        data = None
    if not isinstance(data, list) or len(data) != 2 or data[0] != kind:
        raise invalid("NextToken", token, "Use the NextToken of the previous answer.")
    return data[1]
