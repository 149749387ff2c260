"""The store's four tables, one SQLAlchemy Core schema for SQLite and PostgreSQL.

Every row has an idempotent key: a task is its action id; a checkpoint, an intervention and an
artifact carry a `key` built from the facts they record (the plan, the step, the attempt), never
from a random event id. A re-run after a crash writes the same key again and the database keeps
the first (ON CONFLICT DO NOTHING), so nothing is written twice.

Times are ISO 8601 text in UTC (`2026-12-07T17:45:00.123+00:00`): they sort as text on both
databases, read the same in `sqlite3` and `psql`, and need no time-zone conversion.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()


def _keyed_item_columns() -> list[Column[Any]]:
    """The leading columns of an item's keyed rows (checkpoints, interventions, artifacts): new each call."""
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key", String(255), nullable=False, unique=True),
        Column("action_id", String(128), nullable=False),
        Column("plan_id", String(128)),
    ]


tasks = Table(
    "tasks",
    metadata,
    Column("action_id", String(128), primary_key=True),
    Column("plan_id", String(128), index=True),
    Column("short_id", String(16), index=True),
    Column("source", String(32)),
    Column("source_ref", Text),
    Column("sender", Text),
    Column("title", Text),
    Column("action", String(64)),
    Column("risk", String(16)),
    Column("status", String(32), nullable=False),
    Column("planner", String(128)),
    Column("note", Text),  # the action note, vault-relative
    Column("plan_note", Text),  # the plan note where it is now, vault-relative
    Column("created_at", String(40), nullable=False),
    Column("planned_at", String(40)),
    Column("decided_at", String(40)),
    Column("finished_at", String(40)),
    Column("updated_at", String(40), nullable=False),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("slack_thread", Text),  # "channel:ts" of the item's Slack thread, set by `task.linked`
    Index("tasks_created", "created_at"),
    Index("tasks_status", "status", "created_at"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    *_keyed_item_columns(),
    Column("step", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # ok | warning | failed
    Column("at", String(40), nullable=False),
    Column("duration_ms", Float),
    Column("detail", Text),
    Index("checkpoints_action", "action_id", "at"),
)

interventions = Table(
    "interventions",
    metadata,
    *_keyed_item_columns(),
    Column("kind", String(32), nullable=False),  # approve | reject | edit | retry | cancel
    Column("who", Text, nullable=False),
    Column("door", String(16), nullable=False),  # vault | cli | slack | telegram | whatsapp | email
    Column("at", String(40), nullable=False),
    Column("reason", Text),
    Index("interventions_action", "action_id", "at"),
)

artifacts = Table(
    "artifacts",
    metadata,
    *_keyed_item_columns(),
    Column("kind", String(32), nullable=False),  # work_order | manus_task | note | attachment | report
    Column("ref", Text),  # the outside id: work order id or customId, Manus task id
    Column("url", Text),
    Column("path", Text),  # vault-relative, for notes and attachments
    Column("at", String(40), nullable=False),
    Index("artifacts_action", "action_id"),
)

costs = Table(
    "costs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("action_id", String(128)),
    Column("service", String(32), nullable=False),  # llm | whisper | manus
    Column("usd", Float, nullable=False),
    Column("quantity", Float),  # tokens, minutes, credits
    Column("unit", String(16)),
    Column("day", String(10), nullable=False),
    Column("at", String(40), nullable=False),
    Index("costs_day", "day", "service"),
)
