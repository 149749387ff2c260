"""Alembic's migration environment and the store's versioned migrations (run at start)."""
