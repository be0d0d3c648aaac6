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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from lucy.core.types import (
    JSON,
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
    from collections.abc import Awaitable, Callable

    from lucy.approvals import Approval
    from lucy.config import Settings
    from lucy.integrations.approval_runner import ApprovalRunner

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
    approvals: ApprovalRunner | None = None  # None: risky calls are only described, never approved here


class NoTools:
    """Toolset, executor and connected apps for a chat without Composio: no tools at all."""

    async def tools_for_turn(
        self, workspace: str, request: str, history_text: str = "", *, pinned: Sequence[str] = ()
    ) -> list[ToolDef]:
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

    def say(self, text: str) -> None:
        """A line from Lucy that is not the streamed answer (a question before an approval)."""
        self._end_stream_line()
        self._write(f"lucy> {text}\n")


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
        out.write(f"\nlucy> {outcome.text}\n       (not approved here, so nothing ran)\n")
    elif isinstance(outcome, Failure):
        out.write(f"\nlucy> {outcome.user_message}\n")
    out.flush()


async def chat_loop(agent: Any, *, workspace: str, user: str, stdin: TextIO, stdout: TextIO,
                    approvals: ApprovalRunner | None = None) -> int:
    """Read lines until EOF or /exit; each line is one turn in the current thread. With
    ``approvals``, a risky call is shown and approved (``y``) or denied at the prompt."""
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
        if approvals is not None:
            ask = _Prompt(stdin, stdout)
            outcome = await settle_at_prompt(agent, approvals, turn, outcome, progress=progress, ask=ask)
        _show(outcome, progress, stdout)


class _Prompt:
    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self._in, self._out = stdin, stdout

    async def __call__(self, approval: Approval) -> bool:
        self._out.write(describe_approval(approval) + "\n       Approve? [y/N] ")
        self._out.flush()
        answer = (await asyncio.to_thread(self._in.readline)).strip().lower()
        return answer in ("y", "yes")


async def settle_at_prompt(agent: Any, approvals: ApprovalRunner, turn: Turn, outcome: Outcome, *,
                           progress: TerminalProgress, ask: Callable[[Approval], Awaitable[bool]]) -> Outcome:
    """Ask for each waiting call at the terminal (the person at it is the requester), run what was
    approved, and continue the turn until it answers without waiting."""
    while isinstance(outcome, ApprovalRequired):
        held = await approvals.hold(turn, outcome)
        if not held:
            return outcome
        progress.say(outcome.text)
        resume = None
        for approval in held:
            decision = await approvals.decide(approval.id, turn.user, await ask(approval),
                                              workspace=turn.workspace, is_admin=_yes)
            settled = await approvals.settle(decision)
            resume = settled.resume if settled is not None and settled.resume is not None else resume
        if resume is None:
            return outcome
        outcome = await agent.resume_turn(resume.turn, resume.state, resume.results, progress)
    return outcome


async def _yes() -> bool:
    return True


def describe_approval(approval: Approval) -> str:
    """A waiting call in plain words for the terminal: the tool, then each argument (secrets hidden)."""
    from lucy.approvals import RISK_WORDS, humanise_key, humanise_tool
    from lucy.log import redact_value

    lines = [f"       {humanise_tool(approval.tool, toolkit=approval.toolkit)}. {RISK_WORDS[approval.risk]}"]
    shown: JSON = redact_value(dict(approval.arguments))
    lines += [f"         {humanise_key(str(k))}: {_plain(v)}" for k, v in shown.items()]
    return "\n".join(lines)


def _plain(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"


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
        memory = InMemoryThreadMemory()
        try:
            async with _tools(settings, tools, stdout, memory) as chosen:
                agent = LucyAgent(AgentDeps(
                    llm=llm, toolset=chosen.toolset, executor=chosen.executor, memory=memory,
                    apps=chosen.apps, catalog=chosen.catalog, limits=AgentLimits.from_settings(settings)))
                stdout.write(HELP + "\n")
                return await chat_loop(agent, workspace=workspace, user=user, stdin=stdin, stdout=stdout,
                                       approvals=chosen.approvals)
        finally:
            await llm.aclose()
    finally:
        lucy_logger.setLevel(level)


@asynccontextmanager
async def _tools(settings: Settings, given: ChatTools | None, out: TextIO, memory: Any = None
                 ) -> AsyncIterator[ChatTools]:
    if given is not None:
        yield given
    elif not settings.composio_api_key:
        out.write("(COMPOSIO_API_KEY is not set: chatting without app tools)\n")
        yield no_tools()
    else:
        async with composio_tools(settings, memory) as built:
            yield built


@asynccontextmanager
async def composio_tools(settings: Settings, memory: Any = None) -> AsyncIterator[ChatTools]:
    """The real integrations layer, as ``lucy serve`` builds it (it needs the database too), with
    the same approval policy and tool rate limit; ``memory`` (the chat's thread memory) lets earlier
    tool output in the thread taint a turn, as in Slack."""
    from lucy.cache import make_cache
    from lucy.db.migrate import migrate_dsn
    from lucy.db.pool import create_pool
    from lucy.integrations.approval_runner import history_of, install_guards
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
            guards = install_guards(settings, pool, integrations,
                                    history=history_of(memory.load) if memory is not None else None)
            try:
                yield ChatTools(toolset=integrations.toolset, executor=integrations.worker,
                                apps=_RegistryApps(integrations.registry), catalog=integrations.toolset,
                                approvals=guards.runner)
            finally:
                await guards.aclose()
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
