"""Initial schema: hosts, vms, history, events, api_tokens.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column types: a migration must not change when tables.py does.
_TIME = sa.DateTime(timezone=True)
_JSON = sa.Text()


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("driver", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory", sa.Integer(), nullable=False),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("options", _JSON, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("monitoring", _JSON, nullable=False),
        sa.Column("last_monitored", _TIME, nullable=True),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hosts"),
        sa.UniqueConstraint("name", name="uq_hosts_name"),
    )
    op.create_table(
        "vms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=True),
        sa.Column("failed_state", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("target_host_id", sa.Integer(), nullable=True),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("vcpu", sa.Integer(), nullable=False),
        sa.Column("memory", sa.Integer(), nullable=False),
        sa.Column("user_priority", sa.Integer(), nullable=False),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("rank", sa.Text(), nullable=False),
        sa.Column("template", _JSON, nullable=False),
        sa.Column("deploy_id", sa.String(255), nullable=True),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("op_seq", sa.Integer(), nullable=False),
        sa.Column("resched", sa.Boolean(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("updated", _TIME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vms"),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name="fk_vms_host_id_hosts"),
        sa.ForeignKeyConstraint(
            ["target_host_id"], ["hosts.id"], name="fk_vms_target_host_id_hosts"
        ),
    )
    op.create_index("ix_vms_state_id", "vms", ["state", "id"])
    op.create_index("ix_vms_state_priority", "vms", ["state", sa.text("user_priority DESC"), "id"])
    op.create_index("ix_vms_host_id", "vms", ["host_id"])
    op.create_index("ix_vms_target_host_id", "vms", ["target_host_id"])
    op.create_table(
        "history",
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("host_name", sa.String(255), nullable=False),
        sa.Column("start", _TIME, nullable=False),
        sa.Column("end", _TIME, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("end_reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("vm_id", "seq", name="pk_history"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name="fk_history_vm_id_vms"),
    )
    op.create_index("ix_history_host_id", "history", ["host_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_object", "events", ["object_type", "object_id", "id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(255), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    for table in ("api_tokens", "events", "history", "vms", "hosts"):
        op.drop_table(table)
