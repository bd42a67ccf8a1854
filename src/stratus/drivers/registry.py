"""Driver registry: an explicit name -> (module, class) map, plus entry points.

Modules are imported only when a driver is first used; an unknown name fails at once
with the list of known ones.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from stratus.drivers.base import Driver
from stratus.model.errors import InvalidInput

__all__ = ["BUILTIN_DRIVERS", "known_drivers", "load_driver_class"]

BUILTIN_DRIVERS: dict[str, tuple[str, str]] = {
    "dummy": ("stratus.drivers.dummy", "DummyDriver"),
    "ec2": ("stratus.drivers.ec2", "Ec2Driver"),
    "libcloud": ("stratus.drivers.libcloud_driver", "LibcloudDriver"),
    "lxc": ("stratus.drivers.lxc", "LxcDriver"),
    "qemu": ("stratus.drivers.qemu", "QemuDriver"),
}

_ENTRY_POINT_GROUP = "stratus.drivers"


def known_drivers() -> list[str]:
    """Names of every driver: built-in ones and those of installed plugins."""
    plugins = {ep.name for ep in entry_points(group=_ENTRY_POINT_GROUP)}
    return sorted(set(BUILTIN_DRIVERS) | plugins)


def load_driver_class(name: str) -> type[Driver]:
    """Import and return the driver class registered under `name`."""
    if name in BUILTIN_DRIVERS:
        module_name, class_name = BUILTIN_DRIVERS[name]
        cls: Any = getattr(importlib.import_module(module_name), class_name)
    else:
        matches = [ep for ep in entry_points(group=_ENTRY_POINT_GROUP) if ep.name == name]
        if not matches:
            raise InvalidInput(
                f"unknown driver {name!r}", hint=f"known drivers: {', '.join(known_drivers())}"
            )
        cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise InvalidInput(f"driver {name!r} does not implement stratus.drivers.base.Driver")
    return cls
