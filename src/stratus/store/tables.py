"""SQLAlchemy Core tables of the Stratus database and the two column types they share.

This is the schema the code reads and writes; `migrations/versions/` holds the frozen steps
that build it, and a test checks that both agree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)

from stratus.model.errors import InvalidInput

_Processor = Callable[[Any], Any]

__all__ = [
    "JsonText",
    "UtcDateTime",
    "api_tokens",
    "check_json",
    "events",
    "history",
    "hosts",
    "metadata",
    "read_json",
    "time_reader",
    "vms",
]

# Deterministic constraint names, so migrations can refer to them on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def time_reader(dialect_name: str) -> Callable[[Any], datetime | None]:
    """How a stored timestamp, as the driver returns it, becomes an aware UTC datetime."""
    if dialect_name == "sqlite":
        parse = datetime.fromisoformat

        def from_text(value: str | None) -> datetime | None:
            # SQLite keeps naive UTC text; appending the offset beats .replace(tzinfo=UTC).
            return None if value is None else parse(value + "+00:00")

        return from_text

    def to_utc(value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    return to_utc


def read_json(value: str | None) -> Any:
    """A stored JSON text as Python values."""
    return None if value is None else orjson.loads(value)


def check_json(value: Any, what: str) -> None:
    """Raise InvalidInput unless `value` can be stored as JSON (call before the statement)."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise InvalidInput(f"{what} cannot be stored as JSON: {exc}") from exc


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite keeps it as naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one (datetime.now(UTC))")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: object) -> _Processor | None:
        # Replaces the impl's processor: SQLite's text goes straight to an aware datetime.
        return time_reader(dialect.name)


class JsonText(TypeDecorator[Any]):
    """JSON kept as text, written with orjson (sorted keys); never pickles."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError as exc:
            raise InvalidInput(f"cannot store {type(value).__name__} as JSON: {exc}") from exc

    def result_processor(self, dialect: Dialect, coltype: object) -> _Processor | None:
        return read_json


def _id_column() -> Column[int]:
    # SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a bigint identity.
    return Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)


hosts = Table(
    "hosts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("driver", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("cpu", Float, nullable=False),
    Column("memory", Integer, nullable=False),
    Column("labels", JsonText, nullable=False),
    Column("options", JsonText, nullable=False),
    Column("reason", Text, nullable=False),
    Column("monitoring", JsonText, nullable=False),
    Column("last_monitored", UtcDateTime, nullable=True),
    Column("created", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # credentials sealed by the engine (engine/secrets.py), "" when none: never plaintext
    Column("secrets", Text, nullable=False, server_default=""),
)

vms = Table(
    "vms",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("action", String(32), nullable=True),
    Column("failed_state", String(16), nullable=True),
    Column("reason", Text, nullable=False),
    Column("host_id", Integer, ForeignKey("hosts.id"), nullable=True),
    Column("target_host_id", Integer, ForeignKey("hosts.id"), nullable=True),
    Column("cpu", Float, nullable=False),
    Column("vcpu", Integer, nullable=False),
    Column("memory", Integer, nullable=False),
    Column("user_priority", Integer, nullable=False),
    Column("requirements", Text, nullable=False),
    Column("rank", Text, nullable=False),
    Column("template", JsonText, nullable=False),
    Column("deploy_id", String(255), nullable=True),
    Column("checkpoint", Text, nullable=True),
    Column("info", JsonText, nullable=False),  # what the driver reported: address, ports
    Column("op_seq", Integer, nullable=False),
    Column("resched", Boolean, nullable=False),
    Column("created", UtcDateTime, nullable=False),
    Column("updated", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)
# Listing by state in id order, and the scheduler's pending queue in its own order.
Index("ix_vms_state_id", vms.c.state, vms.c.id)
Index("ix_vms_state_priority", vms.c.state, vms.c.user_priority.desc(), vms.c.id)
Index("ix_vms_host_id", vms.c.host_id)
Index("ix_vms_target_host_id", vms.c.target_host_id)

# One placement per row. host_id has no foreign key: accounting outlives a deleted host.
history = Table(
    "history",
    metadata,
    Column("vm_id", Integer, ForeignKey("vms.id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("host_id", Integer, nullable=False),
    Column("host_name", String(255), nullable=False),
    Column("start", UtcDateTime, nullable=False),
    Column("end", UtcDateTime, nullable=True),
    Column("reason", Text, nullable=False),
    Column("end_reason", Text, nullable=False),
)
Index("ix_history_host_id", history.c.host_id)

events = Table(
    "events",
    metadata,
    _id_column(),
    Column("object_type", String(16), nullable=False),
    Column("object_id", Integer, nullable=False),
    Column("from_state", String(16), nullable=False),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("time", UtcDateTime, nullable=False),
)
Index("ix_events_object", events.c.object_type, events.c.object_id, events.c.id)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("token_hash", String(255), nullable=False, unique=True),
    Column("created", UtcDateTime, nullable=False),
)

# Images (issue 3). A row per registered image; `path` is its file (or rootfs directory)
# in the image datastore on the front-end. State LOCKED while importing, READY, ERROR
# (reason says why) or DISABLED; USED is derived from image_uses.
images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("type", String(16), nullable=False),  # OS CDROM DATABLOCK KERNEL RAMDISK CONTEXT
    Column("state", String(16), nullable=False),
    Column("persistent", Boolean, nullable=False),
    Column("format", String(16), nullable=False),  # raw qcow2 vmdk vpc vdi iso tar dir file
    Column("size", BigInteger, nullable=False),  # bytes (virtual size for disks)
    Column("actual_size", BigInteger, nullable=False),  # bytes in the datastore
    Column("checksum", String(80), nullable=False),  # "sha256:<hex>" once imported
    Column("path", Text, nullable=False),
    Column("source", Text, nullable=False),  # where it was imported from (path or URL)
    Column("datastore", String(255), nullable=False),
    Column("progress", Float, nullable=False),  # 0..1 while LOCKED
    Column("reason", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("created", UtcDateTime, nullable=False),
    Column("updated", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # copied to every partner zone ahead of need, rather than when a VM bursts there
    Column("prestage", Boolean, nullable=False, server_default=false()),
)

# Which VM uses which image (one row per disk): an image with uses is USED and cannot be
# deleted; a persistent image has at most one user.
image_uses = Table(
    "image_uses",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id"), primary_key=True),
    Column("vm_id", Integer, ForeignKey("vms.id"), primary_key=True),
    Column("disk_index", Integer, primary_key=True, autoincrement=False),
)
Index("ix_image_uses_vm_id", image_uses.c.vm_id)

# Virtual networks (issue 3). `spec` is the parsed network template: address ranges,
# gateway, DNS, mask, MAC prefix.
vnets = Table(
    "vnets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("driver", String(16), nullable=False),  # bridge | user
    Column("bridge", String(15), nullable=True),
    Column("netns", String(64), nullable=True),
    Column("spec", JsonText, nullable=False),
    Column("created", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)

# A row per address in use (by a VM's NIC) or on hold; a free address has no row. The
# primary key makes two VMs taking the same address impossible.
leases = Table(
    "leases",
    metadata,
    Column("vnet_id", Integer, ForeignKey("vnets.id"), primary_key=True),
    Column("ar_id", Integer, primary_key=True, autoincrement=False),
    Column("offset", Integer, primary_key=True, autoincrement=False),  # index in the range
    Column("mac", String(17), nullable=False),
    Column("ip", String(15), nullable=True),
    Column("ip6", String(39), nullable=True),
    Column("vm_id", Integer, ForeignKey("vms.id"), nullable=True),
    Column("nic_index", Integer, nullable=True),
    Column("held", Boolean, nullable=False),
    Column("created", UtcDateTime, nullable=False),
)
Index("ix_leases_vm_id", leases.c.vm_id)
Index("uq_leases_vnet_mac", leases.c.vnet_id, leases.c.mac, unique=True)

# EC2 API (issue 5). EC2 users and their access keys (the secret sealed by the engine's
# SecretBox: SigV4 needs the plaintext to verify, so it is encrypted, never hashed), and
# the EC2-only facts of their objects; VMs and images themselves stay in vms and images.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("quota", JsonText, nullable=True),  # {"vms", "cpu", "memory"} (each may be null)
    Column("created", UtcDateTime, nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(20), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("secret", Text, nullable=False),  # sealed (engine/secrets.py): never plaintext
    Column("created", UtcDateTime, nullable=False),
)
Index("ix_access_keys_user_id", access_keys.c.user_id)

# The VMs made by RunInstances: who owns each, its reservation and ClientToken.
ec2_instances = Table(
    "ec2_instances",
    metadata,
    Column("vm_id", Integer, ForeignKey("vms.id"), primary_key=True),
    Column("instance_id", String(20), nullable=False, unique=True),  # i-..., to join tags
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("reservation_id", String(20), nullable=False),
    Column("client_token", String(64), nullable=True),
    Column("launch_index", Integer, nullable=False),
    Column("instance_type", String(32), nullable=False),  # also in METADATA; here to filter
)
Index("ix_ec2_instances_user_id", ec2_instances.c.user_id, ec2_instances.c.vm_id)
Index(
    "uq_ec2_instances_user_token",
    ec2_instances.c.user_id,
    ec2_instances.c.client_token,
    ec2_instances.c.launch_index,
    unique=True,
)

# Images registered through RegisterImage: owner, kernel and ramdisk to boot them with.
# An image deleted by other means takes its row with it.
ec2_images = Table(
    "ec2_images",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=True),
    Column("kernel_id", Integer, ForeignKey("images.id", ondelete="SET NULL"), nullable=True),
    Column("ramdisk_id", Integer, ForeignKey("images.id", ondelete="SET NULL"), nullable=True),
    Column("root_device", String(64), nullable=False),
    Column("created", UtcDateTime, nullable=False),
)
Index("ix_ec2_images_user_id", ec2_images.c.user_id)

ec2_keypairs = Table(
    "ec2_keypairs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("key_type", String(16), nullable=False),  # rsa | ed25519
    Column("fingerprint", String(128), nullable=False),
    Column("public_key", Text, nullable=False),  # OpenSSH text
    Column("created", UtcDateTime, nullable=False),
)
Index("uq_ec2_keypairs_user_name", ec2_keypairs.c.user_id, ec2_keypairs.c.name, unique=True)

# Rules are kept and shown; Stratus does not enforce them on its networks.
ec2_security_groups = Table(
    "ec2_security_groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", String(255), nullable=False),
    Column("rules", JsonText, nullable=False),
    Column("created", UtcDateTime, nullable=False),
)
Index(
    "uq_ec2_security_groups_user_name",
    ec2_security_groups.c.user_id,
    ec2_security_groups.c.name,
    unique=True,
)

# Elastic addresses from the configured pool; an association is bookkeeping (no NAT).
ec2_addresses = Table(
    "ec2_addresses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("public_ip", String(45), nullable=False, unique=True),
    Column("vm_id", Integer, ForeignKey("vms.id"), nullable=True),
    Column("created", UtcDateTime, nullable=False),
)
Index("ix_ec2_addresses_user_id", ec2_addresses.c.user_id)
Index("ix_ec2_addresses_vm_id", ec2_addresses.c.vm_id)

ec2_tags = Table(
    "ec2_tags",
    metadata,
    Column("resource_id", String(64), primary_key=True),  # i-..., ami-..., sg-...
    Column("key", String(128), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("value", String(256), nullable=False),
)
Index("ix_ec2_tags_user_id", ec2_tags.c.user_id, ec2_tags.c.resource_id)

# Overlay networks (issue 5). One hub per network (its keys sealed by the engine, never
# plaintext) and a row per remote machine or site; tunnel addresses are leases of the network.
overlays = Table(
    "overlays",
    metadata,
    Column("vnet_id", Integer, ForeignKey("vnets.id"), primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),  # wireguard | openvpn
    Column("endpoint", String(270), nullable=False),  # HOST:PORT the peers dial
    Column("listen_port", Integer, nullable=False),
    Column("host", String(255), nullable=True),  # the Stratus host running the hub; NULL: local
    Column("hub_ip", String(15), nullable=False),  # a lease held in the network
    Column("hub_public", Text, nullable=False),
    Column("hub_secret", Text, nullable=False),  # sealed (engine/secrets.py)
    Column("created", UtcDateTime, nullable=False),
)

overlay_peers = Table(
    "overlay_peers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("vnet_id", Integer, ForeignKey("overlays.vnet_id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # vm | site
    Column("vm_id", Integer, ForeignKey("vms.id"), nullable=True),
    Column("nic_index", Integer, nullable=True),
    Column("address", String(18), nullable=False),  # a lease IP, or a site's subnet (CIDR)
    Column("public", Text, nullable=False),
    Column("secret", Text, nullable=False),  # sealed (engine/secrets.py)
    Column("created", UtcDateTime, nullable=False),
)
Index("uq_overlay_peers_vnet_name", overlay_peers.c.vnet_id, overlay_peers.c.name, unique=True)
Index("ix_overlay_peers_vm_id", overlay_peers.c.vm_id)
