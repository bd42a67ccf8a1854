"""`stratus zone ...`: partner Stratus zones as cloud hosts of this one.

A zone is an `ec2` host pointed at the partner's EC2 API (`<its endpoint>/ec2`) with an
access key the partner made for this zone (`stratus user keys create` there), and the
labels ZONE=<name> and PROVIDER=stratus. VMs burst into it like into any cloud; their
images follow them (imported there from signed links of this zone, checksums verified).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from stratus.cli.client import connect
from stratus.cli.host import JsonFlag
from stratus.cli.output import print_host_table, print_json, stdout

__all__ = ["zone_app"]

zone_app = typer.Typer(help="Partner Stratus zones that VMs burst into.", no_args_is_help=True)

SECRET_ENV = "STRATUS_ZONE_SECRET"


@zone_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="a unique host name for the zone")],
    endpoint: Annotated[
        str, typer.Option(help="the partner's EC2 API, e.g. http://zone-b:8421/ec2")
    ],
    access_key: Annotated[str, typer.Option(help="the access key id the partner gave you")],
    secret: Annotated[
        str | None,
        typer.Option(
            help=f"its secret key; better from ${SECRET_ENV} or --secret-file, which keep it "
            "out of the process list",
            show_default=False,
        ),
    ] = None,
    secret_file: Annotated[
        typer.FileText | None,
        typer.Option(metavar="FILE", help="a file holding the secret key (or - for stdin)"),
    ] = None,
    capacity: Annotated[
        str, typer.Option(help="the quota the partner grants you, per instance type")
    ] = "m1.small=4",
    region: Annotated[str, typer.Option(help="the partner's EC2 region name")] = "stratus-1",
    label: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE label (repeatable), e.g. COUNTRY=ES")
    ] = None,
) -> None:
    """Add a partner zone as a cloud host: VMs burst into it through its EC2 API."""
    key = _secret(secret, secret_file)
    if not endpoint.startswith(("http://", "https://")):
        raise typer.BadParameter("give an http:// or https:// URL", param_hint="--endpoint")
    labels = {"ZONE": name, "PROVIDER": "stratus"}
    for item in label or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[k.strip()] = v.strip()
    fields: dict[str, Any] = {
        "name": name,
        "driver": "ec2",
        "labels": labels,
        "options": {"endpoint": endpoint.rstrip("/"), "region": region, "capacity": capacity},
        "secrets": {"access_key_id": access_key, "secret_access_key": key},
    }
    with connect(ctx.obj) as api:
        host = api.add_host(**fields)
    stdout.print(f"zone {host['name']} added as host {host['id']} ({host['state']})")


def _secret(secret: str | None, secret_file: typer.FileText | None) -> str:
    if secret_file is not None:
        found = secret_file.read().strip()
    else:
        found = secret or os.environ.get(SECRET_ENV, "")
    if not found:
        raise typer.BadParameter(
            f"give the secret key with --secret-file FILE, ${SECRET_ENV} or --secret",
            param_hint="--secret",
        )
    return found


@zone_app.command("list")
def list_zones(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The partner zones, with the capacity used in each."""
    with connect(ctx.obj) as api:
        zones = [h for h in api.iter_hosts() if "ZONE" in (h.get("labels") or {})]
    if as_json:
        print_json(zones)
    else:
        print_host_table(zones)
