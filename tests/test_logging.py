"""Secrets never reach a log line, whichever logger writes it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from lucy.log import add_secrets, configure, get_logger, turn_context

BOT = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
APP = "xapp-1-A0123456789-1234567890123-abcdef0123456789"
OPENAI = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"
COMPOSIO = "ak_live_9f8e7d6c5b4a39281706"
ODD_KEY = "plain-looking-secret-value-42"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure("debug", "json", stream)
    add_secrets([ODD_KEY])
    yield stream
    configure("warning", "json")


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_tokens_and_keys_are_redacted_in_messages_and_fields(lines: io.StringIO) -> None:
    log = get_logger("lucy.test")
    log.info(f"posting with {BOT}", app_token=APP, headers={"Authorization": f"Bearer {OPENAI}"})
    log.warning("composio call", api_key=COMPOSIO, note=f"key={COMPOSIO}", extra=[ODD_KEY])
    text = lines.getvalue()
    for secret in (BOT, APP, OPENAI, COMPOSIO, ODD_KEY):
        assert secret not in text
    assert "[redacted]" in text


def test_oauth_codes_in_urls_are_redacted(lines: io.StringIO) -> None:
    get_logger("lucy.test").info(
        "callback", url="https://lucy.example.com/slack/oauth_redirect?code=4815162342.abc&state=s3cr3tst4te"
    )
    text = lines.getvalue()
    assert "4815162342.abc" not in text and "s3cr3tst4te" not in text
    assert "code=[redacted]" in text


def test_standard_library_loggers_are_redacted_too(lines: io.StringIO) -> None:
    logging.getLogger("slack_bolt.App").warning("token %s failed", BOT)
    try:
        raise RuntimeError(f"auth failed for {OPENAI}")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("handler crashed")
    text = lines.getvalue()
    assert BOT not in text and OPENAI not in text
    assert "handler crashed" in text


def test_database_passwords_are_redacted(lines: io.StringIO) -> None:
    get_logger("lucy.test").info("connecting", dsn="postgresql://lucy:hunter2pass@db:5432/lucy")
    assert "hunter2pass" not in lines.getvalue()


def test_every_line_of_a_turn_carries_workspace_channel_thread_and_turn_id(lines: io.StringIO) -> None:
    log = get_logger("lucy.test")
    with turn_context(workspace="T1", channel="C1", thread="1700000000.000100") as turn_id:
        log.info("thinking")
        logging.getLogger("lucy.other").info("from the standard library")
    log.info("after the turn")
    records = _records(lines)
    inside, after = records[:2], records[2]
    for record in inside:
        assert record["workspace"] == "T1" and record["channel"] == "C1"
        assert record["thread"] == "1700000000.000100" and record["turn_id"] == turn_id
    assert "workspace" not in after


def test_console_format_is_readable(lines: io.StringIO) -> None:
    stream = io.StringIO()
    configure("info", "console", stream)
    get_logger("lucy.test").info("hello there", token=BOT)
    out = stream.getvalue()
    assert "hello there" in out and BOT not in out
    assert not out.lstrip().startswith("{")
