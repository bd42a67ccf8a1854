"""`stratus image ...`: register (with progress), list, show, enable/disable and delete images."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from stratus.cli.client import ClientError, StratusClient, connect
from stratus.cli.output import (
    format_bytes,
    print_image,
    print_image_table,
    print_json,
    stderr,
    stdout,
)
from stratus.model.records import ImageState, ImageType

__all__ = ["image_app"]

image_app = typer.Typer(help="Register, inspect and manage disk images.", no_args_is_help=True)

ImageRef = Annotated[
    str, typer.Argument(metavar="IMAGE", help="image name or id", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
POLL_INTERVAL = 0.5  # seconds between two looks at an importing image (after the first few)


class DiskFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VPC = "vpc"
    VDI = "vdi"


@image_app.command("register")
def register(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="a unique image name", show_default=False)
    ],
    path: Annotated[
        str | None,
        typer.Option(help="absolute path of the image on the daemon's machine", show_default=False),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="http(s) URL the daemon downloads the image from", show_default=False),
    ] = None,
    image_type: Annotated[ImageType, typer.Option("--type", help="what the image is for")] = (
        ImageType.OS
    ),
    persistent: Annotated[
        bool, typer.Option(help="VMs write to the image itself, one VM at a time")
    ] = False,
    fmt: Annotated[
        DiskFormat | None,
        typer.Option("--format", help="convert a disk image to this format on import"),
    ] = None,
    description: Annotated[str, typer.Option(help="free text shown by `image show`")] = "",
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="return at once; the import goes on in the daemon")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=1, help="seconds to wait for the import to end")
    ] = 3600.0,
    as_json: JsonFlag = False,
) -> None:
    """Register an image: the daemon copies (--path) or downloads (--url) it into its datastore.

    The image is LOCKED while it imports, then READY, or ERROR with the reason.
    """
    if (path is None) == (url is None):
        raise typer.BadParameter("give exactly one of --path and --url", param_hint="--path/--url")
    body: dict[str, Any] = {
        "name": name,
        "type": image_type.value,
        "persistent": persistent,
        "description": description,
    }
    body |= {"path": path} if path is not None else {"url": url}
    if fmt is not None:
        body["format"] = fmt.value
    with connect(ctx.obj) as api:
        image = api.register_image(**body)
        if not no_wait:
            image = _wait_imported(api, image, timeout)
    if as_json:
        print_json(image)
    elif no_wait:
        stdout.print(
            f"image {image['name']} registered (id {image['id']}), importing:"
            f" follow it with `stratus image show {image['name']}`",
            soft_wrap=True,
        )
    else:
        stdout.print(
            f"image {image['name']} is READY (id {image['id']}): {image['format']},"
            f" {format_bytes(image['size'])}, {image['checksum']}",
            soft_wrap=True,
        )


def _wait_imported(api: StratusClient, image: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the image until it leaves LOCKED, with a progress bar on stderr (a terminal's)."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(image["reason"], total=1.0)
        pause = 0.05  # small images import in a blink: look soon, then every POLL_INTERVAL
        while image["state"] == ImageState.LOCKED:
            if time.monotonic() > deadline:
                raise ClientError(
                    f"image {image['name']} is still importing after {timeout:g} s"
                    f" ({image['progress']:.0%}: {image['reason']})",
                    "the import goes on in the daemon: follow it with"
                    f" `stratus image show {image['name']}`",
                )
            time.sleep(pause)
            pause = min(pause * 2, POLL_INTERVAL)
            image = api.image(str(image["id"]))
            bar.update(task, completed=image["progress"], description=image["reason"])
    if image["state"] == ImageState.ERROR:
        raise ClientError(
            f"image {image['name']} failed to import: {image['reason']}",
            f"`stratus image delete {image['name']}`, then register it again",
        )
    return image


@image_app.command("list")
def list_images(
    ctx: typer.Context,
    state: Annotated[ImageState | None, typer.Option(help="only images in this state")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List every image with its state, format, size and number of VMs using it."""
    with connect(ctx.obj) as api:
        images = list(api.iter_images(state=state.value if state else None))
    if as_json:
        print_json(images)
    else:
        print_image_table(images)


@image_app.command("show")
def show(ctx: typer.Context, ref: ImageRef, as_json: JsonFlag = False) -> None:
    """Show an image: state and reason, format, size, checksum, source, VMs, recent events."""
    with connect(ctx.obj) as api:
        image = api.image(ref)
    if as_json:
        print_json(image)
    else:
        print_image(image)


def _operation(operation: str, summary: str) -> None:
    @image_app.command(operation, help=summary)
    def command(ctx: typer.Context, ref: ImageRef) -> None:
        with connect(ctx.obj) as api:
            image = api.image_operation(ref, operation)
        stdout.print(f"image {image['name']} is {image['state']}")


for _name, _summary in (
    ("enable", "Let new VMs use a disabled image again."),
    ("disable", "Keep an image but let no new VM use it."),
    ("prestage", "Copy an image to every partner zone ahead of need."),
    ("on-demand", "Copy an image to a partner zone only when a VM there needs it."),
):
    _operation(_name, _summary)


@image_app.command("delete")
def delete(ctx: typer.Context, ref: ImageRef) -> None:
    """Delete an image and its file; refused while VMs use it."""
    with connect(ctx.obj) as api:
        api.delete_image(ref)
    stdout.print(f"image {ref} deleted")
