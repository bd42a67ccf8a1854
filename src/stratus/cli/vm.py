"""`stratus vm ...`: create, list, show and wait for VMs, and one command per operation."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from typing import Annotated, Any

import typer

from stratus.cli.client import ClientError, connect
from stratus.cli.output import print_json, print_vm, print_vm_table, print_warning, stdout
from stratus.model.lifecycle import RecoverMode, VmState

__all__ = ["vm_app"]

vm_app = typer.Typer(help="Create, inspect and operate VMs.", no_args_is_help=True)


class TemplateFormat(StrEnum):
    AUTO = "auto"
    CLASSIC = "classic"
    YAML = "yaml"
    JSON = "json"


VmId = Annotated[int, typer.Argument(min=1, metavar="ID", help="VM id", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
Hard = Annotated[bool, typer.Option("--hard", help="skip the graceful step")]
HostName = Annotated[
    str, typer.Argument(metavar="HOST", help="target host name or id", show_default=False)
]
_ENDS = {VmState.FAILED, VmState.DONE}  # states a VM does not leave by itself


@vm_app.command("create")
def create(
    ctx: typer.Context,
    template: Annotated[
        typer.FileText,
        typer.Argument(metavar="FILE", help="template file, or - for stdin", show_default=False),
    ],
    hold: Annotated[bool, typer.Option("--hold", help="keep the VMs out of scheduling")] = False,
    count: Annotated[int, typer.Option(min=1, max=1000, help="how many VMs to create")] = 1,
    fmt: Annotated[
        TemplateFormat, typer.Option("--format", help="template syntax (auto: detect it)")
    ] = TemplateFormat.AUTO,
) -> None:
    """Submit a VM template; print the id of each new VM, one per line."""
    text = template.read()
    with connect(ctx.obj) as api:
        result = api.submit(text, fmt=fmt.value, hold=hold, count=count)
    for warning in result["warnings"]:
        print_warning(warning)
    for vm in result["vms"]:
        typer.echo(vm["id"])


@vm_app.command("list")
def list_vms(
    ctx: typer.Context,
    state: Annotated[VmState | None, typer.Option(help="only VMs in this state")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List every VM (all pages), optionally only those in one state."""
    with connect(ctx.obj) as api:
        vms = list(api.iter_vms(state=state.value if state else None))
    if as_json:
        print_json(vms)
    else:
        print_vm_table(vms)


@vm_app.command("show")
def show(ctx: typer.Context, vm_id: VmId, as_json: JsonFlag = False) -> None:
    """Show a VM: its state and why, its host, placement history and recent events."""
    with connect(ctx.obj) as api:
        vm = api.vm(vm_id)
    if as_json:
        print_json(vm)
    else:
        print_vm(vm)


def _reached(vm: dict[str, Any], state: VmState) -> bool:
    # A RUNNING VM with an action (a reboot...) is still busy: not there yet.
    return vm["state"] == state.value and (state is not VmState.RUNNING or not vm["action"])


@vm_app.command("log")
def log(
    ctx: typer.Context,
    vm_id: VmId,
    max_bytes: Annotated[
        int, typer.Option("--bytes", min=1, help="show at most this many bytes, the last ones")
    ] = 64 * 1024,
) -> None:
    """Show the end of a VM's console log (serial console of a VM, log of a container)."""
    with connect(ctx.obj) as api:
        text = api.vm_log(vm_id, max_bytes)
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


@vm_app.command("disk-saveas")
def disk_saveas(
    ctx: typer.Context,
    vm_id: VmId,
    disk: Annotated[int, typer.Argument(min=0, help="the disk's position in the template")],
    name: Annotated[str, typer.Argument(help="name of the new image")],
) -> None:
    """Save a disk of a powered-off VM as a new image (see `stratus image show NAME`)."""
    with connect(ctx.obj) as api:
        image = api.disk_saveas(vm_id, disk, name)
    stdout.print(
        f"image {image['name']} (id {image['id']}) {image['state']}: importing disk {disk}"
    )


@vm_app.command("wait")
def wait(
    ctx: typer.Context,
    vm_id: VmId,
    state: Annotated[VmState, typer.Option(help="the state to wait for", show_default=False)],
    timeout: Annotated[float, typer.Option(min=0, help="give up after SECONDS")] = 60.0,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between polls")] = 0.5,
) -> None:
    """Wait until a VM reaches a state; exit 1 on timeout or if it ends in FAILED/DONE."""
    deadline = time.monotonic() + timeout
    with connect(ctx.obj) as api:
        while True:
            vm = api.vm(vm_id)
            if _reached(vm, state):
                stdout.print(f"VM {vm_id} is {vm['state']}")
                return
            current = VmState(vm["state"])
            if current in _ENDS:
                raise ClientError(
                    f"VM {vm_id} is {current}, it will not become {state}: {vm['reason']}",
                    "see `stratus vm show` for its history",
                )
            if time.monotonic() >= deadline:
                raise ClientError(
                    f"VM {vm_id} is still {current} after {timeout:g} s: {vm['reason']}",
                    "wait longer with --timeout, or see `stratus vm show`",
                )
            time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))


def _operate(ctx: typer.Context, vm_id: int, operation: str, **args: Any) -> None:
    with connect(ctx.obj) as api:
        vm = api.operate(vm_id, operation, **args)
    stdout.print(f"VM {vm_id} {operation}: now {vm['state']} ({vm['reason']})")


def _simple(operation: str, summary: str) -> None:
    @vm_app.command(operation, help=summary)
    def command(ctx: typer.Context, vm_id: VmId) -> None:
        _operate(ctx, vm_id, operation)


def _with_hard(operation: str, summary: str) -> None:
    @vm_app.command(operation, help=summary)
    def command(ctx: typer.Context, vm_id: VmId, hard: Hard = False) -> None:
        _operate(ctx, vm_id, operation, hard=hard)


for _operation, _summary in (
    ("hold", "Keep a PENDING VM out of scheduling."),
    ("release", "Let a held VM be scheduled."),
    ("suspend", "Pause a running VM, keeping its memory state on the host."),
    ("resume", "Resume a suspended, stopped, powered-off or undeployed VM."),
    ("stop", "Save a running VM's state and disks off its host, freeing the host."),
    ("resched", "Ask the scheduler to move a running VM to a better host."),
):
    _simple(_operation, _summary)

for _operation, _summary in (
    ("terminate", "Shut a VM down and delete it (it stays listed as DONE)."),
    ("poweroff", "Power a running VM off, keeping its disks on the host."),
    ("reboot", "Reboot a running VM."),
    ("undeploy", "Power a VM off and move its disks off the host, freeing it."),
):
    _with_hard(_operation, _summary)


@vm_app.command("deploy")
def deploy(ctx: typer.Context, vm_id: VmId, host: HostName) -> None:
    """Deploy a pending, held, stopped or undeployed VM on the named host."""
    _operate(ctx, vm_id, "deploy", host=host)


@vm_app.command("migrate")
def migrate(
    ctx: typer.Context,
    vm_id: VmId,
    host: HostName,
    live: Annotated[bool, typer.Option("--live", help="migrate without stopping it")] = False,
) -> None:
    """Move a running VM to another host."""
    _operate(ctx, vm_id, "migrate", host=host, live=live)


def _flag(mode: RecoverMode, text: str) -> Any:
    return typer.Option(f"--{mode.value}", help=text)


@vm_app.command("recover")
def recover(
    ctx: typer.Context,
    vm_id: VmId,
    success: Annotated[bool, _flag(RecoverMode.SUCCESS, "the action did succeed")] = False,
    failure: Annotated[bool, _flag(RecoverMode.FAILURE, "the action failed")] = False,
    retry: Annotated[bool, _flag(RecoverMode.RETRY, "run the failed action again")] = False,
    delete: Annotated[bool, _flag(RecoverMode.DELETE, "clean up and mark it DONE")] = False,
    recreate: Annotated[bool, _flag(RecoverMode.RECREATE, "clean up and submit it again")] = False,
) -> None:
    """Recover a VM stuck in a transient, UNKNOWN or FAILED state; name exactly one mode."""
    flags = {
        RecoverMode.SUCCESS: success,
        RecoverMode.FAILURE: failure,
        RecoverMode.RETRY: retry,
        RecoverMode.DELETE: delete,
        RecoverMode.RECREATE: recreate,
    }
    chosen = [mode for mode, given in flags.items() if given]
    if len(chosen) != 1:
        raise typer.BadParameter(
            "give exactly one of --success, --failure, --retry, --delete, --recreate"
        )
    _operate(ctx, vm_id, "recover", mode=chosen[0].value)
