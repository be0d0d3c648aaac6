"""`lucy chat`: talk to the agent loop in the terminal, no Slack needed.

The same :class:`~lucy.core.agent.LucyAgent` as in Slack, with the thread kept in memory
between lines (``/new`` starts a new thread). Each tool call and its result are printed as they
happen, and the answer streams in. Needs only the LLM settings; with ``COMPOSIO_API_KEY`` set
it also gets the workspace's Composio tools.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from lucy.core.types import (
    Answer,
    ApprovalRequired,
    ConnectedApps,
    ConnectionRequired,
    ExecuteResult,
    Failure,
    NeedsApproval,
    NeedsConnection,
    Outcome,
    ToolCall,
    ToolCatalog,
    ToolDef,
    ToolExecutor,
    ToolResult,
    Toolset,
    Turn,
)

if TYPE_CHECKING:
    from lucy.config import Settings

CHANNEL = "CLI"
HELP = "Type a message. /new starts a new thread, /exit (or Ctrl-D) quits."
_PREVIEW = 300


@dataclass(frozen=True)
class ChatTools:
    """The tool ports the chat uses (the real integrations, or none)."""

    toolset: Toolset
    executor: ToolExecutor
    apps: ConnectedApps
    catalog: ToolCatalog | None = None


class NoTools:
    """Toolset, executor and connected apps for a chat without Composio: no tools at all."""

    async def tools_for_turn(self, workspace: str, request: str, history_text: str = "") -> list[ToolDef]:
        return []

    async def execute(self, turn: Turn, call: ToolCall) -> ExecuteResult:
        return ToolResult(call.id, call.name, {"error": "No apps are set up in lucy chat (COMPOSIO_API_KEY)."},
                          ok=False)

    async def active_toolkits(self, workspace: str) -> list[str]:
        return []


def no_tools() -> ChatTools:
    none = NoTools()
    return ChatTools(toolset=none, executor=none, apps=none)


class TerminalProgress:
    """Prints tool calls, their results and the streamed answer."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.streamed = ""

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def tool_started(self, call: ToolCall) -> None:
        self._end_stream_line()
        self._write(f"  → {call.name} {json.dumps(call.arguments, ensure_ascii=False)}\n")

    async def tool_finished(self, call: ToolCall, result: ExecuteResult) -> None:
        self._write(f"  ← {call.name} {_describe(result)}\n")

    async def text_delta(self, text: str) -> None:
        if not self.streamed:
            self._write("lucy> ")
        self.streamed += text
        self._write(text)

    def _end_stream_line(self) -> None:
        if self.streamed:
            self._write("\n")
            self.streamed = ""


def _describe(result: ExecuteResult) -> str:
    if isinstance(result, NeedsConnection):
        return f"needs a connection to {result.toolkit}"
    if isinstance(result, NeedsApproval):
        return f"needs approval ({result.reason})"
    body = result.content if isinstance(result.content, str) else json.dumps(result.content, ensure_ascii=False,
                                                                              default=str)
    body = body if len(body) <= _PREVIEW else body[:_PREVIEW] + "…"
    return ("ok: " if result.ok else "error: ") + body


def _show(outcome: Outcome, progress: TerminalProgress, out: TextIO) -> None:
    if isinstance(outcome, Answer):
        if progress.streamed.strip() != outcome.text:
            prefix = "\n" if progress.streamed else ""
            out.write(f"{prefix}lucy> {outcome.text}\n")
        else:
            out.write("\n")
    elif isinstance(outcome, ConnectionRequired):
        out.write(f"\nlucy> {outcome.text}\n       Connect: {outcome.connect_url or '(no link available)'}\n")
    elif isinstance(outcome, ApprovalRequired):
        out.write(f"\nlucy> {outcome.text}\n       (approvals happen in Slack; lucy chat cannot approve)\n")
    elif isinstance(outcome, Failure):
        out.write(f"\nlucy> {outcome.user_message}\n")
    out.flush()


async def chat_loop(agent: Any, *, workspace: str, user: str, stdin: TextIO, stdout: TextIO) -> int:
    """Read lines until EOF or /exit; each line is one turn in the current thread."""
    thread = _new_thread()
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            stdout.write("\n")
            return 0
        text = line.strip()
        if text in ("/exit", "/quit"):
            return 0
        if text == "/new":
            thread = _new_thread()
            stdout.write("(new thread)\n")
            continue
        if not text:
            continue
        progress = TerminalProgress(stdout)
        turn = Turn(workspace=workspace, user=user, channel=CHANNEL, thread_ts=thread, text=text,
                    ts=f"{time.time():.6f}")
        outcome = await agent.run_turn(turn, progress)
        _show(outcome, progress, stdout)


def _new_thread() -> str:
    return f"{time.time():.6f}"


def run_chat(settings: Settings, *, workspace: str, user: str, stdin: TextIO | None = None,
             stdout: TextIO | None = None, tools: ChatTools | None = None) -> int:
    """``lucy chat``. ``tools`` defaults to the Composio integrations when configured, else none."""
    return asyncio.run(_main(settings, workspace=workspace, user=user, stdin=stdin or sys.stdin,
                             stdout=stdout or sys.stdout, tools=tools))


async def _main(settings: Settings, *, workspace: str, user: str, stdin: TextIO, stdout: TextIO,
                tools: ChatTools | None) -> int:
    from lucy.core.agent import AgentDeps, AgentLimits, LucyAgent
    from lucy.core.llm import LiteLLM, LLMConfig
    from lucy.core.memory import InMemoryThreadMemory

    lucy_logger = logging.getLogger("lucy")
    level = lucy_logger.level
    if settings.log_level != "debug":
        # The chat prints tool calls itself; routine log lines would only interleave with them.
        lucy_logger.setLevel(logging.WARNING)
    try:
        stdout.write(f"Lucy chat · workspace {workspace} · model {settings.llm_model}\n")
        stdout.flush()
        llm = await asyncio.to_thread(LiteLLM, LLMConfig.from_settings(settings))  # the import takes seconds
        async with _tools(settings, tools, stdout) as chosen:
            agent = LucyAgent(AgentDeps(
                llm=llm, toolset=chosen.toolset, executor=chosen.executor, memory=InMemoryThreadMemory(),
                apps=chosen.apps, catalog=chosen.catalog, limits=AgentLimits.from_settings(settings)))
            stdout.write(HELP + "\n")
            return await chat_loop(agent, workspace=workspace, user=user, stdin=stdin, stdout=stdout)
    finally:
        lucy_logger.setLevel(level)


@asynccontextmanager
async def _tools(settings: Settings, given: ChatTools | None, out: TextIO) -> AsyncIterator[ChatTools]:
    if given is not None:
        yield given
    elif not settings.composio_api_key:
        out.write("(COMPOSIO_API_KEY is not set: chatting without app tools)\n")
        yield no_tools()
    else:
        async with composio_tools(settings) as built:
            yield built


@asynccontextmanager
async def composio_tools(settings: Settings) -> AsyncIterator[ChatTools]:
    """The real integrations layer, as ``lucy serve`` builds it (it needs the database too)."""
    from lucy.cache import make_cache
    from lucy.db.migrate import migrate_dsn
    from lucy.db.pool import create_pool
    from lucy.integrations.composio_client import client_from_settings
    from lucy.integrations.worker import build_integrations
    from lucy.serve import database

    async with database(settings) as dsn:
        await migrate_dsn(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=4)
        cache = make_cache(settings.redis_url)
        try:
            client = await asyncio.to_thread(client_from_settings, settings)  # imports the SDK
            integrations = build_integrations(settings, pool, cache, client=client)
            try:
                yield ChatTools(toolset=integrations.toolset, executor=integrations.worker,
                                apps=_RegistryApps(integrations.registry), catalog=integrations.toolset)
            finally:
                await integrations.aclose()
        finally:
            await cache.close()
            await pool.close()


class _RegistryApps:
    """ConnectedApps over the integrations registry (which answers with a frozenset)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    async def active_toolkits(self, workspace: str) -> list[str]:
        return sorted(await self._registry.active_toolkits(workspace))
