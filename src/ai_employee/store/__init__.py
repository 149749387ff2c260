"""The audit store: every item's story (tasks, checkpoints, interventions, artifacts) in SQLite or
PostgreSQL, fed from the bus off the hot path, read by `history`, `GET /tasks` and the dashboard
(docs/decisions/0015)."""
