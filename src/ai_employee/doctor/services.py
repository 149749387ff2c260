"""One real, cheap call to each configured outside service, through the clients the daemon uses.

Each check returns a finding and never raises: a refused credential is a `fail` with what to set,
a server that cannot be reached is a `fail` with the reason in plain words, a service that is not
configured is `ok` (it stays off, as the contract says). The caller puts a deadline on each.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from ai_employee.clients.atlas import AtlasClient
from ai_employee.clients.link import describe_failure
from ai_employee.clients.manus import ManusClient
from ai_employee.clients.retry import RetryPolicy, ServiceAuthError, ServiceError
from ai_employee.config import Settings
from ai_employee.doctor.report import Check
from ai_employee.planners.claude import DEFAULT_BASE_URL as ANTHROPIC_DEFAULT_BASE_URL
from ai_employee.planners.openai import DEFAULT_BASE_URL as OPENAI_DEFAULT_BASE_URL
from ai_employee.sources.email_mailbox import Mailbox

ONCE = RetryPolicy(attempts=1)
#: Redis Streams need 5.0; XAUTOCLAIM (taking over a dead worker's messages) needs 6.2
REDIS_MINIMUM = (6, 2)
OFF = "not configured: stays off"


def _unreachable(name: str, error: BaseException, seconds: float, what: str, setting: str) -> Check:
    return Check.fail(
        name,
        f"cannot reach {what}: {describe_failure(error, timeout=seconds)}",
        f"check that the server is up and reachable from here, and {setting}",
    )


async def atlas(settings: Settings, seconds: float) -> Check:
    config = settings.atlas
    if not (config.base_url and config.email and config.password):
        return Check.ok("atlas", f"{OFF} (ATLAS_BASE_URL, ATLAS_EMAIL, ATLAS_PASSWORD)")
    client = AtlasClient(
        config.base_url,
        config.email,
        config.password.get_secret_value(),
        timeout_seconds=seconds,
        connect_timeout=seconds,
        retry=ONCE,
    )
    try:
        me = await client.request("GET", "/auth/me")  # signs in first: the sign-in is the check
    except ServiceAuthError as error:
        return Check.fail("atlas", str(error), "set ATLAS_EMAIL and ATLAS_PASSWORD to a user Atlas accepts")
    except ServiceError as error:
        return Check.fail(
            "atlas", str(error), f"check that ATLAS_BASE_URL ({config.base_url}) is Atlas's API root"
        )
    except httpx.HTTPError as error:
        return _unreachable("atlas", error, seconds, f"Atlas at {config.base_url}", "ATLAS_BASE_URL")
    finally:
        await client.aclose()
    who = me.get("email") if isinstance(me, dict) else None
    return Check.ok("atlas", f"signed in to {config.base_url}" + (f" as {who}" if who else ""))


async def manus(settings: Settings, seconds: float) -> Check:
    config = settings.manus
    if config.api_key is None or not config.api_key.get_secret_value():
        return Check.ok("manus", f"{OFF} (MANUS_API_KEY)")
    client = ManusClient(
        config.api_key.get_secret_value(),
        config.base_url,
        timeout_seconds=seconds,
        connect_timeout=seconds,
        retry=ONCE,
    )
    try:
        await client.list_tasks(limit=1)
    except ServiceAuthError as error:
        return Check.fail("manus", str(error), "set MANUS_API_KEY to a key from Manus's API settings")
    except ServiceError as error:
        return Check.fail("manus", str(error), f"check MANUS_BASE_URL ({config.base_url})")
    except httpx.HTTPError as error:
        return _unreachable("manus", error, seconds, f"Manus at {config.base_url}", "MANUS_BASE_URL")
    finally:
        await client.aclose()
    return Check.ok("manus", f"the API key works at {config.base_url}")


async def telegram(settings: Settings, seconds: float) -> Check:
    config = settings.telegram
    if config.bot_token is None or not config.bot_token.get_secret_value():
        return Check.ok("telegram", f"{OFF} (TELEGRAM_BOT_TOKEN)")
    from telegram import Bot
    from telegram.error import InvalidToken, NetworkError, TelegramError
    from telegram.request import HTTPXRequest

    root = config.api_base_url.rstrip("/")
    request = HTTPXRequest(
        connect_timeout=seconds, read_timeout=seconds, write_timeout=seconds, pool_timeout=seconds
    )
    bot = Bot(
        config.bot_token.get_secret_value(),
        base_url=f"{root}/bot",
        base_file_url=f"{root}/file/bot",
        request=request,
        get_updates_request=request,
    )
    try:
        me = await bot.get_me()
    except InvalidToken:
        return Check.fail(
            "telegram", "the Bot API refused the token", "set TELEGRAM_BOT_TOKEN to the token @BotFather gave"
        )
    except NetworkError as error:
        return _unreachable("telegram", error, seconds, f"the Bot API at {root}", "TELEGRAM_API_BASE_URL")
    except TelegramError as error:
        return Check.fail(
            "telegram", f"getMe failed: {error}", "check TELEGRAM_BOT_TOKEN and TELEGRAM_API_BASE_URL"
        )
    finally:
        await request.shutdown()
    if not config.allowed_chat_ids:
        return Check.warn(
            "telegram",
            f"signed in as @{me.username}, but no chat is allowed: every message is refused",
            "set TELEGRAM_ALLOWED_CHAT_IDS to the chats that may send work",
        )
    return Check.ok(
        "telegram", f"signed in as @{me.username}; {len(config.allowed_chat_ids)} chat(s) allowed"
    )


async def imap(settings: Settings, seconds: float) -> Check:
    config = settings.email
    if not (config.host and config.user and (config.password or config.oauth2_token)):
        return Check.ok("email", f"{OFF} (IMAP_HOST, IMAP_USER, IMAP_PASSWORD)")
    mailbox = Mailbox(config, connect_timeout=seconds, read_timeout=seconds)

    def login() -> Any:
        try:
            return mailbox.open()
        finally:
            mailbox.close()

    try:
        info = await asyncio.to_thread(login)
    except asyncio.CancelledError:
        mailbox.abort()
        raise
    except Exception as error:
        words = mailbox.describe(error)
        if words.startswith("login failed"):
            return Check.fail(
                "email",
                words,
                "set IMAP_USER and IMAP_PASSWORD (an app password where the provider needs one)",
            )
        return Check.fail(
            "email", f"{config.host}:{mailbox.port}: {words}", "check IMAP_HOST, IMAP_PORT and IMAP_SSL"
        )
    idle = "IDLE" if info.idle else "no IDLE: polled"
    return Check.ok("email", f"logged in to {config.host}:{mailbox.port}, folder {config.folder} ({idle})")


async def slack(settings: Settings, seconds: float) -> Check:
    config = settings.slack
    if config.bot_token is None or not config.bot_token.get_secret_value():
        return Check.ok("slack", f"{OFF} (SLACK_BOT_TOKEN)")
    try:
        from slack_sdk.errors import SlackApiError
        from slack_sdk.web.async_client import AsyncWebClient
    except ImportError:
        return Check.fail("slack", "slack-sdk is not installed", 'pip install "ai-employee[all]"')
    client = AsyncWebClient(
        token=config.bot_token.get_secret_value(), base_url=config.api_base_url, timeout=int(max(1, seconds))
    )
    try:
        answer = await client.auth_test()
    except SlackApiError as error:
        code = error.response.get("error") if error.response is not None else None
        return Check.fail(
            "slack",
            f"auth.test refused the token: {code}",
            "set SLACK_BOT_TOKEN to the app's xoxb- bot token",
        )
    except Exception as error:
        return _unreachable("slack", error, seconds, f"Slack at {config.api_base_url}", "SLACK_API_BASE_URL")
    finally:
        session = getattr(client, "session", None)
        if session is not None:
            await session.close()
    return Check.ok("slack", f"signed in as {answer.get('user')} in {answer.get('team')}")


async def anthropic_models(settings: Settings, seconds: float) -> Check:
    key = settings.anthropic.api_key
    if key is None or not key.get_secret_value():
        return Check.ok("anthropic", f"{OFF} (ANTHROPIC_API_KEY)")
    import anthropic

    base_url = settings.anthropic.base_url or ANTHROPIC_DEFAULT_BASE_URL
    models = await _listed_models(
        "anthropic",
        anthropic,
        anthropic.AsyncAnthropic,
        key.get_secret_value(),
        base_url,
        seconds,
        api="Anthropic",
        key_hint="set ANTHROPIC_API_KEY to a key from console.anthropic.com",
        limit=100,
    )
    if isinstance(models, Check):
        return models
    return _model_listed("anthropic", settings.planner.claude_model, models, "planner.claude_model")


async def openai_models(settings: Settings, seconds: float) -> Check:
    key = settings.openai.api_key
    if key is None or not key.get_secret_value():
        return Check.ok("openai", f"{OFF} (OPENAI_API_KEY)")
    import openai

    base_url = settings.openai.base_url or OPENAI_DEFAULT_BASE_URL
    models = await _listed_models(
        "openai",
        openai,
        openai.AsyncOpenAI,
        key.get_secret_value(),
        base_url,
        seconds,
        api="OpenAI",
        key_hint="set OPENAI_API_KEY to a key from platform.openai.com",
    )
    if isinstance(models, Check):
        return models
    wanted = (
        settings.planner.openai_model
        if settings.planner_kind() == "openai"
        else settings.openai.transcription_model
    )
    setting = "planner.openai_model" if settings.planner_kind() == "openai" else "openai.transcription_model"
    return _model_listed("openai", wanted, models, setting)


async def _listed_models(
    name: str,
    sdk: Any,
    client_class: Any,
    key: str,
    base_url: str,
    seconds: float,
    *,
    api: str,
    key_hint: str,
    **query: Any,
) -> list[str] | Check:
    """The model ids the key may use, through the vendor's own SDK (anthropic and openai raise alike),
    or the finding that says why not; the client is closed either way."""
    setting = f"{name.upper()}_BASE_URL"
    client = client_class(api_key=key, base_url=base_url, timeout=seconds, max_retries=0)
    try:
        page = await client.models.list(**query)
        return [model.id for model in page.data]
    except sdk.AuthenticationError:
        return Check.fail(name, "the API key was refused", key_hint)
    except sdk.APIStatusError as error:
        return Check.fail(
            name, f"listing models answered {error.status_code}", f"check {setting} ({base_url})"
        )
    except sdk.APIConnectionError as error:
        return _unreachable(name, error, seconds, f"the {api} API at {base_url}", setting)
    finally:
        await client.close()


def _model_listed(name: str, wanted: str, models: list[str], setting: str) -> Check:
    if models and wanted not in models:
        return Check.warn(
            name,
            f"the key works, but {wanted} is not among its {len(models)} models",
            f"set {setting} to one of: {', '.join(sorted(models)[:8])}",
        )
    return Check.ok(name, f"the key works; {len(models)} models, {wanted} among them")


def _sqlalchemy_url(url: str) -> str:
    """`postgresql://` (the contract's form) through psycopg 3, the driver installed."""
    return re.sub(r"^postgres(?:ql)?://", "postgresql+psycopg://", url)


async def postgresql(settings: Settings, seconds: float) -> Check:
    url = settings.database.url
    if not url or not url.startswith(("postgresql", "postgres:")):
        return Check.ok("postgresql", "not configured: the audit store is SQLite in .ai-employee/")
    try:
        import sqlalchemy
    except ImportError:
        return Check.fail("postgresql", "SQLAlchemy is not installed", 'pip install "ai-employee[all]"')

    def probe() -> tuple[str, str | None]:
        engine = sqlalchemy.create_engine(
            _sqlalchemy_url(url),
            connect_args={"connect_timeout": max(1, int(seconds))},
            poolclass=sqlalchemy.pool.NullPool,
        )
        try:
            with engine.connect() as connection:
                server = str(connection.execute(sqlalchemy.text("SHOW server_version")).scalar())
                has_alembic = connection.execute(
                    sqlalchemy.text("SELECT to_regclass('alembic_version')")
                ).scalar()
                revision = None
                if has_alembic is not None:
                    revision = connection.execute(
                        sqlalchemy.text("SELECT version_num FROM alembic_version")
                    ).scalar()
                return server, None if revision is None else str(revision)
        finally:
            engine.dispose()

    try:
        server, revision = await asyncio.to_thread(probe)
    except Exception as error:
        words = describe_failure(error, timeout=seconds).splitlines()[0]
        return Check.fail(
            "postgresql", f"cannot connect: {words}", "check DATABASE_URL (user, password, host, database)"
        )
    if revision is None:
        return Check.ok("postgresql", f"PostgreSQL {server}; no schema yet: the daemon creates it at start")
    return Check.ok("postgresql", f"PostgreSQL {server}; schema at revision {revision}", revision=revision)


async def redis_server(settings: Settings, seconds: float) -> Check:
    url = settings.redis.url
    if not url:
        return Check.ok("redis", "not configured: the event bus runs in the daemon (no workers)")
    try:
        import redis.asyncio as aioredis
        from redis.exceptions import AuthenticationError, RedisError
    except ImportError:
        return Check.fail("redis", "the redis package is not installed", 'pip install "ai-employee[all]"')
    client = aioredis.from_url(url, socket_connect_timeout=seconds, socket_timeout=seconds)
    try:
        await client.ping()
        info = await client.info("server")
    except AuthenticationError as error:
        return Check.fail(
            "redis",
            f"refused: {error}",
            "put the right password in REDIS_URL (redis://:PASSWORD@host:6379/0)",
        )
    except (RedisError, OSError) as error:
        return Check.fail(
            "redis", f"cannot reach it: {describe_failure(error, timeout=seconds)}", "check REDIS_URL"
        )
    finally:
        await client.aclose()
    version = str(info.get("redis_version", "0"))
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if numbers < REDIS_MINIMUM:
        return Check.fail(
            "redis", f"Redis {version} is too old for the workers' streams", "use Redis 6.2 or newer"
        )
    return Check.ok("redis", f"Redis {version}")


#: (the finding's name, the check), in the order they are shown
CHECKS = (
    ("atlas", atlas),
    ("manus", manus),
    ("telegram", telegram),
    ("email", imap),
    ("slack", slack),
    ("anthropic", anthropic_models),
    ("openai", openai_models),
    ("postgresql", postgresql),
    ("redis", redis_server),
)
