"""Overlay networks: hubs and their peers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "overlays",
        sa.Column("vnet_id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(270), nullable=False),
        sa.Column("listen_port", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("hub_ip", sa.String(15), nullable=False),
        sa.Column("hub_public", sa.Text(), nullable=False),
        sa.Column("hub_secret", sa.Text(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("vnet_id", name="pk_overlays"),
        sa.ForeignKeyConstraint(["vnet_id"], ["vnets.id"], name="fk_overlays_vnet_id_vnets"),
    )
    op.create_table(
        "overlay_peers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vnet_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=True),
        sa.Column("nic_index", sa.Integer(), nullable=True),
        sa.Column("address", sa.String(18), nullable=False),
        sa.Column("public", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_overlay_peers"),
        sa.ForeignKeyConstraint(
            ["vnet_id"], ["overlays.vnet_id"], name="fk_overlay_peers_vnet_id_overlays"
        ),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name="fk_overlay_peers_vm_id_vms"),
    )
    op.create_index("uq_overlay_peers_vnet_name", "overlay_peers", ["vnet_id", "name"], unique=True)
    op.create_index("ix_overlay_peers_vm_id", "overlay_peers", ["vm_id"])


def downgrade() -> None:
    op.drop_table("overlay_peers")
    op.drop_table("overlays")
