"""`stratus user ...`: EC2 API users, their quotas and access keys.

`user keys create` prints the secret access key once; nothing shows it again (the daemon
keeps it encrypted), so store it where the user's EC2 tools read it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from stratus.cli.client import StratusClient, connect
from stratus.cli.output import format_mb, format_time, print_json, stdout
from stratus.model.units import parse_size_mb

__all__ = ["user_app"]

user_app = typer.Typer(help="Manage EC2 API users and their access keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and delete a user's access keys.", no_args_is_help=True)
user_app.add_typer(keys_app, name="keys")

UserArg = Annotated[str, typer.Argument(metavar="NAME", help="user name", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]


def _segment(text: str) -> str:
    return quote(text, safe="")


def _quota_text(quota: dict[str, Any]) -> str:
    parts = []
    if quota.get("vms") is not None:
        parts.append(f"{quota['vms']} instances")
    if quota.get("cpu") is not None:
        parts.append(f"{quota['cpu']:g} CPUs")
    if quota.get("memory") is not None:
        parts.append(f"{format_mb(quota['memory'])} memory")
    return ", ".join(parts) or "no limit"


def _user(api: StratusClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = api.request("GET", f"/users/{_segment(name)}")
    return found


@user_app.command("create")
def create(
    ctx: typer.Context,
    name: UserArg,
    quota_vms: Annotated[
        int | None, typer.Option(min=0, help="instances (not terminated) at most")
    ] = None,
    quota_cpu: Annotated[float | None, typer.Option(min=0, help="CPUs of them all at most")] = None,
    quota_memory: Annotated[
        str | None, typer.Option(help="memory of them all at most (MB, or e.g. 16G)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a user of the EC2 API, with an optional quota on their instances."""
    quota: dict[str, Any] = {"vms": quota_vms, "cpu": quota_cpu}
    if quota_memory is not None:
        quota["memory"] = parse_size_mb(quota_memory, what="--quota-memory")
    body: dict[str, Any] = {"name": name}
    if any(value is not None for value in quota.values()):
        body["quota"] = quota
    with connect(ctx.obj) as api:
        user = api.request("POST", "/users", json=body)
    if as_json:
        print_json(user)
        return
    stdout.print(
        f"user {user['name']} created (account {user['owner_id']}, quota: "
        f"{_quota_text(user['quota'])}); give it a key with `stratus user keys create {name}`"
    )


@user_app.command("list")
def list_users(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List every EC2 user with their quota and number of access keys."""
    with connect(ctx.obj) as api:
        users = api.request("GET", "/users")["items"]
    if as_json:
        print_json(users)
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ACCOUNT", "QUOTA", "KEYS", "CREATED"):
        table.add_column(column)
    for user in users:
        table.add_row(
            user["name"],
            user["owner_id"],
            _quota_text(user["quota"]),
            str(len(user["access_keys"])),
            format_time(user["created"]),
        )
    stdout.print(table)


@user_app.command("show")
def show(ctx: typer.Context, name: UserArg, as_json: JsonFlag = False) -> None:
    """Show a user: account id, quota and access key ids (never their secrets)."""
    with connect(ctx.obj) as api:
        user = _user(api, name)
    if as_json:
        print_json(user)
        return
    stdout.print(f"user     {user['name']}")
    stdout.print(f"account  {user['owner_id']}")
    stdout.print(f"quota    {_quota_text(user['quota'])}")
    stdout.print(f"created  {format_time(user['created'])}")
    stdout.print(f"keys     {', '.join(user['access_keys']) or '-'}")


@user_app.command("delete")
def delete(ctx: typer.Context, name: UserArg) -> None:
    """Delete a user with their keys, key pairs, groups and addresses (refused while
    they have instances that are not terminated)."""
    with connect(ctx.obj) as api:
        api.request("DELETE", f"/users/{_segment(name)}")
    stdout.print(f"user {name} deleted")


@keys_app.command("create")
def create_key(ctx: typer.Context, name: UserArg, as_json: JsonFlag = False) -> None:
    """Create an access key; its secret is printed now and never again."""
    with connect(ctx.obj) as api:
        key = api.request("POST", f"/users/{_segment(name)}/keys")
    if as_json:
        print_json(key)
        return
    stdout.print(f"AccessKeyId      {key['access_key_id']}")
    stdout.print(f"SecretAccessKey  {key['secret_access_key']}")
    stdout.print("Store the secret now: Stratus will not show it again.", style="yellow")


@keys_app.command("list")
def list_keys(ctx: typer.Context, name: UserArg, as_json: JsonFlag = False) -> None:
    """List a user's access key ids."""
    with connect(ctx.obj) as api:
        keys = api.request("GET", f"/users/{_segment(name)}/keys")["items"]
    if as_json:
        print_json(keys)
        return
    for key in keys:
        stdout.print(f"{key['access_key_id']}  {format_time(key['created'])}")


@keys_app.command("delete")
def delete_key(
    ctx: typer.Context,
    key_id: Annotated[
        str, typer.Argument(metavar="KEYID", help="access key id", show_default=False)
    ],
) -> None:
    """Delete an access key: requests signed with it fail from now on."""
    with connect(ctx.obj) as api:
        api.request("DELETE", f"/access-keys/{_segment(key_id)}")
    stdout.print(f"access key {key_id} deleted")
