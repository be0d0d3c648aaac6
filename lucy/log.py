"""Structured logging: JSON lines in production, console lines in development.

Every line goes through :func:`redact`, including lines from libraries (slack_bolt, aiohttp,
composio) that log through the standard library, so tokens, API keys and OAuth codes never
reach a log line.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"

# Shapes of secrets we know: Slack tokens, OpenAI/Anthropic-style keys, Composio keys, bearer
# headers, and OAuth codes or tokens carried in URLs.
_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"xox[abposre]-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bak_[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)(?<=[?&])(code|state|token|access_token|refresh_token|client_secret|api_key|key)=[^&\s\"']+"
    ),
    re.compile(r"(?i)(?<=://)[^/@\s:]+:[^/@\s]+(?=@)"),  # user:password@ in URLs
]

_SECRET_KEYS = re.compile(
    r"(?i)(token|secret|password|passwd|api[_-]?key|authorization|cookie|signature|^code$|oauth_code)"
)

_extra_secrets: list[str] = []


def add_secrets(values: Sequence[str]) -> None:
    """Redact these exact values too (the configured keys, whatever their shape)."""
    for value in values:
        if value and value not in _extra_secrets:
            _extra_secrets.append(value)


def redact_text(text: str) -> str:
    for secret in _extra_secrets:
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement(pattern), text)
    return text


def _replacement(pattern: re.Pattern[str]) -> str:
    # Keep the query parameter's name so the line still says what was there.
    if "(?<=[?&])" in pattern.pattern:
        return r"\1=" + REDACTED
    return REDACTED


def redact_value(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEYS.search(key) and isinstance(value, str | bytes) and value:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: scrub every value of the event."""
    for key in list(event_dict):
        if key in ("exc_info", "_record", "_from_structlog"):
            continue
        event_dict[key] = redact_value(event_dict[key], "" if key == "event" else key)
    return event_dict


def _redact_rendered(_logger: Any, _method: str, event_dict: Any) -> Any:
    # Tracebacks are rendered into strings before this point; scrub them as text.
    if isinstance(event_dict, str):
        return redact_text(event_dict)
    return event_dict


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library through one redacting pipeline."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt != "console":
        final.append(structlog.processors.format_exc_info)
    final += [renderer, _redact_rendered]
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Lucy's own lines follow the root level set here, whatever an earlier caller left on "lucy".
    logging.getLogger("lucy").setLevel(logging.NOTSET)
    # Chatty libraries stay at warning unless we debug.
    for name in ("aiohttp.access", "httpx", "httpcore", "LiteLLM", "litellm", "composio", "asyncio"):
        logging.getLogger(name).setLevel("DEBUG" if level == "debug" else "WARNING")
    structlog.configure(
        # Level first: a debug line below the level costs a lookup, not the redaction pipeline.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "lucy") -> Any:
    return structlog.stdlib.get_logger(name)


def new_turn_id() -> str:
    return uuid.uuid4().hex[:12]


@contextmanager
def turn_context(*, workspace: str, channel: str, thread: str, turn_id: str | None = None) -> Iterator[str]:
    """Bind workspace, channel, thread and turn id to every log line inside the block."""
    tid = turn_id or new_turn_id()
    tokens = structlog.contextvars.bind_contextvars(
        workspace=workspace, channel=channel, thread=thread, turn_id=tid
    )
    try:
        yield tid
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
