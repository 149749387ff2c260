"""`doctor`'s calls to the outside services, against the loopback fakes and the real PostgreSQL,
Redis and Dovecot: good credentials pass, refused ones fail with a fix, no secret is ever shown."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from ai_employee.config import Settings, load_settings
from ai_employee.doctor.report import Check, Report, Status
from ai_employee.doctor.run import check_services
from ai_employee.observability.logging import register_settings_secrets
from tests.conftest import skip_or_fail
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.atlas_server import AtlasFake
from tests.fakes.loopback import LoopbackServer
from tests.fakes.manus_server import ManusFake
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.telegram_server import FakeTelegram

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


class SlackAuthFake(LoopbackServer):
    """Slack's `auth.test` (shared/apis.md section 5): HTTP 200 with `ok`, Bearer xoxb- token."""

    def __init__(self, token: str = "xoxb-test-doctor") -> None:
        self.token = token
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/auth.test", self._auth_test)

    async def _auth_test(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response(
            {"ok": True, "url": "https://acme.slack.com/", "team": "Acme", "user": "aie", "team_id": "T1"}
        )


class Fakes:
    def __init__(self) -> None:
        self.atlas = AtlasFake()
        self.manus = ManusFake(api_key="manus-doctor-key")
        self.telegram = FakeTelegram()
        self.slack = SlackAuthFake()
        self.anthropic = AnthropicFake(api_key="sk-ant-doctor")
        self.openai = OpenAIFake(api_key="sk-openai-doctor")

    def environ(self, **changes: str) -> dict[str, str]:
        env = {
            "ATLAS_BASE_URL": self.atlas.base_url,
            "ATLAS_EMAIL": "admin@example.com",
            "ATLAS_PASSWORD": "s3cret-pass",
            "MANUS_API_KEY": self.manus.api_key,
            "MANUS_BASE_URL": self.manus.base_url,
            "TELEGRAM_BOT_TOKEN": self.telegram.token,
            "TELEGRAM_API_BASE_URL": self.telegram.root_url,
            "TELEGRAM_ALLOWED_CHAT_IDS": "42",
            "SLACK_BOT_TOKEN": self.slack.token,
            "SLACK_API_BASE_URL": self.slack.base_url + "/api/",
            "ANTHROPIC_API_KEY": self.anthropic.api_key,
            "ANTHROPIC_BASE_URL": self.anthropic.base_url,
            "OPENAI_API_KEY": self.openai.api_key,
            "OPENAI_BASE_URL": self.openai.sdk_base_url,
        }
        env.update(changes)
        return env


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    running = Fakes()
    servers: list[Any] = [running.atlas, running.manus, running.slack, running.anthropic, running.openai]
    for server in servers:
        await server.start()
    await running.telegram.start()
    yield running
    await running.telegram.stop()
    for server in servers:
        await server.stop()


def _settings(environ: dict[str, str]) -> Settings:
    settings = load_settings(None, environ=environ, overrides={("vault", "path"): "/nonexistent"})
    register_settings_secrets(settings)
    return settings


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check.redacted() for check in checks}


async def test_every_configured_service_passes_with_good_credentials(fakes: Fakes) -> None:
    found = _by_name(await check_services(_settings(fakes.environ()), 5.0))
    for name in ("atlas", "manus", "telegram", "slack", "anthropic", "openai"):
        assert found[name].status is Status.OK, found[name]
    assert "signed in" in found["atlas"].detail and "admin@example.com" in found["atlas"].detail
    assert fakes.atlas.requests_to("POST", "/auth/signin")
    assert f"@{fakes.telegram.bot_username}" in found["telegram"].detail
    assert "claude-sonnet-4-6 among them" in found["anthropic"].detail
    assert "whisper-1 among them" in found["openai"].detail
    assert found["slack"].detail == "signed in as aie in Acme"


async def test_refused_credentials_fail_with_a_fix_and_show_no_secret(fakes: Fakes) -> None:
    secrets = {
        "ATLAS_PASSWORD": "wrong-atlas-pass",
        "MANUS_API_KEY": "wrong-manus-key",
        "TELEGRAM_BOT_TOKEN": "123456789:AAWrongTokenWrongTokenWrongToken_xyz",
        "SLACK_BOT_TOKEN": "xoxb-wrong-slack",
        "ANTHROPIC_API_KEY": "sk-ant-wrong",
        "OPENAI_API_KEY": "sk-openai-wrong",
    }
    checks = await check_services(_settings(fakes.environ(**secrets)), 5.0)
    found = _by_name(checks)
    for name in ("atlas", "manus", "telegram", "slack", "anthropic", "openai"):
        assert found[name].status is Status.FAIL, found[name]
        assert found[name].fix
    assert "ATLAS_PASSWORD" in (found["atlas"].fix or "")
    assert "invalid_auth" in found["slack"].detail
    shown = json.dumps(Report("0", "/v", list(found.values())).to_dict())
    for secret in secrets.values():
        assert secret not in shown


async def test_a_configured_model_the_key_cannot_use_is_a_warning(fakes: Fakes) -> None:
    fakes.anthropic.models = ["claude-haiku-4-5"]
    found = _by_name(await check_services(_settings(fakes.environ()), 5.0))
    assert found["anthropic"].status is Status.WARN
    assert "planner.claude_model" in (found["anthropic"].fix or "")


async def test_a_server_that_is_down_fails_in_plain_words() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    environ = {"ATLAS_BASE_URL": f"http://127.0.0.1:{closed}", "ATLAS_EMAIL": "a@b.c", "ATLAS_PASSWORD": "p"}
    found = _by_name(await check_services(_settings(environ), 2.0))
    assert found["atlas"].status is Status.FAIL
    assert "connection refused" in found["atlas"].detail


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers: the worst kind of server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


async def test_a_server_that_never_answers_costs_only_the_deadline(silent_server: int) -> None:
    environ = {"MANUS_API_KEY": "k", "MANUS_BASE_URL": f"http://127.0.0.1:{silent_server}"}
    started = time.monotonic()
    found = _by_name(await check_services(_settings(environ), 0.5))
    assert time.monotonic() - started < 5
    assert found["manus"].status is Status.FAIL
    assert "timed out" in found["manus"].detail or "no answer" in found["manus"].detail


async def test_services_without_credentials_are_ok_and_off() -> None:
    found = _by_name(await check_services(_settings({}), 1.0))
    for name in (
        "atlas",
        "manus",
        "telegram",
        "email",
        "slack",
        "anthropic",
        "openai",
        "postgresql",
        "redis",
    ):
        assert found[name].status is Status.OK
    assert "stays off" in found["telegram"].detail


# --- the real PostgreSQL and Redis ------------------------------------------------------------


def _postgres_or_skip() -> Any:
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
            connect_args={"connect_timeout": 2},
            isolation_level="AUTOCOMMIT",
        )
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as error:
        skip_or_fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({type(error).__name__})")
    return engine


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own (i16_doctor_<random>) with an alembic_version table, dropped after."""
    import sqlalchemy

    engine = _postgres_or_skip()
    name = f"i16_doctor_{uuid.uuid4().hex[:8]}"
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    yield url
    engine.dispose()
    with _postgres_or_skip().connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def test_postgresql_reachable_reports_its_schema_revision(database: str) -> None:
    found = _by_name(await check_services(_settings({"DATABASE_URL": database}), 5.0))
    assert found["postgresql"].status is Status.OK
    assert "no schema yet" in found["postgresql"].detail

    import sqlalchemy

    engine = sqlalchemy.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        )
        connection.execute(sqlalchemy.text("INSERT INTO alembic_version VALUES ('0002_tasks')"))
    engine.dispose()
    found = _by_name(await check_services(_settings({"DATABASE_URL": database}), 5.0))
    assert found["postgresql"].status is Status.OK
    assert "schema at revision 0002_tasks" in found["postgresql"].detail


async def test_postgresql_refusing_the_login_fails_without_showing_the_password() -> None:
    _postgres_or_skip().dispose()
    url = "postgresql://no_such_role_i16:hunter2-secret@127.0.0.1:5432/test"
    found = _by_name(await check_services(_settings({"DATABASE_URL": url}), 5.0))
    assert found["postgresql"].status is Status.FAIL
    assert "DATABASE_URL" in (found["postgresql"].fix or "")
    assert "hunter2-secret" not in found["postgresql"].detail


async def test_redis_reachable_reports_its_version() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as error:
        skip_or_fail(f"Redis is not reachable at 127.0.0.1:6379 ({type(error).__name__})")
    finally:
        await client.aclose()
    found = _by_name(await check_services(_settings({"REDIS_URL": REDIS_URL}), 5.0))
    assert found["redis"].status is Status.OK and found["redis"].detail.startswith("Redis ")


async def test_redis_down_fails_with_the_reason() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    found = _by_name(await check_services(_settings({"REDIS_URL": f"redis://127.0.0.1:{closed}/0"}), 2.0))
    assert found["redis"].status is Status.FAIL
    assert "REDIS_URL" in (found["redis"].fix or "")


# --- IMAP login against a real Dovecot -------------------------------------------------------


async def test_imap_login_passes_with_the_password_and_fails_without() -> None:
    from tests.fakes.dovecot import DovecotServer

    server = await asyncio.to_thread(lambda: DovecotServer().start())
    try:
        user = server.new_user("doctor")
        base = {
            "IMAP_HOST": "127.0.0.1",
            "IMAP_PORT": str(server.port),
            "IMAP_SSL": "false",
            "IMAP_USER": user,
        }
        good = _by_name(await check_services(_settings({**base, "IMAP_PASSWORD": server.password}), 5.0))
        assert good["email"].status is Status.OK, good["email"]
        assert "logged in" in good["email"].detail
        bad = _by_name(await check_services(_settings({**base, "IMAP_PASSWORD": "wrong-imap-pass"}), 5.0))
        assert bad["email"].status is Status.FAIL
        assert "login failed" in bad["email"].detail and "wrong-imap-pass" not in bad["email"].detail
    finally:
        await asyncio.to_thread(server.close)
