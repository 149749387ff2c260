"""The store's error, in a module of its own: the CLI and the daemon name it without importing
SQLAlchemy (a start must not pay for the database's imports before the daemon is visible)."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store's database cannot be reached or used; the message says so in one line."""
