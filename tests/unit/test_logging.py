"""Logging: JSON lines with bound context, stdlib records in the same format, secrets scrubbed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from ai_employee.config import load_settings
from ai_employee.observability.logging import (
    REDACTED,
    clear_registered_secrets,
    configure_logging,
    redact_fields,
    register_secret,
    register_settings_secrets,
)

SECRET = "s3cr3t-VALUE-9f8e7d"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.contextvars.clear_contextvars()
    clear_registered_secrets()
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging("debug", "auto", stream=out)
    return out


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_non_terminal_stream_gets_json_lines_with_logger_level_event(stream: io.StringIO) -> None:
    structlog.get_logger("ai_employee.test").info("file detected", name="a.pdf")

    (line,) = lines(stream)
    assert line["event"] == "file detected"
    assert line["level"] == "info"
    assert line["logger"] == "ai_employee.test"
    assert line["name"] == "a.pdf"


def test_timestamp_is_iso_8601_utc(stream: io.StringIO) -> None:
    structlog.get_logger("t").info("tick")

    stamp = datetime.fromisoformat(lines(stream)[0]["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset() == UTC.utcoffset(None)


def test_bound_action_id_appears_on_lines_written_while_bound(stream: io.StringIO) -> None:
    log = structlog.get_logger("ai_employee.pipeline")
    structlog.contextvars.bind_contextvars(action_id="act-20261121-101500-a1b2c3")
    log.info("planning")
    logging.getLogger("aiohttp.client").info("HTTP Request: POST http://127.0.0.1/v1/messages")
    structlog.contextvars.unbind_contextvars("action_id")
    log.info("idle")

    first, second, third = lines(stream)
    assert first["action_id"] == "act-20261121-101500-a1b2c3"
    assert second["action_id"] == "act-20261121-101500-a1b2c3"
    assert "action_id" not in third


def test_stdlib_records_are_rendered_like_structlog_events(stream: io.StringIO) -> None:
    logging.getLogger("aiohttp.server").warning("bad request from %s", "127.0.0.1")

    (line,) = lines(stream)
    assert line["event"] == "bad request from 127.0.0.1"
    assert line["logger"] == "aiohttp.server"
    assert line["level"] == "warning"
    assert "timestamp" in line


def test_level_filters_lower_levels() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)

    structlog.get_logger("t").info("hidden")
    logging.getLogger("x").info("hidden too")
    structlog.get_logger("t").warning("shown")

    assert [line["event"] for line in lines(out)] == ["shown"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("verbose", stream=io.StringIO())


def test_configuring_twice_writes_each_line_once_to_the_latest_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)

    structlog.get_logger("t").info("once")

    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once"]


def test_console_format_is_not_json() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)

    structlog.get_logger("t").info("readable", items=3)

    text = out.getvalue()
    assert "readable" in text and "items=3" in text
    assert not text.lstrip().startswith("{")


def test_values_of_keys_that_name_secrets_are_redacted(stream: io.StringIO) -> None:
    structlog.get_logger("t").info(
        "request",
        password="hunter2",
        api_key="sk-live-1",
        bot_token="123:abc",
        signing_secret="xyz",
        headers={"Authorization": "Basic dXNlcjpwdw==", "Cookie": "sid=1", "Accept": "text/html"},
        input_tokens=120,
    )

    (line,) = lines(stream)
    for key in ("password", "api_key", "bot_token", "signing_secret"):
        assert line[key] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Cookie": REDACTED, "Accept": "text/html"}
    assert line["input_tokens"] == 120


def test_registered_secret_is_replaced_inside_any_string(stream: io.StringIO) -> None:
    register_secret(SecretStr(SECRET))

    structlog.get_logger("t").info(
        f"calling https://api.telegram.org/bot{SECRET}/getUpdates",
        url=f"https://api.telegram.org/bot{SECRET}/getMe",
        nested={"notes": [f"prefix {SECRET} suffix"]},
    )

    raw = stream.getvalue()
    assert SECRET not in raw
    (line,) = lines(stream)
    assert line["url"] == f"https://api.telegram.org/bot{REDACTED}/getMe"
    assert line["nested"] == {"notes": [f"prefix {REDACTED} suffix"]}


def test_registered_secret_is_replaced_in_exception_tracebacks(stream: io.StringIO) -> None:
    register_secret(SECRET)

    try:
        raise RuntimeError(f"login failed with password {SECRET}")
    except RuntimeError:
        structlog.get_logger("t").exception("atlas login failed")

    assert SECRET not in stream.getvalue()
    (line,) = lines(stream)
    assert "RuntimeError: login failed with password ***" in line["exception"]


def test_registered_secret_is_replaced_in_exception_values(stream: io.StringIO) -> None:
    register_secret(SECRET)

    structlog.get_logger("t").error("call failed", error=ValueError(f"bad key {SECRET}"))

    assert SECRET not in stream.getvalue()
    assert lines(stream)[0]["error"] == f"ValueError: bad key {REDACTED}"


def test_registered_secret_is_replaced_in_stdlib_messages_and_tracebacks(stream: io.StringIO) -> None:
    register_secret(SECRET)

    try:
        raise ConnectionError(f"https://x.invalid/bot{SECRET}/getMe unreachable")
    except ConnectionError:
        logging.getLogger("telegram.ext").exception("polling with %s failed", SECRET)

    assert SECRET not in stream.getvalue()
    (line,) = lines(stream)
    assert line["event"] == f"polling with {REDACTED} failed"
    assert f"bot{REDACTED}/getMe" in line["exception"]


def test_console_tracebacks_are_redacted_too() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    register_secret(SECRET)

    try:
        raise RuntimeError(f"token {SECRET} rejected")
    except RuntimeError:
        structlog.get_logger("t").exception("failed")

    text = out.getvalue()
    assert SECRET not in text
    assert f"token {REDACTED} rejected" in text


def test_passwords_in_urls_and_query_tokens_are_redacted(stream: io.StringIO) -> None:
    structlog.get_logger("t").info(
        "connecting", dsn="postgresql://aie:pw-123@127.0.0.1/aie", target="http://h/cb?token=abc&n=1"
    )

    line = lines(stream)[0]
    assert line["dsn"] == f"postgresql://aie:{REDACTED}@127.0.0.1/aie"
    assert line["target"] == f"http://h/cb?token={REDACTED}&n=1"


def test_every_secret_of_the_settings_can_be_registered(
    stream: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        environ={"ATLAS_PASSWORD": "atlas-pass-77", "TELEGRAM_BOT_TOKEN": "42:telegram-token-x"}
    )

    assert register_settings_secrets(settings) == 2
    structlog.get_logger("t").info("config atlas-pass-77 and 42:telegram-token-x")

    assert lines(stream)[0]["event"] == f"config {REDACTED} and {REDACTED}"


def test_redact_fields_applies_the_same_rules_outside_logging() -> None:
    register_secret(SECRET)

    cleaned = redact_fields({"id": "plan-1", "error": f"401 for key {SECRET}", "api_key": "k"})

    assert cleaned == {"id": "plan-1", "error": f"401 for key {REDACTED}", "api_key": REDACTED}
