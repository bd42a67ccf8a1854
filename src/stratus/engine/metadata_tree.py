"""What the instance metadata service serves to one VM: the EC2 meta-data tree, its
user-data, and which VM a guest address belongs to. Store reads and pure shaping, no I/O
of its own beyond the store.

The tree follows EC2's: directories list their entries one per line (sub-directories with a
trailing slash, `public-keys/` as `0=<key name>`), leaves are text. Every dated API version
(cloud-init asks for 2009-04-04, 2016-09-02...) is served as `latest`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from stratus.model.context import ContextNic, ContextVm, build_context
from stratus.model.ec2ids import InstanceMetadata, ami_id, instance_id
from stratus.model.errors import InvalidInput
from stratus.model.records import Lease, Vm
from stratus.model.template import Template
from stratus.store import Store
from stratus.store.resources import ImageUse

__all__ = [
    "VERSIONS",
    "Answer",
    "InstanceView",
    "Tree",
    "find_vm_at",
    "instance_view",
    "namespace_leases",
    "resolve",
]

log = logging.getLogger(__name__)

Tree = dict[str, "str | Tree"]

#: what GET / lists: the API versions cloud-init and the AWS tools ask for, then latest
VERSIONS = ("1.0", "2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest")
_PAGE = 500
_DATED = re.compile(r"\d{4}-\d{2}-\d{2}|1\.0|latest")


@dataclass(frozen=True)
class InstanceView:
    """One VM as its guest sees it through the metadata service."""

    vm_id: int
    tree: Tree  # the meta-data tree
    user_data: bytes | None  # None: no user data (404, as EC2)
    tokens_required: bool  # METADATA HTTP_TOKENS = "required": IMDSv1 refused


@dataclass(frozen=True)
class Answer:
    """What a GET returns: text (a leaf or a listing), or nothing (404)."""

    body: bytes
    content_type: str = "text/plain"


def namespace_leases(store: Store, netns: str | None) -> list[Lease]:
    """The leases of the bridge networks of namespace `netns` (None: the root one) that
    VMs hold."""
    found: list[Lease] = []
    after = 0
    while True:
        page = store.list_vnets(limit=_PAGE, after_id=after)
        for vnet in page:
            if vnet.driver == "bridge" and (vnet.netns or None) == netns and vnet.used:
                _, leases = store.vnet_detail(vnet.id)
                found += [lease for lease in leases if lease.vm_id is not None and lease.ip]
        if len(page) < _PAGE:
            return found
        after = page[-1].id


def find_vm_at(store: Store, netns: str | None, ip: str) -> int | None:
    """The VM leasing `ip` on a bridge network of namespace `netns` (None: the root one)."""
    for lease in namespace_leases(store, netns):
        if lease.ip == ip:
            return lease.vm_id
    return None


def instance_view(store: Store, vm_id: int, default_zone: str) -> InstanceView:
    """Read a VM, its image uses and leases, and shape what its guest may read.

    InvalidInput when its METADATA section is malformed (USER_DATA not base64...).
    """
    vm = store.get_vm(vm_id)
    uses, leases = store.vm_deploy_inputs(vm_id)
    meta = InstanceMetadata.from_section(_metadata_section(vm))
    return InstanceView(
        vm_id=vm.id,
        tree=_tree(vm, meta, uses, leases, default_zone),
        user_data=meta.user_data or None,
        tokens_required=meta.tokens_required,
    )


def _metadata_section(vm: Vm) -> dict[str, str]:
    sections = Template.from_dict(vm.template).vectors("METADATA")
    return sections[0] if sections else {}


def _tree(
    vm: Vm, meta: InstanceMetadata, uses: list[ImageUse], leases: list[Lease], zone: str
) -> Tree:
    nics = sorted(leases, key=lambda lease: lease.nic_index or 0)
    first = nics[0] if nics else None
    hostname = _hostname(vm, nics)
    tree: Tree = {
        "instance-id": instance_id(vm.id),
        "instance-type": meta.instance_type or f"stratus.{vm.vcpu}x{vm.memory}",
        "hostname": hostname,
        "local-hostname": hostname,
        "placement": {"availability-zone": meta.availability_zone or zone},
    }
    ami = meta.ami_id or _first_disk_ami(uses)
    if ami:
        tree["ami-id"] = ami
    if first is not None:
        tree["mac"] = first.mac
        if first.ip:
            tree["local-ipv4"] = first.ip
    public = vm.info.get("address")
    if isinstance(public, str) and public and public != (first.ip if first else None):
        tree["public-ipv4"] = public
    if meta.public_key:
        tree["public-keys"] = {f"0={meta.key_name or 'key'}": {"openssh-key": meta.public_key}}
    if meta.security_groups:
        tree["security-groups"] = "\n".join(meta.security_groups)
    return tree


def _first_disk_ami(uses: list[ImageUse]) -> str | None:
    disks = sorted((use for use in uses if use.index >= 0), key=lambda use: use.index)
    return ami_id(disks[0].image_id) if disks else None


def _hostname(vm: Vm, nics: list[Lease]) -> str:
    """The host name the context CD-ROM gives the guest: SET_HOSTNAME expanded, else one
    made from the VM's name (the same rule, through model.context)."""
    sections = Template.from_dict(vm.template).vectors("CONTEXT")
    section = {k: v for k, v in (sections[0] if sections else {}).items() if k == "SET_HOSTNAME"}
    context_nics = [
        ContextNic(index=n.nic_index or 0, network=n.network, mac=n.mac, ip=n.ip, mask=n.mask,
                   gateway=n.gateway, dns=n.dns, network_address=n.network_address)
        for n in nics
    ]  # fmt: skip
    try:
        built = build_context(
            section, ContextVm(vm.id, vm.name), context_nics, {}, {"NAME": "admin"},
            token=None, stratus_url=None,
        )  # fmt: skip
    except InvalidInput as exc:  # e.g. a $NETWORK[...] reference this view cannot resolve
        log.info("VM %d: hostname from its name (SET_HOSTNAME: %s)", vm.id, exc)
        built = build_context(
            {}, ContextVm(vm.id, vm.name), [], {}, {}, token=None, stratus_url=None
        )
    return str(built.meta_data["local-hostname"])


# --- paths ---------------------------------------------------------------------------------


def resolve(view: InstanceView, path: str) -> Answer | None:
    """The answer to GET `path` (query string removed), None for 404."""
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        return None
    if not parts:
        return _listing(list(VERSIONS))
    if not _DATED.fullmatch(parts[0]):
        return None
    rest = parts[1:]
    if not rest:
        return _listing(["meta-data", *(["user-data"] if view.user_data is not None else [])])
    if rest == ["user-data"]:
        if view.user_data is None:
            return None
        return Answer(view.user_data, "application/octet-stream")
    if rest[0] != "meta-data":
        return None
    node: str | Tree = view.tree
    for part in rest[1:]:
        if isinstance(node, str):
            return None
        found = _child(node, part)
        if found is None:
            return None
        node = found
    if isinstance(node, str):
        return Answer(node.encode())
    return _listing([_entry(name, child) for name, child in sorted(node.items())])


def _child(node: Tree, part: str) -> str | Tree | None:
    """`part` of a directory: by name, or by index for `0=<key name>` entries."""
    if part in node:
        return node[part]
    for name, child in node.items():
        if "=" in name and name.split("=", 1)[0] == part:
            return child
    return None


def _entry(name: str, child: str | Tree) -> str:
    # EC2 lists public keys as `0=name`, without the slash of a directory
    return name + "/" if isinstance(child, dict) and "=" not in name else name


def _listing(names: list[str]) -> Answer:
    return Answer("\n".join(names).encode())
