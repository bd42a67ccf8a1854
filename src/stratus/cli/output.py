"""How the CLI shows things: Rich tables for people, `--json` for scripts, errors in red."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = [
    "format_mb",
    "print_error",
    "print_host",
    "print_host_table",
    "print_json",
    "print_vm",
    "print_vm_table",
    "print_warning",
    "stdout",
    "truncate",
]

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

_STATE_STYLES = {
    "RUNNING": "green",
    "MONITORED": "green",
    "PENDING": "yellow",
    "HOLD": "yellow",
    "INIT": "yellow",
    "FAILED": "bold red",
    "ERROR": "bold red",
    "UNKNOWN": "red",
    "DONE": "dim",
    "OFFLINE": "dim",
    "DISABLED": "dim",
}


def print_json(data: Any) -> None:
    """Plain, indented JSON on stdout (no colours, no wrapping) for scripts."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_error(message: str, hint: str | None = None) -> None:
    """An error and what to do about it, in red on stderr."""
    stderr.print(Text.assemble(("Error: ", "bold red"), (message, "red")))
    if hint:
        stderr.print(Text(hint, style="red"))


def print_warning(message: str) -> None:
    stderr.print(Text.assemble(("Warning: ", "bold yellow"), message))


def format_mb(mb: float | None) -> str:
    """512 -> 512M, 2048 -> 2G, 1536 -> 1.5G."""
    if mb is None:
        return "-"
    for unit, size in (("T", 1024 * 1024), ("G", 1024)):
        if abs(mb) >= size:
            return f"{mb / size:.1f}".removesuffix(".0") + unit
    return f"{mb:g}M"


def truncate(text: str, width: int = 48) -> str:
    """One line of at most `width` characters, with an ellipsis when cut."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _state(state: str | None) -> Text:
    return Text(state or "-", style=_STATE_STYLES.get(state or "", ""))


def _cell(value: Any) -> Text:
    return Text("-" if value is None or value == "" else str(value))


def _table(title: str | None, columns: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", box=None)
    for column in columns:
        table.add_column(column, justify="right" if column in ("ID", "CPU", "MEM") else "left")
    return table


def print_vm_table(vms: Iterable[Mapping[str, Any]]) -> None:
    table = _table(None, ("ID", "NAME", "STATE", "HOST", "CPU", "MEM", "REASON"))
    for vm in vms:
        table.add_row(
            _cell(vm["id"]),
            _cell(vm["name"]),
            _state(vm["state"]),
            _cell(vm["host"]),
            _cell(f"{vm['cpu']:g}"),
            _cell(format_mb(vm["memory"])),
            _cell(truncate(vm["reason"])),
        )
    stdout.print(table)


def _fields(rows: Iterable[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value if isinstance(value, Text) else _cell(value))
    return grid


def print_vm(vm: Mapping[str, Any]) -> None:
    """A VM's fields, the reason for its state, its placements and recent events."""
    state = _state(vm["state"])
    if vm.get("action"):
        state.append(f" ({vm['action']} in progress)", style="")
    if vm.get("failed_state"):
        state.append(f" (failed in {vm['failed_state']})", style="")
    stdout.print(Text(f"VM {vm['id']}: {vm['name']}", style="bold"))
    stdout.print(
        _fields(
            [
                ("state", state),
                ("reason", vm["reason"]),
                ("host", vm["host"]),
                ("cpu / vcpu", f"{vm['cpu']:g} / {vm['vcpu']}"),
                ("memory", format_mb(vm["memory"])),
                ("requirements", vm["requirements"]),
                ("rank", vm["rank"]),
                ("deploy id", vm["deploy_id"]),
                ("created", vm["created"]),
                ("allowed", ", ".join(vm.get("allowed_operations", []))),
            ]
        )
    )
    history = _table("History", ("SEQ", "HOST", "START", "END", "REASON", "END REASON"))
    for record in vm.get("history", []):
        history.add_row(
            _cell(record["seq"]),
            _cell(record["host"]),
            _cell(record["start"]),
            _cell(record["end"]),
            _cell(record["reason"]),
            _cell(record["end_reason"]),
        )
    stdout.print()
    stdout.print(history if history.row_count else Text("History: never placed", style="dim"))
    _print_events(vm.get("events", []))


def _print_events(events: Sequence[Mapping[str, Any]], last: int = 10) -> None:
    if not events:
        return
    table = _table(f"Last {min(last, len(events))} events", ("TIME", "FROM", "TO", "REASON"))
    for event in events[-last:]:
        table.add_row(
            _cell(event["time"]), _state(event["from"]), _state(event["to"]), _cell(event["reason"])
        )
    stdout.print()
    stdout.print(table)


def print_host_table(hosts: Iterable[Mapping[str, Any]]) -> None:
    table = _table(None, ("ID", "NAME", "DRIVER", "STATE", "CPU", "MEM", "VMS", "REASON"))
    for host in hosts:
        table.add_row(
            _cell(host["id"]),
            _cell(host["name"]),
            _cell(host["driver"]),
            _state(host["state"]),
            _cell(f"{host['used_cpu']:g}/{host['cpu']:g}"),
            _cell(f"{format_mb(host['used_memory'])}/{format_mb(host['memory'])}"),
            _cell(host["vms"]),
            _cell(truncate(host["reason"], 40)),
        )
    stdout.print(table)


def _pairs(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(mapping.items())) or "-"


def print_host(host: Mapping[str, Any]) -> None:
    """A host's capacity, labels and options, and the VMs placed on it."""
    stdout.print(Text(f"Host {host['id']}: {host['name']}", style="bold"))
    stdout.print(
        _fields(
            [
                ("state", _state(host["state"])),
                ("reason", host["reason"]),
                ("driver", host["driver"]),
                ("cpu", f"{host['used_cpu']:g} used of {host['cpu']:g}"),
                (
                    "memory",
                    f"{format_mb(host['used_memory'])} used of {format_mb(host['memory'])}",
                ),
                ("labels", _pairs(host["labels"])),
                ("options", _pairs(host["options"])),
                ("monitoring", _pairs(host["monitoring"])),
                ("last monitored", host["last_monitored"]),
            ]
        )
    )
    vms = host.get("vms")
    if isinstance(vms, list) and vms:
        table = _table("VMs", ("ID", "NAME", "STATE"))
        for vm in vms:
            table.add_row(_cell(vm["id"]), _cell(vm["name"]), _state(vm["state"]))
        stdout.print()
        stdout.print(table)
    _print_events(host.get("events", []))
