"""One logging configuration for the whole process, with secrets scrubbed in one place.

structlog renders both its own events and every stdlib record (watchdog, httpx, aiohttp,
asyncio), so a log line looks the same whoever wrote it: JSON lines when the output is a
file or a pipe (journald, containers, log shippers), a readable console when a person is
watching a terminal. Context bound with `structlog.contextvars.bind_contextvars` (the
action id above all) appears on every line written while it is bound, which is what lets
one grep tell an item's whole story.

Secrets are removed by one processor that runs last before rendering, after exceptions
have been turned into text, so neither a careless `log.info(..., token=...)`, nor a
library's debug line, nor a traceback whose message quotes a URL with a bot token can
leak a credential. Two rules: values of keys that name a secret become "***", and every
value registered with `register_secret` is replaced by "***" wherever it appears in text.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog
from pydantic import BaseModel, SecretBytes, SecretStr
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "LogFormat",
    "clear_registered_secrets",
    "configure_logging",
    "redact_event",
    "redact_fields",
    "redact_text",
    "register_secret",
    "register_settings_secrets",
]

REDACTED = "***"
LogFormat = Literal["auto", "json", "console"]

# Shorter values would turn ordinary words and numbers into "***" all over the logs.
MIN_SECRET_LENGTH = 4

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

# A key is secret when, lower-cased with separators removed, it contains one of these...
_SECRET_FRAGMENTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "authorization",
    "cookie",
    "signature",
    "credential",
    "privatekey",
    "accesskey",
    "sessionid",
)
# ...or when its last word is one of these (`bot_token` is secret; `input_tokens`, `token_count` are not)...
_SECRET_LAST_WORDS = frozenset({"token", "pwd", "jwt", "otp"})
# ...or when any of its words is one of these.
_SECRET_WORDS = frozenset({"auth", "bearer"})
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Credentials written into URLs: scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?=@)")
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}")
# `token=...` in query strings and messages, `"api_key": "..."` in quoted JSON bodies.
_ASSIGNED = re.compile(
    r"(?P<head>(?<![A-Za-z0-9])[A-Za-z0-9_-]*(?:password|passwd|secret|token|api_?key|apikey|signature)"
    r"(?:=|\"\s*:\s*\"))(?P<value>[^\s&,;\"']+)",
    re.IGNORECASE,
)

# Keys the renderers interpret themselves; never rewritten.
_PASSTHROUGH_KEYS = frozenset({"exc_info", "stack_info", "_record", "_from_structlog"})

_HANDLER_MARK = "_ai_employee_handler"


class _SecretRegistry:
    """The values to scrub from every line; one alternation regex, rebuilt on change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            # Longest first, so a secret that contains another is replaced whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(item) for item in ordered))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return text


_REGISTRY = _SecretRegistry()


def register_secret(value: str | SecretStr | SecretBytes | bytes | None) -> None:
    """Never let `value` appear in a log line, whatever key or message it hides in.

    The daemon calls this with every secret of its settings at start; clients that
    obtain short-lived credentials (session tokens, signed URLs) call it too.
    """
    if value is None:
        return
    if isinstance(value, SecretStr | SecretBytes):
        value = value.get_secret_value()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    _REGISTRY.add(value)


def register_settings_secrets(model: BaseModel) -> int:
    """Register every `SecretStr`/`SecretBytes` found in a settings tree; returns how many."""
    count = 0
    for value in _walk_model(model):
        if isinstance(value, SecretStr | SecretBytes):
            register_secret(value)
            count += 1
    return count


def _walk_model(value: Any) -> Iterable[Any]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk_model(getattr(value, name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk_model(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _walk_model(item)
    else:
        yield value


def clear_registered_secrets() -> None:
    """Forget every registered value (tests; a daemon never needs to)."""
    _REGISTRY.clear()


@functools.lru_cache(maxsize=4096)  # keys repeat endlessly; deciding costs more than the rest
def _is_secret_key(key: str) -> bool:
    lowered = _CAMEL.sub("_", key).lower()
    compact = _WORD_SPLIT.sub("", lowered)
    if any(fragment in compact for fragment in _SECRET_FRAGMENTS):
        return True
    words = [word for word in _WORD_SPLIT.split(lowered) if word]
    if words and words[-1] in _SECRET_LAST_WORDS:
        return True
    return any(word in _SECRET_WORDS for word in words)


def redact_text(text: str) -> str:
    """Scrub registered secrets, URL passwords and bearer credentials from free text."""
    text = _REGISTRY.scrub(text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda match: match.group("head") + REDACTED, text)
    if "Bearer" in text or "Basic" in text:
        text = _BEARER.sub(lambda match: match.group("head") + REDACTED, text)
    if "=" in text or ":" in text:
        text = _ASSIGNED.sub(lambda match: match.group("head") + REDACTED, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {key: _redact_item(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", errors="replace"))
    # Anything else is rendered by repr (JSON) or str (console); scrub only if that leaks.
    shown = repr(value)
    cleaned = redact_text(shown)
    return value if cleaned == shown else cleaned


def _redact_item(key: Any, value: Any) -> Any:
    if isinstance(key, str) and _is_secret_key(key) and value is not None and not isinstance(value, bool):
        return REDACTED
    return _redact_value(value)


def redact_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A scrubbed copy of `fields`, by the same rules as the logs (for the audit trail too)."""
    return {key: _redact_item(key, value) for key, value in fields.items()}


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last word before rendering on what may be written."""
    for key, value in list(event_dict.items()):
        if key in _PASSTHROUGH_KEYS:
            continue
        event_dict[key] = _redact_item(key, value)
    return event_dict


def _redacting_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """Console exception formatter: a plain traceback, scrubbed like every other text."""
    text = "".join(traceback.format_exception(*exc_info))
    sio.write("\n" + redact_text(text))


def _shared_processors() -> list[Processor]:
    """What every event goes through, structlog's or stdlib's, before formatting."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # closed stream
        return False


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Route all logging of the process through structlog; safe to call again (it replaces).

    `fmt="auto"` writes JSON lines unless `stream` is a terminal. `stream` defaults to the
    current `sys.stdout` (looked up at call time, so pytest's capture is honoured).
    """
    if stream is None:
        stream = sys.stdout
    numeric = _LEVELS.get(level.strip().lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(sorted(_LEVELS))}")
    terminal = _is_terminal(stream)
    as_json = fmt == "json" or (fmt == "auto" and not terminal)

    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if as_json:
        final += [
            structlog.processors.format_exc_info,
            structlog.processors.StackInfoRenderer(),
            redact_event,
        ]
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        final += [structlog.processors.StackInfoRenderer(), redact_event]
        renderer = structlog.dev.ConsoleRenderer(colors=terminal, exception_formatter=_redacting_traceback)
    final.append(renderer)

    shared = _shared_processors()
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # Libraries that are chatty at INFO about things nobody acts on.
    for name in ("watchdog", "httpcore", "hpack", "httpx"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # Not cached: a logger first used before configuration must follow the later one.
        cache_logger_on_first_use=False,
    )
