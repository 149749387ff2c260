"""The audit store's first schema: tasks, checkpoints, interventions, artifacts, costs.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("action_id", sa.String(128), primary_key=True),
        sa.Column("plan_id", sa.String(128)),
        sa.Column("short_id", sa.String(16)),
        sa.Column("source", sa.String(32)),
        sa.Column("source_ref", sa.Text),
        sa.Column("sender", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("action", sa.String(64)),
        sa.Column("risk", sa.String(16)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("planner", sa.String(128)),
        sa.Column("note", sa.Text),
        sa.Column("plan_note", sa.Text),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("planned_at", sa.String(40)),
        sa.Column("decided_at", sa.String(40)),
        sa.Column("finished_at", sa.String(40)),
        sa.Column("updated_at", sa.String(40), nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("slack_thread", sa.Text),
    )
    op.create_index("ix_tasks_plan_id", "tasks", ["plan_id"])
    op.create_index("ix_tasks_short_id", "tasks", ["short_id"])
    op.create_index("tasks_created", "tasks", ["created_at"])
    op.create_index("tasks_status", "tasks", ["status", "created_at"])

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("action_id", sa.String(128), nullable=False),
        sa.Column("plan_id", sa.String(128)),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("duration_ms", sa.Float),
        sa.Column("detail", sa.Text),
    )
    op.create_index("checkpoints_action", "checkpoints", ["action_id", "at"])

    op.create_table(
        "interventions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("action_id", sa.String(128), nullable=False),
        sa.Column("plan_id", sa.String(128)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("who", sa.Text, nullable=False),
        sa.Column("door", sa.String(16), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_index("interventions_action", "interventions", ["action_id", "at"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("action_id", sa.String(128), nullable=False),
        sa.Column("plan_id", sa.String(128)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ref", sa.Text),
        sa.Column("url", sa.Text),
        sa.Column("path", sa.Text),
        sa.Column("at", sa.String(40), nullable=False),
    )
    op.create_index("artifacts_action", "artifacts", ["action_id"])

    op.create_table(
        "costs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("action_id", sa.String(128)),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("usd", sa.Float, nullable=False),
        sa.Column("quantity", sa.Float),
        sa.Column("unit", sa.String(16)),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
    )
    op.create_index("costs_day", "costs", ["day", "service"])


def downgrade() -> None:
    for table in ("costs", "artifacts", "interventions", "checkpoints", "tasks"):
        op.drop_table(table)
