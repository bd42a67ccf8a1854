"""EC2 Query API: users, access keys, instance and image ownership, key pairs, security
groups, addresses, tags.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_TIME = sa.DateTime(timezone=True)


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=f"fk_{table}_user_id_users")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("quota", sa.Text(), nullable=True),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "access_keys",
        sa.Column("access_key_id", sa.String(20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("access_key_id", name="pk_access_keys"),
        _user_fk("access_keys"),
    )
    op.create_index("ix_access_keys_user_id", "access_keys", ["user_id"])
    op.create_table(
        "ec2_instances",
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("reservation_id", sa.String(20), nullable=False),
        sa.Column("client_token", sa.String(64), nullable=True),
        sa.Column("launch_index", sa.Integer(), nullable=False),
        sa.Column("instance_type", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("vm_id", name="pk_ec2_instances"),
        sa.UniqueConstraint("instance_id", name="uq_ec2_instances_instance_id"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name="fk_ec2_instances_vm_id_vms"),
        _user_fk("ec2_instances"),
    )
    op.create_index("ix_ec2_instances_user_id", "ec2_instances", ["user_id", "vm_id"])
    op.create_index(
        "uq_ec2_instances_user_token",
        "ec2_instances",
        ["user_id", "client_token", "launch_index"],
        unique=True,
    )
    op.create_table(
        "ec2_images",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("kernel_id", sa.Integer(), nullable=True),
        sa.Column("ramdisk_id", sa.Integer(), nullable=True),
        sa.Column("root_device", sa.String(64), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("image_id", name="pk_ec2_images"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_ec2_images_image_id_images", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["kernel_id"], ["images.id"], name="fk_ec2_images_kernel_id_images", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["ramdisk_id"],
            ["images.id"],
            name="fk_ec2_images_ramdisk_id_images",
            ondelete="SET NULL",
        ),
        _user_fk("ec2_images"),
    )
    op.create_index("ix_ec2_images_user_id", "ec2_images", ["user_id"])
    op.create_table(
        "ec2_keypairs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ec2_keypairs"),
        _user_fk("ec2_keypairs"),
    )
    op.create_index("uq_ec2_keypairs_user_name", "ec2_keypairs", ["user_id", "name"], unique=True)
    op.create_table(
        "ec2_security_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ec2_security_groups"),
        _user_fk("ec2_security_groups"),
    )
    op.create_index(
        "uq_ec2_security_groups_user_name",
        "ec2_security_groups",
        ["user_id", "name"],
        unique=True,
    )
    op.create_table(
        "ec2_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("public_ip", sa.String(45), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=True),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ec2_addresses"),
        sa.UniqueConstraint("public_ip", name="uq_ec2_addresses_public_ip"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name="fk_ec2_addresses_vm_id_vms"),
        _user_fk("ec2_addresses"),
    )
    op.create_index("ix_ec2_addresses_user_id", "ec2_addresses", ["user_id"])
    op.create_index("ix_ec2_addresses_vm_id", "ec2_addresses", ["vm_id"])
    op.create_table(
        "ec2_tags",
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", "key", name="pk_ec2_tags"),
        _user_fk("ec2_tags"),
    )
    op.create_index("ix_ec2_tags_user_id", "ec2_tags", ["user_id", "resource_id"])


def downgrade() -> None:
    for table in (
        "ec2_tags",
        "ec2_addresses",
        "ec2_security_groups",
        "ec2_keypairs",
        "ec2_images",
        "ec2_instances",
        "access_keys",
        "users",
    ):
        op.drop_table(table)
