"""`stratus host ...`: add, list, show, credentials, enable/disable/offline, delete hosts."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from stratus.cli.client import connect
from stratus.cli.output import print_host, print_host_table, print_json, stdout
from stratus.model.credentials import check_secrets
from stratus.model.errors import InvalidInput
from stratus.model.records import HostState

__all__ = ["host_app"]

host_app = typer.Typer(
    help="Add, inspect and manage the hosts VMs run on.",
    no_args_is_help=True,
)

HostRef = Annotated[str, typer.Argument(metavar="HOST", help="host name or id", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
CREDENTIALS_HELP = (
    "file of credentials for the driver, or - for stdin: a JSON object, or KEY=VALUE lines "
    "(keys lower-cased, # comments); kept off the command line, stored encrypted, never shown"
)


def _key_values(values: list[str], what: str) -> dict[str, str]:
    """Parse repeated K=V options."""
    parsed: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=f"--{what}")
        parsed[key.strip()] = value.strip()
    return parsed


def read_credentials(text: str, source: str) -> dict[str, str]:
    """Credentials from a JSON object or KEY=VALUE lines; errors never quote a value."""
    if text.lstrip().startswith("{"):
        try:
            loaded: Any = json.loads(text)
        except ValueError:
            raise typer.BadParameter(
                f"{source} is not valid JSON", param_hint="credentials"
            ) from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise typer.BadParameter(
                f"{source} must be a JSON object of strings", param_hint="credentials"
            )
        return {str(key): value for key, value in loaded.items()}
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"{source} line {number} is not KEY=VALUE", param_hint="credentials"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[key.strip().lower()] = value
    return found


def _credentials_file(file: typer.FileText) -> dict[str, str]:
    source = "stdin" if file.name == "<stdin>" else file.name
    try:
        return check_secrets(read_credentials(file.read(), source))
    except InvalidInput as exc:
        raise typer.BadParameter(f"{source}: {exc}", param_hint="credentials") from None


@host_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="a unique host name", show_default=False)
    ],
    driver: Annotated[str, typer.Option(help="driver that runs its VMs, e.g. dummy")],
    cpu: Annotated[
        float | None,
        typer.Option(min=0.01, help="physical CPUs offered to VMs [default: 8; clouds: quotas]"),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="memory offered to VMs: MB or 512M, 16G... [default: 16G; clouds: quotas]"
        ),
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="a cloud's region, e.g. eu-west-1 (option region)")
    ] = None,
    capacity: Annotated[
        str | None,
        typer.Option(help="a cloud's quota per instance type, e.g. m1.small=4,m1.large=1"),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="an EC2-compatible API's URL (option endpoint)")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE label (repeatable), e.g. COUNTRY=ES")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE driver option (repeatable)")
    ] = None,
    credentials: Annotated[
        typer.FileText | None, typer.Option(metavar="FILE", help=CREDENTIALS_HELP)
    ] = None,
) -> None:
    """Add a host; the monitor probes it and makes it schedulable (MONITORED)."""
    labels = _key_values(label or [], "label")
    options = _key_values(option or [], "option")
    shortcuts = {"region": region, "capacity": capacity, "endpoint": endpoint}
    options.update({key: value for key, value in shortcuts.items() if value is not None})
    if "capacity" not in options:  # a hypervisor: its capacity, 8 CPUs and 16G by default
        cpu, memory = cpu or 8.0, memory or "16G"
    fields: dict[str, Any] = {"labels": labels, "options": options}
    if cpu is not None:
        fields["cpu"] = cpu
    if memory is not None:
        fields["memory"] = memory
    if credentials is not None:
        fields["secrets"] = _credentials_file(credentials)
    with connect(ctx.obj) as api:
        host = api.add_host(name=name, driver=driver, **fields)
    stored = ", credentials stored" if host.get("credentials") else ""
    stdout.print(f"host {host['name']} added (id {host['id']}, {host['state']}{stored})")


@host_app.command("credentials")
def set_credentials(
    ctx: typer.Context,
    ref: HostRef,
    credentials: Annotated[
        typer.FileText, typer.Argument(metavar="FILE", help=CREDENTIALS_HELP, show_default=False)
    ],
) -> None:
    """Replace a host's credentials (an empty file removes them)."""
    secrets = _credentials_file(credentials)
    with connect(ctx.obj) as api:
        host = api.set_host_credentials(ref, secrets)
    state = "stored" if host.get("credentials") else "removed"
    stdout.print(f"host {host['name']}: credentials {state}")


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
