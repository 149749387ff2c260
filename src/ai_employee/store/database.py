"""Which database the store uses, how it is reached, and its migrations (applied at start).

`DATABASE_URL` (config `database.url`) unset: SQLite at `<vault>/.ai-employee/store.db`, a file of
its own beside the ledger's `state.db` so that the store's writes never wait on the ledger's lock.
`postgresql://...`: PostgreSQL through psycopg 3 (the URL's scheme becomes `postgresql+psycopg`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from ai_employee.store.errors import StoreUnavailable

__all__ = ["StoreUnavailable", "database_url", "describe", "migrate", "open_store", "reason"]

STORE_DB = "store.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: how long a PostgreSQL connect may take before the store calls the server unreachable
CONNECT_TIMEOUT_SECONDS = 5


def database_url(url: str | None, state_dir: Path) -> URL:
    """The SQLAlchemy URL for `DATABASE_URL` (None: the SQLite file in the vault's state folder)."""
    if not url:
        return URL.create("sqlite+pysqlite", database=str(state_dir / STORE_DB))
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StoreUnavailable(f"DATABASE_URL is not a database URL: {describe(url)}") from error
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername not in ("postgresql+psycopg", "sqlite+pysqlite"):
        raise StoreUnavailable(
            f"DATABASE_URL must be postgresql://... or sqlite:///...: got {parsed.drivername}://"
        )
    return parsed


def describe(url: URL | str) -> str:
    """The URL without its password, for messages and status."""
    if isinstance(url, str):
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)
    return url.render_as_string(hide_password=True)


def create_store_engine(url: URL) -> Engine:
    if url.drivername.startswith("sqlite"):
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "ai-employee"},
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_store(url: str | None, state_dir: Path) -> Engine:
    """Connect and bring the schema to the newest version. Raises StoreUnavailable (one line)."""
    parsed = database_url(url, state_dir)
    if parsed.drivername.startswith("sqlite") and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_store_engine(parsed)
    try:
        migrate(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        raise StoreUnavailable(f"the audit store at {describe(parsed)} {reason(error)}") from error
    return engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> None:
    """Apply every migration the database does not have yet (Alembic, in one transaction)."""
    config = alembic_config()
    with engine.begin() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head_version():
            return  # up to date: the usual start, without loading Alembic's environment
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def schema_version(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def head_version() -> str | None:
    """The newest migration this build has."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def reason(error: BaseException) -> str:
    """Why a database call failed, in plain words: "cannot be reached: connection refused"."""
    original = error.orig if isinstance(error, DBAPIError) else error
    text = " ".join(str(original).split())
    lowered = text.lower()
    if "connection refused" in lowered:
        return "cannot be reached: connection refused (nothing is listening)"
    if "timeout" in lowered or "timed out" in lowered:
        return "cannot be reached: the connection timed out"
    if "does not exist" in lowered and "database" in lowered:
        return "cannot be used: " + text[:200]
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return "cannot be reached: unknown host"
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return "cannot be reached: the connection was lost"
    return "cannot be used: " + text[:200]
