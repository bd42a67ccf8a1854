"""The `stratus` command: `serve` runs the daemon; `vm` and `host` talk to it over HTTP."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from stratus.cli.appliance import appliance_app
from stratus.cli.client import ClientError, default_data_dir
from stratus.cli.host import host_app
from stratus.cli.image import image_app
from stratus.cli.output import print_error
from stratus.cli.user import user_app
from stratus.cli.vm import vm_app
from stratus.cli.vnet import vnet_app
from stratus.cli.zone import zone_app
from stratus.model.errors import InvalidInput, StratusError

__all__ = ["app"]


class _StratusGroup(TyperGroup):
    """Reports expected errors as a red message and hint (exit 1), never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # ctx: the click Context that Typer vendors
        try:
            return super().invoke(ctx)
        except (ClientError, StratusError) as exc:
            print_error(exc.message, exc.hint)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="stratus",
    cls=_StratusGroup,
    help="Stratus: run VMs on a pool of hosts and clouds.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(vm_app, name="vm")
app.add_typer(host_app, name="host")
app.add_typer(image_app, name="image")
app.add_typer(vnet_app, name="vnet")
app.add_typer(appliance_app, name="appliance")
app.add_typer(user_app, name="user")
app.add_typer(zone_app, name="zone")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="STRATUS_DATA_DIR",
        help="the daemon's data dir [default: ~/.local/share/stratus]",
        show_default=False,
    ),
]


@app.callback()
def main(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """Stratus: run VMs on a pool of hosts and clouds.

    Commands reach the daemon at STRATUS_URL with STRATUS_TOKEN; when unset, they read
    the endpoint and admin.token files that `stratus serve` writes in its data dir.
    """
    ctx.obj = data_dir


class Policy(StrEnum):
    PACKING = "packing"
    STRIPING = "striping"
    LOAD = "load"
    FIXED = "fixed"
    LOCAL_FIRST = "local-first"  # public clouds only when no local host fits
    CHEAPEST = "cheapest"  # lowest price per hour (instance-type catalogue, PRICE labels)


@app.command()
def serve(
    ctx: typer.Context,
    data_dir: DataDir = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve the API on")] = "127.0.0.1:8421",
    db: Annotated[
        str | None,
        typer.Option(help="database URL [default: SQLite in the data dir]", show_default=False),
    ] = None,
    policy: Annotated[
        Policy | None, typer.Option(help="placement policy [default: packing]", show_default=False)
    ] = None,
    schedule_interval: Annotated[
        float | None,
        typer.Option(min=0.01, help="seconds between scheduling cycles [default: 1]"),
    ] = None,
    monitor_interval: Annotated[
        float | None, typer.Option(min=0.1, help="seconds between probes of a host [default: 10]")
    ] = None,
    pending_timeout: Annotated[
        float | None,
        typer.Option(min=0, help="fail VMs that waited this long for a host [default: never]"),
    ] = None,
    max_dispatch: Annotated[
        int, typer.Option(min=0, help="VMs placed per scheduling cycle at most (0: no limit)")
    ] = 0,
    max_per_host: Annotated[
        int, typer.Option(min=0, help="VMs placed on one host per cycle at most (0: no limit)")
    ] = 0,
    shutdown_timeout: Annotated[
        float,
        typer.Option(min=1, help="seconds a guest has to shut down on ACPI before a hard stop"),
    ] = 60.0,
    guest_url: Annotated[
        str | None,
        typer.Option(
            help="the API's URL as guests on bridge networks reach it, for READY reports "
            "(guests on user networks use their gateway)",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PROVIDER=USD",
            help="most the VMs on a provider's clouds may cost per hour, e.g. ec2=0.50; "
            "'*=2' caps all clouds together (repeatable)",
        ),
    ] = None,
    catalogue: Annotated[
        Path | None,
        typer.Option(
            help="a JSON instance-type catalogue that extends or overrides the shipped one",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="this daemon's URL as partner zones reach it (they fetch images of VMs "
            "that burst to them from signed links under it) [default: the listen address]",
            show_default=False,
        ),
    ] = None,
    ec2_region: Annotated[
        str, typer.Option(help="the EC2 API's region name (clients sign requests for it)")
    ] = "stratus-1",
    ec2_zone: Annotated[
        str | None,
        typer.Option(help="the EC2 API's availability zone [default: REGION + 'a']"),
    ] = None,
    ec2_network: Annotated[
        str | None,
        typer.Option(help="virtual network RunInstances attaches a NIC to [default: none]"),
    ] = None,
    ec2_address_pool: Annotated[
        str, typer.Option(help="CIDR that AllocateAddress takes elastic addresses from")
    ] = "203.0.113.0/24",
    ec2_import_dir: Annotated[
        list[Path] | None,
        typer.Option(help="directory RegisterImage may import local files from (repeatable)"),
    ] = None,
) -> None:
    """Run the daemon: engine loops and REST API, until Ctrl-C or SIGTERM.

    At start it writes <data dir>/endpoint and <data dir>/admin.token, which the other
    commands read when STRATUS_URL and STRATUS_TOKEN are unset.
    """
    from stratus import daemon  # the daemon stack is heavy: import it only to serve
    from stratus.ec2api import Ec2ApiConfig
    from stratus.engine.config import EngineConfig, Timeouts
    from stratus.model.catalogue import parse_catalogue, shipped_catalogue
    from stratus.scheduler import SchedulerConfig

    intervals = {
        "schedule_interval": schedule_interval,
        "monitor_interval": monitor_interval,
        "pending_timeout": pending_timeout,
    }
    settings: dict[str, Any] = {key: value for key, value in intervals.items() if value is not None}
    prices = shipped_catalogue()
    if catalogue is not None:
        try:
            prices = prices.updated(parse_catalogue(json.loads(catalogue.read_text())))
        except (ValueError, InvalidInput) as exc:
            raise typer.BadParameter(f"{catalogue}: {exc}", param_hint="--catalogue") from None
    settings["scheduler"] = SchedulerConfig(
        policy=(policy or Policy.PACKING).value,
        max_dispatch=max_dispatch,
        max_per_host=max_per_host,
        catalogue=prices,
        budgets=_budgets(budget or []),
    )
    settings["timeouts"] = Timeouts(shutdown=shutdown_timeout)
    if guest_url is not None:
        if not guest_url.startswith(("http://", "https://")):
            raise typer.BadParameter("give an http:// or https:// URL", param_hint="--guest-url")
        settings["guest_url"] = guest_url.rstrip("/")
    if public_url is not None:
        if not public_url.startswith(("http://", "https://")):
            raise typer.BadParameter("give an http:// or https:// URL", param_hint="--public-url")
        settings["public_url"] = public_url.rstrip("/")
    directory = data_dir or ctx.obj or default_data_dir()
    config = EngineConfig(**settings)
    ec2 = Ec2ApiConfig(
        region=ec2_region,
        zone=ec2_zone or "",
        network=ec2_network,
        address_pool=ec2_address_pool,
        import_dirs=tuple(ec2_import_dir or ()),
    )
    daemon.run(directory, listen, db, config, ec2)


def _budgets(items: list[str]) -> dict[str, float]:
    """`ec2=0.5` -> {"ec2": 0.5}; the scheduler checks the values."""
    budgets: dict[str, float] = {}
    for item in items:
        provider, _, value = item.partition("=")
        try:
            limit = float(value)
        except ValueError:
            limit = -1.0
        if not provider.strip() or limit < 0:
            raise typer.BadParameter(f"{item!r} is not PROVIDER=USD", param_hint="--budget")
        budgets[provider.strip()] = limit
    return budgets
