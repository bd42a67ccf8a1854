"""What a deploy needs beyond CPU and memory, resolved from the store: disks from the VM's
images, NICs from its leases, the kernel to boot, and the files of its context CD-ROM."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources as package_files
from pathlib import Path

from stratus.drivers.base import BootSpec, DiskSpec, NicSpec
from stratus.engine.guest import GuestTokens
from stratus.engine.image_links import ImageLinks
from stratus.engine.overlays import OverlayService
from stratus.model.context import ContextNic, ContextVm, build_context
from stratus.model.errors import InvalidInput
from stratus.model.overlay import GuestTunnel, with_tunnels
from stratus.model.records import Vm
from stratus.model.resources import FILES_USE, INITRD_USE, KERNEL_USE, resource_requests
from stratus.model.template import Template, vm_spec
from stratus.store import Store
from stratus.store.resources import ImageUse

__all__ = ["ResourceResolver", "VmResources"]

MAX_CONTEXT_FILE = 10 * 1024 * 1024
INIT_SCRIPT = "init.sh"


@dataclass(frozen=True)
class VmResources:
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    boot: BootSpec | None = None
    context: dict[str, bytes] | None = None


def _init_script() -> bytes:
    """The generic context script shipped on every CD-ROM as init.sh (engine/files/)."""
    return (package_files.files("stratus.engine") / "files" / INIT_SCRIPT).read_bytes()


class ResourceResolver:
    """Reads a VM's images and leases and builds its deploy inputs (in a worker thread)."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        api_port: int | None,
        guest_url: str | None = None,
        *,
        overlays: OverlayService | None = None,
        links: ImageLinks | None = None,
        public_url: str | None = None,
    ) -> None:
        self._store = store
        self._links = links  # signed image links for partner zones, under public_url
        self._public_url = public_url
        self._overlays = overlays  # tunnels for VMs placed outside the site
        self.tokens = GuestTokens(data_dir)
        self._api_port = api_port
        self._configured_url = guest_url

    def resolve(self, vm: Vm) -> VmResources:
        """Disks, NICs, boot and context of a VM (empty when its template names none)."""
        template = vm.template
        if not any(key in template for key in ("DISK", "NIC", "OS", "CONTEXT")):
            return VmResources()
        uses, leases = self._store.vm_deploy_inputs(vm.id)
        spec = vm_spec(Template.from_dict(template))
        requests = resource_requests(spec)
        disks = tuple(
            DiskSpec(
                index=use.index,
                image_id=use.image_id,
                image=use.name,
                source=use.path,
                format=use.format,
                type=use.type,
                persistent=use.persistent,
                readonly=use.type == "CDROM",
                checksum=use.checksum,
                url=self._links.url_for(self._public_url, use.image_id)
                if self._links and self._public_url
                else "",
            )
            for use in uses
            if use.index >= 0
        )
        nics = tuple(
            NicSpec(
                index=lease.nic_index or 0,
                network=lease.network,
                driver=lease.driver,
                mac=lease.mac,
                ip=lease.ip,
                ip6=lease.ip6,
                network_address=lease.network_address,
                mask=lease.mask,
                gateway=lease.gateway,
                dns=lease.dns,
                bridge=lease.bridge,
                netns=lease.netns,
                ports=tuple(lease.ports),
            )
            for lease in sorted(leases, key=lambda lease: lease.nic_index or 0)
        )
        by_index = {use.index: use for use in uses}
        boot = None
        if KERNEL_USE in by_index:
            initrd = by_index.get(INITRD_USE)
            boot = BootSpec(
                kernel=by_index[KERNEL_USE].path,
                initrd=initrd.path if initrd else None,
                cmdline=requests.cmdline,
            )
        tunnels = self._overlays.deploy_tunnels(vm, leases) if self._overlays else []
        context = None
        if "CONTEXT" in template or tunnels:
            files = [use for index, use in sorted(by_index.items()) if index <= FILES_USE]
            context = self._context(vm, dict(spec.context), nics, files, tunnels)
        return VmResources(disks=disks, nics=nics, boot=boot, context=context)

    def _context(
        self,
        vm: Vm,
        section: dict[str, str],
        nics: tuple[NicSpec, ...],
        files: list[ImageUse],
        tunnels: list[GuestTunnel],
    ) -> dict[str, bytes]:
        section.pop("FILES", None)
        context_nics = [
            ContextNic(
                index=nic.index,
                network=nic.network,
                mac=nic.mac,
                ip=nic.ip,
                ip6=nic.ip6,
                mask=nic.mask,
                gateway=nic.gateway,
                dns=nic.dns,
                network_address=nic.network_address,
            )
            for nic in nics
        ]
        networks = {
            nic.network: {
                key: value
                for key, value in (
                    ("GATEWAY", nic.gateway),
                    ("DNS", nic.dns),
                    ("NETWORK_ADDRESS", nic.network_address),
                    ("NETWORK_MASK", nic.mask),
                    ("BRIDGE", nic.bridge),
                )
                if value
            }
            for nic in nics
        }
        built = build_context(
            section,
            ContextVm(id=vm.id, name=vm.name),
            context_nics,
            networks,
            {"NAME": "admin"},
            token=self.tokens.token_for(vm.id),
            stratus_url=self._guest_url(nics),
        )
        out = with_tunnels(built, tunnels).files()
        out.setdefault(INIT_SCRIPT, _init_script())
        for use in files:
            out[Path(use.path).name if use.name in out else use.name] = _read_limited(use)
        return out

    def _guest_url(self, nics: tuple[NicSpec, ...]) -> str | None:
        """The API as the guest reaches it: through a user network's gateway (which QEMU
        forwards to this machine's loopback), else the configured `--guest-url`."""
        for nic in nics:
            if nic.driver == "user" and nic.gateway and self._api_port is not None:
                return f"http://{nic.gateway}:{self._api_port}"
        return self._configured_url


def _read_limited(use: ImageUse) -> bytes:
    path = Path(use.path)
    if path.stat().st_size > MAX_CONTEXT_FILE:
        raise InvalidInput(f"context file {use.name} is larger than {MAX_CONTEXT_FILE} bytes")
    return path.read_bytes()
