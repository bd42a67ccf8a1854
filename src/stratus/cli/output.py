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
    "format_bytes",
    "format_mb",
    "format_time",
    "print_error",
    "print_host",
    "print_host_table",
    "print_image",
    "print_image_table",
    "print_json",
    "print_vm",
    "print_vm_table",
    "print_vnet",
    "print_vnet_table",
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


def format_time(value: str | None) -> str:
    """An API timestamp to the second, for people: 2026-11-21 18:08:33 (UTC)."""
    return "-" if not value else value[:19].replace("T", " ")


def truncate(text: str, width: int = 48) -> str:
    """One line of at most `width` characters, with an ellipsis when cut."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _state(state: str | None) -> Text:
    return Text(state or "-", style=_STATE_STYLES.get(state or "", ""))


def _cell(value: Any) -> Text:
    return Text("-" if value is None or value == "" else str(value))


_RIGHT = frozenset({"ID", "CPU", "MEM", "VMS"})  # right-aligned columns


def _table(title: str | None, columns: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", box=None)
    for column in columns:
        table.add_column(column, justify="right" if column in _RIGHT else "left")
    return table


def print_vm_table(vms: Iterable[Mapping[str, Any]]) -> None:
    _print_list(
        ("ID", "NAME", "STATE", "HOST", "CPU", "MEM", "REASON"),
        [
            (
                str(vm["id"]),
                vm["name"],
                vm["state"],
                vm["host"] or "-",
                f"{vm['cpu']:g}",
                format_mb(vm["memory"]),
                truncate(vm["reason"]) or "-",
            )
            for vm in vms
        ],
    )


_RICH_ROWS = 1000  # Rich measures every cell: 20,000 rows take 8 s, plain columns 0.1 s


def _print_list(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A listing: a Rich table (states coloured), or plain aligned columns when it is long."""
    state = columns.index("STATE")
    if len(rows) <= _RICH_ROWS:
        table = _table(None, columns)
        for row in rows:
            table.add_row(*(_state(v) if i == state else Text(v) for i, v in enumerate(row)))
        stdout.print(table)
        return
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    right = {i for i, column in enumerate(columns) if column in _RIGHT}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    typer.echo("\n".join([line(columns), *(line(row) for row in rows)]))


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
                ("address", (vm.get("info") or {}).get("address")),
                ("ports", _ports(vm)),
                ("ready", (vm.get("info") or {}).get("ready")),
                ("created", format_time(vm["created"])),
                ("allowed", ", ".join(vm.get("allowed_operations", []))),
            ]
        )
    )
    history = _table("History", ("SEQ", "HOST", "START", "END", "REASON", "END REASON"))
    for record in vm.get("history", []):
        history.add_row(
            _cell(record["seq"]),
            _cell(record["host"]),
            _cell(format_time(record["start"])),
            _cell(format_time(record["end"])),
            _cell(record["reason"]),
            _cell(record["end_reason"]),
        )
    stdout.print()
    stdout.print(history if history.row_count else Text("History: never placed", style="dim"))
    _print_events(vm.get("events", []))


def _ports(vm: Mapping[str, Any]) -> str | None:
    """Forwarded guest ports, e.g. "80 -> 127.0.0.1:41234"."""
    ports = (vm.get("info") or {}).get("ports") or {}
    return ", ".join(f"{guest} -> {host}" for guest, host in ports.items()) or None


def _print_events(events: Sequence[Mapping[str, Any]], last: int = 10) -> None:
    if not events:
        return
    table = _table(f"Last {min(last, len(events))} events", ("TIME", "FROM", "TO", "REASON"))
    for event in events[-last:]:
        table.add_row(
            _cell(format_time(event["time"])),
            _state(event["from"]),
            _state(event["to"]),
            _cell(event["reason"]),
        )
    stdout.print()
    stdout.print(table)


def print_host_table(hosts: Iterable[Mapping[str, Any]]) -> None:
    _print_list(
        ("ID", "NAME", "DRIVER", "STATE", "CPU", "MEM", "VMS", "REASON"),
        [
            (
                str(host["id"]),
                host["name"],
                host["driver"],
                host["state"],
                f"{host['used_cpu']:g}/{host['cpu']:g}",
                f"{format_mb(host['used_memory'])}/{format_mb(host['memory'])}",
                str(host["vms"]),
                truncate(host["reason"], 40) or "-",
            )
            for host in hosts
        ],
    )


def _pairs(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(mapping.items())) or "-"


def _orphans(orphans: list[str]) -> str | Text:
    if not orphans:
        return "-"
    return Text(
        f"{', '.join(orphans)} (instances Stratus did not make: terminate them at the"
        " provider if nobody needs them)",
        style="yellow",
    )


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
                ("credentials", host.get("credentials") or "-"),
                ("monitoring", _pairs(host["monitoring"])),
                ("orphans", _orphans(host.get("orphans") or [])),
                ("last monitored", format_time(host["last_monitored"])),
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


# images


def format_bytes(size: int | None) -> str:
    """1536 -> 1.5K, 10737418240 -> 10G; sizes of images and files."""
    if size is None:
        return "-"
    for unit, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + unit
    return f"{size}B"


_STATE_STYLES.update({"READY": "green", "USED": "green", "LOCKED": "yellow"})


def print_image_table(images: Iterable[Mapping[str, Any]]) -> None:
    _print_list(
        ("ID", "NAME", "TYPE", "STATE", "FORMAT", "SIZE", "VMS", "REASON"),
        [
            (
                str(image["id"]),
                image["name"],
                image["type"] + (" (persistent)" if image["persistent"] else ""),
                image["state"],
                image["format"] or "-",
                format_bytes(image["size"]) if image["size"] else "-",
                str(len(image["vms"])),
                truncate(image["reason"], 40) or "-",
            )
            for image in images
        ],
    )


def print_image(image: Mapping[str, Any]) -> None:
    """An image's state, what it is, where it came from and which VMs use it."""
    stdout.print(Text(f"Image {image['id']}: {image['name']}", style="bold"))
    state = _state(image["state"])
    if image["state"] == "LOCKED":
        state.append(f" ({image['progress']:.0%})", style="")
    size = f"{format_bytes(image['size'])} ({format_bytes(image['actual_size'])} on disk)"
    fields = _fields(
        [
            ("state", state),
            ("reason", image["reason"]),
            ("type", image["type"] + (", persistent" if image["persistent"] else "")),
            ("format", image["format"]),
            ("size", size if image["size"] else None),
            ("checksum", image["checksum"]),
            ("source", image["source"]),
            ("path", image["path"]),
            ("description", image["description"]),
            ("used by VMs", ", ".join(str(vm) for vm in image["vms"])),
            ("created", format_time(image["created"])),
        ]
    )
    fields.columns[1].overflow = "fold"  # paths and checksums whole, never cut short
    stdout.print(fields)
    _print_events(image.get("events", []))


# virtual networks

_LEASES_SHOWN = 1000  # `vnet show` lists at most this many leases; --json has them all


def _network_text(vnet: Mapping[str, Any]) -> str:
    """192.168.150.0/24, or "-" when the network has no address set."""
    address, mask = vnet.get("network_address"), vnet.get("network_mask")
    if not address or not mask:
        return "-"
    prefix = sum(bin(int(part)).count("1") for part in str(mask).split("."))
    return f"{address}/{prefix}"


def print_vnet_table(vnets: Iterable[Mapping[str, Any]]) -> None:
    table = _table(None, ("ID", "NAME", "DRIVER", "BRIDGE", "NETWORK", "USED", "HELD", "FREE"))
    for column in table.columns[5:]:
        column.justify = "right"
    for vnet in vnets:
        table.add_row(
            *(
                _cell(value)
                for value in (
                    vnet["id"], vnet["name"], vnet["driver"], vnet["bridge"],
                    _network_text(vnet), vnet["used"], vnet["held"], vnet["free"],
                )
            )
        )  # fmt: skip
    stdout.print(table)


def print_vnet(vnet: Mapping[str, Any]) -> None:
    """A network's settings, its address ranges, and its used and held addresses."""
    stdout.print(Text(f"Network {vnet['id']}: {vnet['name']}", style="bold"))
    stdout.print(
        _fields(
            [
                ("driver", vnet["driver"]),
                ("bridge", vnet["bridge"]),
                ("namespace", vnet["netns"]),
                ("network", _network_text(vnet)),
                ("gateway", vnet["gateway"]),
                ("dns", vnet["dns"]),
                ("mac prefix", vnet["mac_prefix"]),
                ("guest ports", " ".join(str(port) for port in vnet["guest_ports"])),
                (
                    "addresses",
                    f"{vnet['size']}: {vnet['used']} used, {vnet['held']} held, "
                    f"{vnet['free']} free",
                ),
                ("description", vnet["description"]),
                ("created", format_time(vnet["created"])),
            ]
        )
    )
    ranges = _table(
        "Address ranges", ("AR", "TYPE", "SIZE", "FIRST IP", "FIRST MAC", "IPV6 PREFIX")
    )
    for ar in vnet["ranges"]:
        ranges.add_row(
            _cell(ar["id"]),
            _cell(ar["type"]),
            _cell(ar["size"]),
            _cell(ar["first_ip"]),
            _cell(ar["first_mac"]),
            _cell(ar["global_prefix"] or ar["ula_prefix"]),
        )
    stdout.print()
    stdout.print(ranges)
    leases = vnet.get("leases", [])
    if not leases:
        stdout.print(Text("\nLeases: none used or held", style="dim"))
        return
    table = _table("Leases", ("AR", "IP", "MAC", "IPV6", "STATE", "VM", "NIC"))
    for lease in leases[:_LEASES_SHOWN]:
        table.add_row(
            _cell(lease["ar"]),
            _cell(lease["ip"]),
            _cell(lease["mac"]),
            _cell(lease["ip6"]),
            Text(lease["state"], style="yellow" if lease["state"] == "held" else "green"),
            _cell(lease["vm_id"]),
            _cell(lease["nic_index"]),
        )
    stdout.print()
    stdout.print(table)
    if len(leases) > _LEASES_SHOWN:
        stdout.print(Text(f"... and {len(leases) - _LEASES_SHOWN} more: see --json", style="dim"))
