"""`stratus host ...`: add, list, show, enable/disable/offline and delete hosts."""

from __future__ import annotations

from typing import Annotated

import typer

from stratus.cli.client import connect
from stratus.cli.output import print_host, print_host_table, print_json, stdout
from stratus.model.records import HostState

__all__ = ["host_app"]

host_app = typer.Typer(
    help="Add, inspect and manage the hosts VMs run on.",
    no_args_is_help=True,
)

HostRef = Annotated[str, typer.Argument(metavar="HOST", help="host name or id", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _key_values(values: list[str], what: str) -> dict[str, str]:
    """Parse repeated K=V options."""
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=f"--{what}")
        parsed[key.strip()] = value.strip()
    return parsed


@host_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="a unique host name", show_default=False)
    ],
    driver: Annotated[str, typer.Option(help="driver that runs its VMs, e.g. dummy")],
    cpu: Annotated[float, typer.Option(min=0.01, help="physical CPUs offered to VMs")] = 8.0,
    memory: Annotated[str, typer.Option(help="memory offered to VMs: MB or 512M, 16G...")] = "16G",
    label: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE label (repeatable), e.g. COUNTRY=ES")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE driver option (repeatable)")
    ] = None,
) -> None:
    """Add a host; the monitor probes it and makes it schedulable (MONITORED)."""
    labels = _key_values(label or [], "label")
    options = _key_values(option or [], "option")
    with connect(ctx.obj) as api:
        host = api.add_host(
            name=name, driver=driver, cpu=cpu, memory=memory, labels=labels, options=options
        )
    stdout.print(f"host {host['name']} added (id {host['id']}, {host['state']})")


@host_app.command("list")
def list_hosts(
    ctx: typer.Context,
    state: Annotated[HostState | None, typer.Option(help="only hosts in this state")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List every host with its used and total capacity."""
    with connect(ctx.obj) as api:
        hosts = list(api.iter_hosts(state=state.value if state else None))
    if as_json:
        print_json(hosts)
    else:
        print_host_table(hosts)


@host_app.command("show")
def show(ctx: typer.Context, ref: HostRef, as_json: JsonFlag = False) -> None:
    """Show a host: capacity, labels, options (secrets masked), VMs and recent events."""
    with connect(ctx.obj) as api:
        host = api.host(ref)
    if as_json:
        print_json(host)
    else:
        print_host(host)


def _operation(operation: str, summary: str) -> None:
    @host_app.command(operation, help=summary)
    def command(ctx: typer.Context, ref: HostRef) -> None:
        with connect(ctx.obj) as api:
            host = api.host_operation(ref, operation)
        stdout.print(f"host {host['name']} is {host['state']}")


for _name, _summary in (
    ("enable", "Make a disabled or offline host schedulable again."),
    ("disable", "Keep monitoring a host but place no new VMs on it."),
    ("offline", "Stop monitoring a host and place no new VMs on it."),
):
    _operation(_name, _summary)


@host_app.command("delete")
def delete(ctx: typer.Context, ref: HostRef) -> None:
    """Delete a host no VM occupies."""
    with connect(ctx.obj) as api:
        api.delete_host(ref)
    stdout.print(f"host {ref} deleted")
