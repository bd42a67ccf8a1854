"""Images, image uses, virtual networks, leases; the driver's info on each VM.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_TIME = sa.DateTime(timezone=True)
_JSON = sa.Text()
_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("info", _JSON, nullable=False, server_default="{}"))
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("actual_size", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(80), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("datastore", sa.String(255), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("updated", _TIME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("name", name="uq_images_name"),
    )
    op.create_table(
        "image_uses",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("disk_index", sa.Integer(), nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("image_id", "vm_id", "disk_index", name="pk_image_uses"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_image_uses_image_id_images"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name="fk_image_uses_vm_id_vms"),
    )
    op.create_index("ix_image_uses_vm_id", "image_uses", ["vm_id"])
    op.create_table(
        "vnets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("driver", sa.String(16), nullable=False),
        sa.Column("bridge", sa.String(15), nullable=True),
        sa.Column("netns", sa.String(64), nullable=True),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vnets"),
        sa.UniqueConstraint("name", name="uq_vnets_name"),
    )
    op.create_table(
        "leases",
        sa.Column("vnet_id", sa.Integer(), nullable=False),
        sa.Column("ar_id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("offset", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("ip", sa.String(15), nullable=True),
        sa.Column("ip6", sa.String(39), nullable=True),
        sa.Column("vm_id", sa.Integer(), nullable=True),
        sa.Column("nic_index", sa.Integer(), nullable=True),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("vnet_id", "ar_id", "offset", name="pk_leases"),
        sa.ForeignKeyConstraint(["vnet_id"], ["vnets.id"], name="fk_leases_vnet_id_vnets"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name="fk_leases_vm_id_vms"),
    )
    op.create_index("ix_leases_vm_id", "leases", ["vm_id"])
    op.create_index("uq_leases_vnet_mac", "leases", ["vnet_id", "mac"], unique=True)


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("vnets")
    op.drop_table("image_uses")
    op.drop_table("images")
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("info")
