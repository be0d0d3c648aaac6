"""Small hand-written implementations of Lucy's own ports (Agent, Connections) and a harness that
runs the Slack layer over real HTTP against :class:`~tests.fakes.fake_slack.FakeSlack`.

These are Lucy's Protocols, not SDK mocks: Bolt and slack_sdk are real and talk to the fake Slack.

    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([...])) as h:
        msg = fake_slack.user_message("C0GENERAL", "U0ALICE", "<@U0LUCY> hi")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()                                  # every answer written
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lucy.cache import memory_cache
from lucy.config import Settings
from lucy.core.memory import ThreadMemory
from lucy.core.types import (
    Answer,
    ExecuteResult,
    Outcome,
    ProgressSink,
    ToolCall,
    ToolkitConnection,
    ToolResult,
    Turn,
)
from lucy.deps import Deps
from lucy.errors import IntegrationError
from lucy.web.metrics import Metrics
from lucy.web.server import build_app
from tests.fakes.fake_slack import FakeSlack, SlackSender

SIGNING_SECRET = "test-signing-secret-0123456789"


@dataclass
class Step:
    """What the scripted agent does in one turn: tool calls (with results), streamed text, outcome."""

    outcome: Outcome | Callable[[Turn], Outcome]
    tools: list[tuple[ToolCall, ExecuteResult]] = field(default_factory=list)
    deltas: list[str] = field(default_factory=list)
    delay: float = 0.0
    raises: BaseException | None = None


class ScriptedAgent:
    """An :class:`~lucy.core.types.Agent` that plays scripted steps and keeps the thread in memory
    (so follow-ups find it, as with the real agent)."""

    def __init__(self, steps: Sequence[Step | Outcome] = (), memory: ThreadMemory | None = None,
                 default: Outcome | None = None) -> None:
        self.steps: list[Step] = [s if isinstance(s, Step) else Step(outcome=s) for s in steps]
        self.memory = memory
        self.default = default if default is not None else Answer(text="OK.")
        self.turns: list[Turn] = []
        self.notes: list[str] = []  # what continue_turn was told

    async def run_turn(self, turn: Turn, progress: ProgressSink) -> Outcome:
        if self.memory is not None:
            await self.memory.append(turn.workspace, turn.channel, turn.thread_ts,
                                     [{"role": "user", "content": turn.text}], slack_user=turn.user)
        return await self._play(turn, progress)

    async def continue_turn(self, turn: Turn, note: str, progress: ProgressSink) -> Outcome:
        self.notes.append(note)
        return await self._play(turn, progress)

    async def _play(self, turn: Turn, progress: ProgressSink) -> Outcome:
        self.turns.append(turn)
        step = self.steps.pop(0) if self.steps else Step(outcome=self.default)
        if step.delay:
            await asyncio.sleep(step.delay)
        for call, result in step.tools:
            await progress.tool_started(call)
            await progress.tool_finished(call, result)
        for delta in step.deltas:
            await progress.text_delta(delta)
        if step.raises is not None:
            raise step.raises
        outcome = step.outcome(turn) if callable(step.outcome) else step.outcome
        if self.memory is not None:
            text = getattr(outcome, "text", None) or getattr(outcome, "user_message", "")
            await self.memory.append(turn.workspace, turn.channel, turn.thread_ts,
                                     [{"role": "assistant", "content": text}])
        return outcome


@dataclass
class Account:
    workspace: str
    toolkit: str
    status: str  # INITIATED | ACTIVE


class FakeConnections:
    """A :class:`~lucy.core.types.Connections` over an in-process table of accounts; ``finish_oauth``
    plays the person completing OAuth (what Composio would then report)."""

    def __init__(self, known: Sequence[str] = ("github", "gmail", "googlecalendar", "notion", "googledrive",
                                                 "linear", "slack")) -> None:
        self._known = list(known)
        self.accounts: dict[str, Account] = {}
        self.links: list[tuple[str, str]] = []
        self.confirmed: list[tuple[str, str]] = []
        self.fail_links = False
        self.forgotten: list[str] = []

    def known_toolkits(self) -> list[str]:
        return list(self._known)

    async def forget_workspace(self, workspace: str) -> None:
        self.forgotten.append(workspace)

    async def list_connections(self, workspace: str) -> list[ToolkitConnection]:
        return [ToolkitConnection(a.toolkit, "active", ca) for ca, a in self.accounts.items()
                if a.workspace == workspace and a.status == "ACTIVE"]

    async def connect_link(self, workspace: str, toolkit: str) -> str:
        if self.fail_links:
            raise IntegrationError("composio is down")
        ca = f"ca_{uuid.uuid4().hex[:10]}"
        self.accounts[ca] = Account(workspace, toolkit, "INITIATED")
        self.links.append((workspace, toolkit))
        return f"https://connect.composio.example/link/lk_{ca}?workspace={workspace}"

    async def confirm_connection(self, workspace: str, connected_account_id: str) -> ToolkitConnection | None:
        self.confirmed.append((workspace, connected_account_id))
        account = self.accounts.get(connected_account_id)
        if account is None or account.workspace != workspace or account.status != "ACTIVE":
            return None
        return ToolkitConnection(account.toolkit, "active", connected_account_id)

    def connect(self, workspace: str, toolkit: str) -> str:
        """An account that is already ACTIVE (as if connected earlier)."""
        ca = f"ca_{uuid.uuid4().hex[:10]}"
        self.accounts[ca] = Account(workspace, toolkit, "ACTIVE")
        return ca

    def finish_oauth(self, workspace: str, toolkit: str) -> str:
        """The person authorised the newest link of ``toolkit``: that account turns ACTIVE."""
        ca = next(ca for ca, a in reversed(self.accounts.items())
                  if a.workspace == workspace and a.toolkit == toolkit and a.status == "INITIATED")
        self.accounts[ca].status = "ACTIVE"
        return ca


def ok(call_id: str, name: str, content: Any = None) -> tuple[ToolCall, ExecuteResult]:
    return ToolCall(call_id, name, {}), ToolResult(call_id, name, content or {"ok": True})


def slack_settings(slack: FakeSlack, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
        "SLACK_APP_TOKEN": None, "SLACK_CLIENT_ID": None, "SLACK_CLIENT_SECRET": None, "REDIS_URL": None,
        "LUCY_PUBLIC_URL": None,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class SlackHarness:
    deps: Deps
    runtime: Any
    url: str
    sender: SlackSender
    slack: FakeSlack
    agent: Any
    connections: Any
    memory: Any

    async def idle(self) -> None:
        await self.runtime.idle()

    @property
    def base(self) -> str:
        return self.url.rsplit("/slack/events", 1)[0]

    @classmethod
    @asynccontextmanager
    async def start(cls, pool: Any, slack: FakeSlack, *, agent: Any = None, connections: Any = None,
                    memory: Any = None, settings: Settings | None = None,
                    before_start: Callable[[Any], Awaitable[None]] | None = None) -> AsyncIterator[SlackHarness]:
        from lucy.slack.app import build_slack

        settings = settings or slack_settings(slack)
        memory = memory or ThreadMemory(pool)
        agent = agent or ScriptedAgent(memory=memory)
        if isinstance(agent, ScriptedAgent) and agent.memory is None:
            agent.memory = memory
        connections = connections or FakeConnections()
        deps = Deps(settings=settings, pool=pool, cache=memory_cache(f"t{uuid.uuid4().hex[:6]}"), metrics=Metrics())
        runtime = await build_slack(deps, agent=agent, connections=connections, memory=memory)
        app = build_app(deps.metrics, pool, extra_routes=runtime.routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/slack/events"
        if before_start is not None:
            await before_start(runtime)
        await runtime.start()
        try:
            yield cls(deps, runtime, url, SlackSender(url, SIGNING_SECRET, slack), slack, agent, connections, memory)
        finally:
            await runtime.stop(drain_seconds=10)
            await runner.cleanup()
            await deps.cache.close()
