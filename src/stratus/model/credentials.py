"""Host credentials (cloud keys, passwords): what a valid set is, and what looks like one.

Credentials travel apart from a host's options: they are sealed at rest, handed to its
driver only, and never shown. So options whose names look like credentials are refused,
and every message here names keys, never values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from stratus.model.errors import InvalidInput

__all__ = [
    "MAX_SECRETS",
    "MAX_SECRET_VALUE",
    "SECRET_KEY_PATTERN",
    "check_no_secret_options",
    "check_secrets",
    "looks_secret",
]

MAX_SECRETS = 32  # credentials per host
MAX_SECRET_VALUE = 8192  # characters of one value (a PEM private key fits)
SECRET_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

_SECRET_NAME = re.compile(r"secret|password|passwd|key|token|credential", re.IGNORECASE)
_KEY = re.compile(SECRET_KEY_PATTERN)
#: Options whose names match but hold no secret: a key file's path, a key pair's name.
_NOT_SECRET = frozenset({"ssh_key", "ssh_known_hosts", "keypair", "key_name"})


def looks_secret(name: str) -> bool:
    """True for option names such as password, api_key, AuthToken, client-secret."""
    return name.lower() not in _NOT_SECRET and _SECRET_NAME.search(name) is not None


def check_no_secret_options(options: Mapping[str, object]) -> None:
    """InvalidInput naming the first option that looks like a credential."""
    suspects = sorted(name for name in options if looks_secret(name))
    if suspects:
        raise InvalidInput(
            f"option {suspects[0]!r} looks like a credential: options are shown to every user",
            hint="pass credentials as secrets (`stratus host add --credentials FILE`), "
            "which are stored encrypted and never shown",
        )


def check_secrets(secrets: Mapping[str, object]) -> dict[str, str]:
    """A valid set of credentials, as a plain dict; InvalidInput names the bad key only."""
    if not isinstance(secrets, Mapping):
        raise InvalidInput("credentials must map names to strings")
    if len(secrets) > MAX_SECRETS:
        raise InvalidInput(f"at most {MAX_SECRETS} credentials per host, got {len(secrets)}")
    checked: dict[str, str] = {}
    for key, value in secrets.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise InvalidInput(
                "a credential name must be a lower-case identifier (a-z, 0-9, _; at most 64)",
                hint="e.g. access_key_id, secret_access_key",
            )
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"credential {key!r} must be a non-empty string")
        if len(value) > MAX_SECRET_VALUE:
            raise InvalidInput(f"credential {key!r} is longer than {MAX_SECRET_VALUE} characters")
        checked[key] = value
    return checked
