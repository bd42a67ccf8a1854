"""Parsing of sizes (memory, disk) given as numbers or with a unit."""

from __future__ import annotations

import re

from stratus.model.errors import InvalidInput

__all__ = ["parse_size_mb"]

_UNITS_MB = {
    "": 1.0,
    "B": 1.0 / (1024 * 1024),
    "K": 1.0 / 1024,
    "KB": 1.0 / 1024,
    "KIB": 1.0 / 1024,
    "M": 1.0,
    "MB": 1.0,
    "MIB": 1.0,
    "G": 1024.0,
    "GB": 1024.0,
    "GIB": 1024.0,
    "T": 1024.0 * 1024,
    "TB": 1024.0 * 1024,
    "TIB": 1024.0 * 1024,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size_mb(value: str | int | float, *, what: str = "size") -> int:
    """Return a size in MiB: a bare number is MiB, else `512M`, `2G`, `1.5GiB`..."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a number of MB or a size like 2G, not {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(value)
        if not match:
            raise InvalidInput(
                f"{what} {value!r} is not a size", hint="write a number of MB, or e.g. 512M, 2G"
            )
        number, unit = float(match.group(1)), match.group(2).upper()
    if unit not in _UNITS_MB:
        raise InvalidInput(f"{what} {value!r} has an unknown unit {unit!r}", hint="use M, G or T")
    if number < 0:
        raise InvalidInput(f"{what} must not be negative")
    return round(number * _UNITS_MB[unit])
