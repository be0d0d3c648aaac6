"""A person's message → one answer in the thread: claim, feedback, agent turn, rendered outcome.

Listeners only parse and hand over to :class:`Conversations`; everything that can go wrong below is
turned into one plain sentence in the thread (never silence, never a stack trace).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from lucy.core.admission import TurnGate
from lucy.core.inflight import InFlight
from lucy.core.types import (
    Agent,
    Answer,
    ApprovalRequired,
    ConnectionRequired,
    Connections,
    Failure,
    Outcome,
    Turn,
)
from lucy.deps import Deps
from lucy.errors import LucyError, RateLimitedError
from lucy.log import get_logger, new_turn_id, turn_context
from lucy.slack.apps import display_name
from lucy.slack.blocks import approval_blocks, connect_actions, connected_text
from lucy.slack.dedupe import Claims
from lucy.slack.events import addressed_to_others, is_person_message, mentions, turn_from_event
from lucy.slack.pending import PendingConnection, PendingConnections
from lucy.slack.reply import ReplyTarget, ThreadReply

log = get_logger("lucy.slack.conversation")

GENERIC_FAILURE = LucyError.user_message
TIMEOUT_SENTENCE = "That took me too long, so I stopped. Please try again, perhaps with a smaller request."
EMPTY_ANSWER = "I don't have an answer to that. Could you say a bit more about what you need?"
RESTART_SENTENCE = "I was restarted before I could finish — please ask again."
RESTART_NOTICE_SECONDS = 4.0  # telling a thread about the restart; InFlight.drain waits 5 s for it
USER_CACHE_SECONDS = 3600.0


class ThreadMemory(Protocol):
    """What the Slack layer needs from thread memory (lucy.core.memory.ThreadMemory implements it)."""

    async def has_thread(self, workspace: str, channel: str, thread_ts: str) -> bool:
        """Whether Lucy has written in this thread (so it follows the conversation there)."""
        ...

    async def append_user_message(
        self, workspace: str, channel: str, thread_ts: str, *, slack_user: str, text: str,
        user_name: str | None = None,
    ) -> None:
        """Keep a message Lucy saw in its thread but that was meant for someone else."""
        ...


RunTurn = Callable[[Turn, ThreadReply], Awaitable[Outcome]]


class ApprovalAsker(Protocol):
    """Shows a turn's approval requests in its thread (lucy.slack.approval_flow.ApprovalFlow)."""

    async def ask(self, client: AsyncWebClient, turn: Turn, reply: ThreadReply, outcome: ApprovalRequired) -> None:
        ...


@dataclasses.dataclass(frozen=True)
class Where:
    """Who Lucy is in this request's workspace (from Bolt's context)."""

    workspace: str
    bot_user_id: str | None
    team_id: str | None  # recipient_team_id for streams
    workspace_name: str | None = None


class Conversations:
    def __init__(
        self,
        deps: Deps,
        *,
        agent: Agent,
        connections: Connections,
        memory: ThreadMemory,
        claims: Claims,
        pending: PendingConnections,
        tasks: InFlight,
        streaming: bool = True,
    ) -> None:
        self._deps = deps
        self._agent = agent
        self._connections = connections
        self._memory = memory
        self._claims = claims
        self._pending = pending
        self._tasks = tasks
        self._streaming = streaming
        # Posts approval requests and continues turns after a decision (lucy.slack.approval_flow);
        # set by build_slack when approvals are wired, else the request shows without a flow.
        self.approvals: ApprovalAsker | None = None
        s = deps.settings
        # A guard above the agent's own step and tool limits, so no turn hangs forever.
        self._turn_timeout = s.max_steps * (s.llm_timeout_seconds + s.tool_timeout_seconds) + 30.0
        # Turns start while the event loop keeps up; the rest wait in order (acks stay fast).
        self.gate = TurnGate(max_running=s.max_concurrent_turns)

    # --- entry points (called by listeners) ------------------------------------------------------

    async def on_mention(self, client: AsyncWebClient, event: dict[str, Any], where: Where) -> None:
        if is_person_message(event):
            await self._take(client, event, where, kind="app_mention")

    async def on_message(self, client: AsyncWebClient, event: dict[str, Any], where: Where) -> None:
        kind = f"message.{event.get('channel_type') or 'unknown'}"
        if not is_person_message(event):
            self._count(kind, "ignored")
            return
        if event.get("channel_type") == "im" or mentions(event.get("text", ""), where.bot_user_id):
            await self._take(client, event, where, kind=kind)
            return
        thread_ts = event.get("thread_ts")
        if not thread_ts or not await self._memory.has_thread(where.workspace, event["channel"], thread_ts):
            self._count(kind, "ignored")
            return
        if addressed_to_others(event.get("text", ""), where.bot_user_id):
            await self._see(where.workspace, event)
            self._count(kind, "seen")
            return
        await self._take(client, event, where, kind=kind)

    async def _take(self, client: AsyncWebClient, event: dict[str, Any], where: Where, *, kind: str) -> None:
        # app_mention and message.channels carry the same message: whichever claims it first answers.
        if not await self._claims.claim_message(where.workspace, event["channel"], event["ts"]):
            self._count(kind, "duplicate")
            return
        self._count(kind, "handled")
        turn = turn_from_event(event, workspace=where.workspace, bot_user_id=where.bot_user_id,
                               turn_id=new_turn_id())
        if where.workspace_name:
            turn = dataclasses.replace(turn, workspace_name=where.workspace_name)
        self._tasks.spawn(self._new_request(client, turn, where.team_id), name=f"turn-{turn.turn_id}")

    async def _see(self, workspace: str, event: dict[str, Any]) -> None:
        # The next answer in this thread then knows what was said to the others.
        try:
            await self._memory.append_user_message(workspace, event["channel"], event["thread_ts"],
                                                   slack_user=event["user"], text=event.get("text", ""))
        except LucyError as exc:
            log.warning("could not keep a thread message", error=str(exc))

    # --- one turn ----------------------------------------------------------------------------------

    async def _new_request(self, client: AsyncWebClient, turn: Turn, team_id: str | None) -> None:
        """A person's new request: counted against the rate limits (shared through Redis), then answered."""
        limiter = self._deps.limiter
        if limiter is not None:
            try:
                await limiter.check_turn(turn.workspace, turn.user)
            except RateLimitedError as exc:
                log.info("request rate-limited", limit=exc.limit_name, workspace=turn.workspace, user=turn.user)
                self._count("turn", "rate_limited")
                target = ReplyTarget(channel=turn.channel, thread_ts=turn.thread_ts,
                                     message_ts=turn.ts or turn.thread_ts, user_id=turn.user, team_id=team_id)
                await ThreadReply(client, target, streaming=False).fail(exc.user_message)
                return
        await self.answer(client, turn, team_id)

    async def answer(self, client: AsyncWebClient, turn: Turn, team_id: str | None,
                     run: RunTurn | None = None) -> None:
        """Run one turn (``run``, default the agent's ``run_turn``; an approval's decision passes
        ``resume_turn``) and write its outcome into the thread. Never raises."""
        target = ReplyTarget(channel=turn.channel, thread_ts=turn.thread_ts, message_ts=turn.ts or turn.thread_ts,
                             user_id=turn.user, team_id=team_id)
        reply = ThreadReply(client, target, streaming=self._streaming)
        with turn_context(workspace=turn.workspace, channel=turn.channel, thread=turn.thread_ts,
                          turn_id=turn.turn_id or None):
            try:
                await reply.acknowledge()  # "is thinking…" at once, even when the turn has to wait
                async with self.gate.slot():
                    turn = await self._with_person(client, turn)
                    outcome = await asyncio.wait_for((run or self._agent.run_turn)(turn, reply), self._turn_timeout)
                    await self._render(turn, reply, outcome, client)
            except TimeoutError:
                log.warning("turn timed out", timeout=self._turn_timeout)
                await reply.fail(TIMEOUT_SENTENCE)
            except LucyError as exc:
                log.warning("turn failed", error=str(exc), kind=type(exc).__name__)
                await reply.fail(exc.user_message)
            except (SlackApiError, SlackRequestError) as exc:
                log.warning("slack refused the answer", error=str(exc))
                await reply.fail(GENERIC_FAILURE)
            except Exception:  # the promise is "never silence": anything else still gets a sentence
                log.exception("turn crashed")
                await reply.fail(GENERIC_FAILURE)
            except asyncio.CancelledError:
                if self._tasks.closing:  # SIGTERM and the grace period is over: say so, then stop
                    log.warning("turn cut short by shutdown")
                    await self._tell_restarted(reply)
                raise

    async def _tell_restarted(self, reply: ThreadReply) -> None:
        try:
            async with asyncio.timeout(RESTART_NOTICE_SECONDS):
                await reply.fail(RESTART_SENTENCE)
        except TimeoutError:
            log.error("could not tell the thread that Lucy restarted")

    async def _render(self, turn: Turn, reply: ThreadReply, outcome: Outcome, client: AsyncWebClient) -> None:
        if isinstance(outcome, Answer):
            await reply.finish(outcome.text or EMPTY_ANSWER)
        elif isinstance(outcome, ConnectionRequired):
            await self._ask_to_connect(turn, reply, outcome)
        elif isinstance(outcome, ApprovalRequired) and self.approvals is not None:
            await self.approvals.ask(client, turn, reply, outcome)
        elif isinstance(outcome, ApprovalRequired):
            await reply.finish(outcome.text or "This needs your approval first.", approval_blocks(outcome.approval))
        elif isinstance(outcome, Failure):
            log.info("turn ended in a failure", detail=outcome.detail)
            await reply.finish(outcome.user_message or GENERIC_FAILURE)

    async def _ask_to_connect(self, turn: Turn, reply: ThreadReply, outcome: ConnectionRequired) -> None:
        url = outcome.connect_url
        if not url:
            try:
                url = await self._connections.connect_link(turn.workspace, outcome.toolkit)
            except LucyError as exc:
                log.warning("no connect link", toolkit=outcome.toolkit, error=str(exc))
        await self._pending.park(turn, outcome.toolkit, outcome.pending_id)
        app = display_name(outcome.toolkit)
        text = outcome.text or f"I need access to {app} for that. Connect it below and I'll carry on."
        await reply.finish(text, connect_actions(outcome.toolkit, url))

    async def _with_person(self, client: AsyncWebClient, turn: Turn) -> Turn:
        """Add the person's name and time zone (cached; a lookup failure only loses the nicety)."""
        cache = self._deps.cache
        cached = await cache.get("slack-user", turn.workspace, turn.user)
        if cached is None:
            try:
                resp = await client.users_info(user=turn.user)
                user = resp.get("user") or {}
                profile = user.get("profile") or {}
                name = profile.get("display_name") or profile.get("real_name") or user.get("real_name")
                cached = (name or user.get("name"), user.get("tz"))
            except (SlackApiError, SlackRequestError) as exc:
                log.info("users.info failed", error=str(exc))
                cached = (None, None)
            await cache.set("slack-user", turn.workspace, turn.user, value=cached, ttl=USER_CACHE_SECONDS)
        name, tz = cached
        return dataclasses.replace(turn, user_name=turn.user_name or name, user_tz=turn.user_tz or tz)

    # --- after a connection --------------------------------------------------------------------------

    async def resume(self, client: AsyncWebClient, waiting: PendingConnection, team_id: str | None) -> None:
        """Tell the thread the app is connected, then carry on with the request that waited."""
        notice = connected_text(waiting.toolkit)
        try:
            if waiting.turn is None:
                await client.chat_postEphemeral(channel=waiting.channel, user=waiting.user, text=notice)
                return
            await client.chat_postMessage(channel=waiting.channel, thread_ts=waiting.thread_ts, text=notice)
        except (SlackApiError, SlackRequestError) as exc:
            log.warning("could not tell the person the app is connected", error=str(exc))
            if waiting.turn is None:
                return
        if waiting.turn is not None:
            turn = dataclasses.replace(waiting.turn, turn_id=new_turn_id())
            # The request is in the thread already: go on with it rather than asking it again.
            await self.answer(client, turn, team_id,
                              run=lambda t, progress: self._agent.continue_turn(t, notice, progress))

    def _count(self, kind: str, outcome: str) -> None:
        self._deps.metrics.events.labels(kind=kind, outcome=outcome).inc()
