"""`stratus vnet overlay ...`: join remote machines and sites to a network through a
tunnel hub (WireGuard or OpenVPN) that Stratus runs at the site."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from stratus.cli.client import ClientError, StratusClient, connect
from stratus.cli.output import format_bytes, format_time, print_json, stdout

__all__ = ["overlay_app"]

overlay_app = typer.Typer(
    help="Join remote VMs and sites to a network through an encrypted tunnel.",
    no_args_is_help=True,
)
peer_app = typer.Typer(
    help="Add and remove the peers of a network's overlay.", no_args_is_help=True
)
overlay_app.add_typer(peer_app, name="peer")

VnetRef = Annotated[
    str, typer.Argument(metavar="NET", help="network name or id", show_default=False)
]
PeerName = Annotated[str, typer.Argument(metavar="NAME", help="peer name", show_default=False)]


class Kind(StrEnum):
    WIREGUARD = "wireguard"
    OPENVPN = "openvpn"


def _path(ref: str, *rest: str) -> str:
    return "/".join([f"/vnets/{quote(ref, safe='')}/overlay", *(quote(r, safe="") for r in rest)])


@overlay_app.command("enable")
def enable(
    ctx: typer.Context,
    ref: VnetRef,
    endpoint: Annotated[
        str,
        typer.Option(
            "--endpoint",
            metavar="HOST:PORT",
            help="where peers reach the hub (its public address and UDP port)",
            show_default=False,
        ),
    ],
    kind: Annotated[Kind, typer.Option("--kind", help="tunnel kind")] = Kind.WIREGUARD,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            metavar="HOSTNAME",
            help="the Stratus host that runs the hub (default: this machine)",
        ),
    ] = None,
    listen_port: Annotated[
        int | None,
        typer.Option("--listen-port", min=1, max=65535, help="default: the endpoint's port"),
    ] = None,
) -> None:
    """Start a tunnel hub for a bridge network (inside its namespace when it has one)."""
    body = {"endpoint": endpoint, "kind": kind.value, "host": host, "listen_port": listen_port}
    with connect(ctx.obj) as api:
        overlay = api.request("POST", _path(ref), json=body)
    stdout.print(
        f"overlay of network {overlay['network']} enabled: {overlay['kind']} hub at "
        f"{overlay['endpoint']}, address {overlay['hub_address']}"
    )


@overlay_app.command("show")
def show(
    ctx: typer.Context,
    ref: VnetRef,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Show the hub and its peers with their latest handshakes (never a private key)."""
    with connect(ctx.obj) as api:
        overlay = api.request("GET", _path(ref))
    if as_json:
        print_json(overlay)
        return
    _print_overlay(overlay)


def _print_overlay(overlay: dict[str, Any]) -> None:
    hub = overlay["hub"]
    state = "up" if hub["up"] else f"DOWN ({hub['detail']})"
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in (
        ("NETWORK", f"{overlay['network']} ({overlay['subnet']})"),
        ("KIND", overlay["kind"]),
        ("ENDPOINT", f"{overlay['endpoint']} (listens on {overlay['listen_port']})"),
        ("HOST", overlay["host"] or "this machine"),
        ("HUB", f"{overlay['hub_address']}, {state}"),
        ("PUBLIC KEY", overlay["public_key"] or "-"),
    ):
        grid.add_row(key, str(value))
    stdout.print(grid)
    table = Table(title="PEERS", title_justify="left", header_style="bold", box=None)
    for column in ("NAME", "KIND", "VM", "ALLOWED IPS", "HANDSHAKE", "RX", "TX", "ENDPOINT"):
        table.add_column(column)
    for peer in overlay["peers"]:
        live = peer["status"] or {}
        table.add_row(
            peer["name"],
            peer["kind"],
            str(peer["vm_id"]) if peer["vm_id"] is not None else "-",
            peer["allowed_ips"],
            format_time(live.get("latest_handshake")) if live.get("latest_handshake") else "never",
            format_bytes(live.get("rx_bytes")) if live else "-",
            format_bytes(live.get("tx_bytes")) if live else "-",
            live.get("endpoint") or "-",
        )
    stdout.print(table)


@overlay_app.command("disable")
def disable(ctx: typer.Context, ref: VnetRef) -> None:
    """Stop the hub and forget its hand-added peers (refused while VMs are peers)."""
    with connect(ctx.obj) as api:
        api.request("DELETE", _path(ref))
    stdout.print(f"overlay of network {ref} disabled")


@peer_app.command("add")
def add_peer(
    ctx: typer.Context,
    ref: VnetRef,
    name: PeerName,
    site_subnet: Annotated[
        str | None,
        typer.Option(
            "--site-subnet",
            metavar="CIDR",
            help="gateway mode: the subnet behind this site's gateway, e.g. 10.2.0.0/24",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="write the configuration here (mode 0600)"),
    ] = None,
) -> None:
    """Add a remote machine or site; its configuration (with its private key) is printed
    once, or written to --out: Stratus never shows it again."""
    body = {"name": name, "site_subnet": site_subnet}
    if out is None:
        with connect(ctx.obj) as api:
            created = _add(api, ref, body)
        typer.echo(str(created["config"]), nl=False)
        return
    fd = _create_private(out)  # before the request: a peer's configuration is shown once
    try:
        with connect(ctx.obj) as api:
            created = _add(api, ref, body)
    except BaseException:
        os.close(fd)
        out.unlink(missing_ok=True)
        raise
    with os.fdopen(fd, "w") as handle:
        handle.write(str(created["config"]))
    peer = created["peer"]
    stdout.print(
        f"peer {peer['name']} added ({peer['allowed_ips']}); its {created['format']} "
        f"configuration is in {out}"
    )


def _add(api: StratusClient, ref: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = api.request("POST", _path(ref, "peers"), json=body)
    return created


def _create_private(path: Path) -> int:
    """A new file readable by its owner only; an existing one is refused."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ClientError(f"{path} exists: choose another --out (nothing was added)") from None
    except OSError as exc:
        raise ClientError(f"cannot create {path}: {exc.strerror or exc}") from None


@peer_app.command("remove")
def remove_peer(ctx: typer.Context, ref: VnetRef, name: PeerName) -> None:
    """Take a hand-added peer off the hub and give its address back."""
    with connect(ctx.obj) as api:
        api.request("DELETE", _path(ref, "peers", name))
    stdout.print(f"peer {name} removed from the overlay of network {ref}")
