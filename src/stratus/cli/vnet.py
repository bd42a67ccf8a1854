"""`stratus vnet ...`: create, list, show and delete virtual networks; hold and release
addresses."""

from __future__ import annotations

from typing import Annotated

import typer

from stratus.cli.client import connect
from stratus.cli.output import print_json, print_vnet, print_vnet_table, print_warning, stdout
from stratus.cli.overlay import overlay_app
from stratus.cli.vm import TemplateFormat

__all__ = ["vnet_app"]

vnet_app = typer.Typer(
    help="Create and manage virtual networks and their leases.", no_args_is_help=True
)
vnet_app.add_typer(overlay_app, name="overlay")


VnetRef = Annotated[
    str, typer.Argument(metavar="NET", help="network name or id", show_default=False)
]
AddressArg = Annotated[
    str,
    typer.Argument(
        metavar="ADDRESS", help="an IPv4, IPv6 or MAC address of the network", show_default=False
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@vnet_app.command("create")
def create(
    ctx: typer.Context,
    template: Annotated[
        typer.FileText,
        typer.Argument(metavar="FILE", help="network template, or - for stdin", show_default=False),
    ],
    fmt: Annotated[
        TemplateFormat, typer.Option("--format", help="template syntax (auto: detect it)")
    ] = TemplateFormat.AUTO,
) -> None:
    """Create a network from a template (NAME, BRIDGE or VN_MAD, NETWORK_ADDRESS, AR...)."""
    text = template.read()
    with connect(ctx.obj) as api:
        vnet = api.create_vnet(text, fmt=fmt.value)
    for warning in vnet["warnings"]:
        print_warning(warning)
    stdout.print(
        f"network {vnet['name']} created (id {vnet['id']}, {vnet['driver']}, "
        f"{vnet['size']} addresses)"
    )


@vnet_app.command("list")
def list_vnets(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List every network with its used, held and free addresses."""
    with connect(ctx.obj) as api:
        vnets = list(api.iter_vnets())
    if as_json:
        print_json(vnets)
    else:
        print_vnet_table(vnets)


@vnet_app.command("show")
def show(ctx: typer.Context, ref: VnetRef, as_json: JsonFlag = False) -> None:
    """Show a network: settings, address ranges, and each used or held address."""
    with connect(ctx.obj) as api:
        vnet = api.vnet(ref)
    if as_json:
        print_json(vnet)
    else:
        print_vnet(vnet)


@vnet_app.command("delete")
def delete(ctx: typer.Context, ref: VnetRef) -> None:
    """Delete a network no VM has a lease on (its held addresses go with it)."""
    with connect(ctx.obj) as api:
        api.delete_vnet(ref)
    stdout.print(f"network {ref} deleted")


@vnet_app.command("hold")
def hold(ctx: typer.Context, ref: VnetRef, address: AddressArg) -> None:
    """Keep a free address from being leased to VMs."""
    with connect(ctx.obj) as api:
        held = api.vnet_address(ref, "hold", address)
    stdout.print(f"{_shown(held)} of network {held['network']} is on hold")


@vnet_app.command("release")
def release(ctx: typer.Context, ref: VnetRef, address: AddressArg) -> None:
    """Make a held address free again."""
    with connect(ctx.obj) as api:
        freed = api.vnet_address(ref, "release", address)
    stdout.print(f"{_shown(freed)} of network {freed['network']} is free")


def _shown(address: dict[str, str | None]) -> str:
    """192.168.150.100 (02:00:c0:a8:96:64), or the MAC alone."""
    ip = address.get("ip") or address.get("ip6")
    return f"{ip} ({address['mac']})" if ip else str(address["mac"])
