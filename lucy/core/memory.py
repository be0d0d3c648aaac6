"""Thread memory: every message Lucy sees or writes in a thread, in OpenAI chat format.

Slack's ``conversations.replies`` is limited to about one call a minute for apps outside the
Marketplace, so Lucy never rebuilds a conversation from Slack: the Slack layer and the agent
store each message in ``thread_messages`` as it happens (:class:`ThreadMemory`), and a follow-up
reads the thread back from there. Every query filters by workspace.

Before a history goes to the model it is repaired (:func:`sanitize`: every tool call has exactly
one result, arguments are valid JSON) and fitted to the context window (:func:`fit_history`):
old tool outputs are shortened first, then the oldest exchanges are dropped — never a tool
call apart from its results — while the message that started the thread stays.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from lucy.core.types import JSON
from lucy.errors import DatabaseError

HISTORY_LIMIT = 400  # newest rows loaded per turn (plus the thread's first message)
_BYTES_PER_TOKEN = 2  # a high estimate; see message_tokens for the measurements
_MESSAGE_OVERHEAD_TOKENS = 8  # role, keys and the provider's per-message framing
_CALL_OVERHEAD_TOKENS = 12  # id, type and keys of one tool call
_OLD_TOOL_OUTPUT_CHARS = 400
_PINNED_MAX_CHARS = 4000
_MISSING_RESULT = "(no result was recorded for this call)"


def speaker(slack_user: str, user_name: str | None = None) -> str:
    """How a person is named in the prompt; ``<@U…>`` lets the model mention them back."""
    return f"{user_name} (<@{slack_user}>)" if user_name else f"<@{slack_user}>"


def user_message(text: str, slack_user: str, user_name: str | None = None) -> JSON:
    """A person's Slack message as the model reads it; threads can have several people."""
    return {"role": "user", "content": f"{speaker(slack_user, user_name)}: {text}"}


class HistoryStore(Protocol):
    """Where thread messages live. Every method is scoped by workspace."""

    async def start_turn(
        self, workspace: str, channel: str, thread_ts: str, *, slack_user: str, message: JSON,
        limit: int = HISTORY_LIMIT,
    ) -> list[JSON]:
        """Store the turn's own message and return the thread's history *before* it."""
        ...

    async def append(
        self, workspace: str, channel: str, thread_ts: str, messages: Sequence[JSON], *,
        slack_user: str | None = None,
    ) -> None: ...

    async def load(self, workspace: str, channel: str, thread_ts: str, *, limit: int = HISTORY_LIMIT) -> list[JSON]:
        ...

    async def append_user_message(
        self, workspace: str, channel: str, thread_ts: str, *, slack_user: str, text: str,
        user_name: str | None = None,
    ) -> None:
        """Store a message Lucy saw in a thread it takes part in (not addressed to it)."""
        ...

    async def has_thread(self, workspace: str, channel: str, thread_ts: str) -> bool:
        """Whether Lucy has written in this thread (so it follows the conversation there)."""
        ...


_THREAD = "workspace_id = $1 AND channel = $2 AND thread_ts = $3"
# The first message of the thread (what it is about) and the newest `limit` ones.
_HISTORY = f"""
    (SELECT id, message FROM thread_messages WHERE {_THREAD} ORDER BY id LIMIT 1)
    UNION ALL
    (SELECT id, message FROM thread_messages WHERE {_THREAD} ORDER BY id DESC LIMIT $4)
"""


@asynccontextmanager
async def _database(action: str) -> AsyncIterator[None]:
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise DatabaseError(f"thread memory: {action} failed: {exc}") from exc


class ThreadMemory:
    """:class:`HistoryStore` on PostgreSQL (asyncpg pool). Raises DatabaseError."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def start_turn(
        self, workspace: str, channel: str, thread_ts: str, *, slack_user: str, message: JSON,
        limit: int = HISTORY_LIMIT,
    ) -> list[JSON]:
        # One round trip: the insert runs in a CTE, and the SELECT's snapshot does not see it,
        # so the history comes back without the message just stored.
        sql = f"""
            WITH stored AS (
                INSERT INTO thread_messages (workspace_id, channel, thread_ts, slack_user, message)
                VALUES ($1, $2, $3, $5, $6) RETURNING id
            )
            {_HISTORY}
        """
        async with _database("storing a message"):
            rows = await self._pool.fetch(sql, workspace, channel, thread_ts, limit, slack_user, message)
        return _ordered(rows)

    async def append(
        self, workspace: str, channel: str, thread_ts: str, messages: Sequence[JSON], *,
        slack_user: str | None = None,
    ) -> None:
        if not messages:
            return
        sql = """
            INSERT INTO thread_messages (workspace_id, channel, thread_ts, slack_user, message)
            SELECT $1, $2, $3, $4, m FROM unnest($5::jsonb[]) WITH ORDINALITY AS t(m, i) ORDER BY i
        """
        async with _database("storing messages"):
            await self._pool.execute(sql, workspace, channel, thread_ts, slack_user, list(messages))

    async def load(self, workspace: str, channel: str, thread_ts: str, *, limit: int = HISTORY_LIMIT) -> list[JSON]:
        async with _database("loading a thread"):
            rows = await self._pool.fetch(_HISTORY, workspace, channel, thread_ts, limit)
        return _ordered(rows)

    async def append_user_message(
        self, workspace: str, channel: str, thread_ts: str, *, slack_user: str, text: str,
        user_name: str | None = None,
    ) -> None:
        await self.append(workspace, channel, thread_ts, [user_message(text, slack_user, user_name)],
                          slack_user=slack_user)

    async def has_thread(self, workspace: str, channel: str, thread_ts: str) -> bool:
        sql = f"SELECT EXISTS (SELECT 1 FROM thread_messages WHERE {_THREAD} AND message->>'role' = 'assistant')"
        async with _database("reading a thread"):
            found = await self._pool.fetchval(sql, workspace, channel, thread_ts)
        return bool(found)


def _ordered(rows: Sequence[Any]) -> list[JSON]:
    by_id = {row["id"]: row["message"] for row in rows}  # the first row can appear twice
    return [by_id[i] for i in sorted(by_id)]


class InMemoryThreadMemory:
    """:class:`HistoryStore` in a dict, for ``lucy chat`` without a database."""

    def __init__(self) -> None:
        self._threads: dict[tuple[str, str, str], list[JSON]] = {}

    async def start_turn(
        self, workspace: str, channel: str, thread_ts: str, *, slack_user: str, message: JSON,
        limit: int = HISTORY_LIMIT,
    ) -> list[JSON]:
        history = await self.load(workspace, channel, thread_ts, limit=limit)
        self._threads.setdefault((workspace, channel, thread_ts), []).append(message)
        return history

    async def append(
        self, workspace: str, channel: str, thread_ts: str, messages: Sequence[JSON], *,
        slack_user: str | None = None,
    ) -> None:
        self._threads.setdefault((workspace, channel, thread_ts), []).extend(messages)

    async def load(self, workspace: str, channel: str, thread_ts: str, *, limit: int = HISTORY_LIMIT) -> list[JSON]:
        thread = self._threads.get((workspace, channel, thread_ts), [])
        if len(thread) <= limit + 1:
            return list(thread)
        return [thread[0], *thread[-limit:]]

    async def append_user_message(
        self, workspace: str, channel: str, thread_ts: str, *, slack_user: str, text: str,
        user_name: str | None = None,
    ) -> None:
        await self.append(workspace, channel, thread_ts, [user_message(text, slack_user, user_name)])

    async def has_thread(self, workspace: str, channel: str, thread_ts: str) -> bool:
        return any(m.get("role") == "assistant" for m in self._threads.get((workspace, channel, thread_ts), []))


# --- fitting a history to the context window -------------------------------------------------


def estimate_tokens(value: Any) -> int:
    """A deliberately high token estimate of any JSON value (tool definitions, whole prompts)."""
    return len(json.dumps(value)) // _BYTES_PER_TOKEN + _MESSAGE_OVERHEAD_TOKENS


def message_tokens(message: JSON) -> int:
    """A high estimate of one chat message's tokens, without serialising it (runs per message per turn).

    Measured against OpenAI's o200k tokenizer, UTF-8 bytes per token are ~5.3 for English prose,
    4.7 for Japanese, 2.4–2.9 for Slack text dense with mentions and links, e-mails, code and JSON,
    and 1.6 for hex ids or base64. Counting 2 bytes per token over-trims prose but fits everything
    else; for id- or base64-heavy output a context overflow makes the agent trim harder and retry.
    """
    tokens = _MESSAGE_OVERHEAD_TOKENS
    content = message.get("content")
    if isinstance(content, str):
        tokens += _text_tokens(content)
    elif content is not None:
        tokens += estimate_tokens(content)  # a list of content parts
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        tokens += _CALL_OVERHEAD_TOKENS + _text_tokens(str(function.get("name", "")))
        tokens += _text_tokens(str(function.get("arguments") or ""))
    return tokens


def _text_tokens(text: str) -> int:
    return (len(text) if text.isascii() else len(text.encode())) // _BYTES_PER_TOKEN


def valid_arguments(raw: Any) -> str:
    """``raw`` if it is a JSON object, else ``"{}"`` (Anthropic refuses invalid stored arguments)."""
    if isinstance(raw, str):
        try:
            if isinstance(json.loads(raw or "{}"), dict):
                return raw or "{}"
        except ValueError:
            pass
    return "{}"


def sanitize(history: Sequence[JSON]) -> list[JSON]:
    """Every tool call gets exactly one result right after it; stray results are dropped.

    A turn that crashed halfway can leave a call without a result, and providers (Anthropic)
    reject such a history outright.
    """
    out: list[JSON] = []
    i = 0
    while i < len(history):
        message = history[i]
        i += 1
        if message.get("role") == "tool":
            continue  # a result whose call is not right before it
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if not calls:
            out.append(message)
            continue
        fixed = [{**c, "function": {**c["function"], "arguments": valid_arguments(c["function"].get("arguments"))}}
                 for c in calls]
        out.append({**message, "tool_calls": fixed})
        results: dict[str, JSON] = {}
        while i < len(history) and history[i].get("role") == "tool":
            results.setdefault(str(history[i].get("tool_call_id")), history[i])
            i += 1
        out += [results.get(c["id"]) or {"role": "tool", "tool_call_id": c["id"], "content": _MISSING_RESULT}
                for c in fixed]
    return out


@dataclass
class _Unit:
    """Messages that must stay together: an assistant tool call and its results, or one message."""

    messages: list[JSON]
    tokens: int


def _units(history: Sequence[JSON]) -> list[_Unit]:
    units: list[_Unit] = []
    for message in history:
        if message.get("role") == "tool" and units:
            units[-1].messages.append(message)
        else:
            units.append(_Unit([message], 0))
    for unit in units:
        unit.tokens = sum(message_tokens(m) for m in unit.messages)
    return units


def shorten_tool_outputs(messages: Sequence[JSON], max_chars: int, note: str) -> list[JSON]:
    """The messages with every tool output longer than ``max_chars`` cut, ending with ``note``."""
    return [_shortened(m, max_chars, note) for m in messages]


def _shortened(message: JSON, max_chars: int, note: str) -> JSON:
    content = message.get("content")
    if message.get("role") == "tool" and isinstance(content, str) and len(content) > max_chars:
        return {**message, "content": content[:max_chars] + note}
    return message


def _shorten_tool_outputs(unit: _Unit) -> None:
    unit.messages = shorten_tool_outputs(unit.messages, _OLD_TOOL_OUTPUT_CHARS, " …(older tool output shortened)")
    unit.tokens = sum(message_tokens(m) for m in unit.messages)


def fit_history(history: Sequence[JSON], budget_tokens: int) -> list[JSON]:
    """The sanitised history, shortened to about ``budget_tokens`` (never an error)."""
    return fit_history_counted(history, budget_tokens)[0]


def fit_history_counted(history: Sequence[JSON], budget_tokens: int) -> tuple[list[JSON], int]:
    """:func:`fit_history`, and the estimated tokens of what it returns."""
    units = _units(sanitize(history))
    total = sum(u.tokens for u in units)
    if total <= budget_tokens:
        return [m for u in units for m in u.messages], total
    for unit in units[:-4]:  # the latest exchanges keep their tool outputs
        _shorten_tool_outputs(unit)
    total = sum(u.tokens for u in units)
    if total <= budget_tokens:
        return [m for u in units for m in u.messages], total
    pinned = _pinned(units[0], budget_tokens) if units and units[0].messages[0].get("role") == "user" else None
    rest = units[1:] if pinned is not None else units
    room = budget_tokens - (pinned.tokens if pinned else 0) - 40  # 40: the omission note
    kept: list[_Unit] = []
    for unit in reversed(rest):
        if unit.tokens > room:
            break
        kept.append(unit)
        room -= unit.tokens
    kept.reverse()
    omitted = sum(len(u.messages) for u in rest) - sum(len(u.messages) for u in kept)
    kept_tokens = sum(u.tokens for u in kept)
    if omitted == 0 and pinned is not None:
        return [*pinned.messages, *(m for u in kept for m in u.messages)], pinned.tokens + kept_tokens
    note = f"({omitted} earlier messages of this thread are not shown.)"
    if pinned is not None:
        head = {**pinned.messages[0], "content": f"{pinned.messages[0].get('content', '')}\n\n{note}"}
    else:
        head = {"role": "user", "content": note}
    return [head, *(m for u in kept for m in u.messages)], message_tokens(head) + kept_tokens


def _pinned(unit: _Unit, budget_tokens: int) -> _Unit:
    """The thread's first message, cut to at most a quarter of the budget."""
    message = unit.messages[0]
    content = message.get("content")
    limit = min(_PINNED_MAX_CHARS, max(0, budget_tokens // 4 - _MESSAGE_OVERHEAD_TOKENS) * _BYTES_PER_TOKEN)
    while isinstance(content, str) and message_tokens(message) > budget_tokens // 4 and limit > 0:
        message = {**message, "content": content[:limit] + " …"}
        limit //= 2  # non-ASCII text has more bytes than characters
    return _Unit([message], message_tokens(message))


def used_tools(history: Sequence[JSON], limit: int = 8) -> list[str]:
    """Names of the app tools called earlier in the thread, most recent first (they stay available)."""
    from lucy.core.types import CONNECT_APP, SEARCH_TOOLS

    names: list[str] = []
    for message in reversed(history):
        for call in message.get("tool_calls") or () if message.get("role") == "assistant" else ():
            name = (call.get("function") or {}).get("name") if isinstance(call, dict) else None
            if isinstance(name, str) and name not in names and name not in (SEARCH_TOOLS, CONNECT_APP):
                names.append(name)
                if len(names) >= limit:
                    return names
    return names


def recent_text(history: Sequence[JSON], max_chars: int = 1500) -> str:
    """The latest plain-text messages, newest last (for tool selection)."""
    parts: list[str] = []
    size = 0
    for message in reversed(history):
        content = message.get("content")
        if message.get("role") in ("user", "assistant") and isinstance(content, str) and content:
            parts.append(content)
            size += len(content)
            if size >= max_chars:
                break
    return "\n".join(reversed(parts))[-max_chars:]
