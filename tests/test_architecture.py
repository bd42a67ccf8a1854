"""The floors of docs/architecture.md: lower floors never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "stratus"

# package -> the stratus packages it may import
ALLOWED: dict[str, set[str]] = {
    "model": {"model"},
    "store": {"model", "store"},
    "drivers": {"model", "drivers"},
    "scheduler": {"model", "scheduler"},
    "engine": {"model", "store", "drivers", "scheduler", "engine"},
    "api": {"model", "store", "engine", "api", "scheduler", "ec2api"},
    "ec2api": {"model", "store", "engine", "ec2api"},  # floor 5, beside api
    "cli": {"model", "cli", "engine", "scheduler", "appliance", "ec2api"},
    "appliance": {"model", "drivers", "appliance"},  # a front-end build tool, floor 2
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stratus."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("stratus."):
                    found.add(alias.name.split(".")[1])
    return found


def test_every_package_imports_only_its_own_floor_or_lower() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in (SRC / package).rglob("*.py"):
            extra = _imports(path) - allowed - ({"daemon"} if package == "cli" else set())
            if extra:
                wrong.append(f"{path.relative_to(SRC)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


# The hypervisor drivers themselves; the other modules in drivers/ are the parts they
# share (host access, SSH, probes, transfer, network devices, QMP, context CD-ROMs).
DRIVER_MODULES = {"dummy", "qemu", "lxc", "ec2", "libcloud_driver"}


def test_drivers_never_import_another_drivers_module() -> None:
    wrong = []
    for path in (SRC / "drivers").glob("*.py"):
        if path.stem == "registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.removeprefix("stratus.drivers.") in DRIVER_MODULES:
                wrong.append(f"{path.name} imports {module}")
    assert not wrong, wrong
