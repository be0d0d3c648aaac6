"""Approvals in Slack: the request in the thread, the Approve / Deny click, the sweeper, /lucy-policy.

A turn that stops at a risky call (``ApprovalRequired``) gets one message per waiting call, with
the tool and its arguments in words and two buttons (:func:`lucy.approvals.approval_blocks_for`).
A click is decided once in PostgreSQL (:class:`~lucy.integrations.approval_runner.ApprovalRunner`);
the message then says who decided and when, the approved call runs, and the turn continues in the
thread with the result — on whichever instance got the click, also after a restart. Anyone who
may not decide, or clicks late, gets a private (ephemeral) sentence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import asyncpg
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from lucy import audit
from lucy.approvals import (
    Approval,
    Decision,
    approval_blocks_for,
    approval_text,
    decided_blocks,
    decision_line,
    escape_mrkdwn,
    humanise_tool,
)
from lucy.core.inflight import InFlight
from lucy.core.types import JSON, ApprovalRequired, Outcome, ProgressSink, ToolResult, Turn
from lucy.errors import LucyError
from lucy.integrations.approval_runner import Guards, Resume, Settled
from lucy.integrations.policy import run_policy_command
from lucy.log import get_logger
from lucy.slack.conversation import Conversations
from lucy.slack.ids import workspace_id
from lucy.slack.reply import ThreadReply

log = get_logger("lucy.slack.approvals")

SWEEP_SECONDS = 30.0  # how late an expired request's message may be updated
PRUNE_SECONDS = 3600.0  # audit rows past the retention are deleted about hourly
_SlackErrors = (SlackApiError, SlackRequestError)
_Errors = (LucyError, SlackApiError, SlackRequestError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

ClientFor = Callable[[str], Awaitable[tuple[AsyncWebClient, str | None] | None]]
Respond = Callable[..., Awaitable[Any]]


@runtime_checkable
class ResumableAgent(Protocol):
    """An agent that can continue a stopped turn (LucyAgent)."""

    async def resume_turn(self, turn: Turn, state_json: JSON, results: Sequence[ToolResult],
                          progress: ProgressSink) -> Outcome: ...


@dataclass(frozen=True)
class Click:
    """One Approve or Deny click, as the listener parsed it."""

    approval_id: str
    approve: bool
    user: str
    workspace: str
    channel: str | None
    message_ts: str | None
    team_id: str | None  # recipient team for the continued answer's stream


def click_of(body: dict[str, Any], context: AsyncBoltContext, *, approve: bool) -> Click | None:
    """The click in a ``block_actions`` payload; None when it is not one we can act on."""
    action = (body.get("actions") or [{}])[0]
    user = (body.get("user") or {}).get("id")
    value = action.get("value")
    if not user or not value:
        return None
    container = body.get("container") or {}
    return Click(
        approval_id=str(value), approve=approve, user=str(user),
        workspace=workspace_id(context.enterprise_id, context.team_id),
        channel=(body.get("channel") or {}).get("id") or container.get("channel_id"),
        message_ts=(body.get("message") or {}).get("ts") or container.get("message_ts"),
        team_id=context.team_id or context.enterprise_id,
    )


def ask_sentence(held: Sequence[Approval]) -> str:
    """The answer above the request(s): what waits, in words (the agent's own sentence names the slug)."""
    first = humanise_tool(held[0].tool, toolkit=held[0].toolkit)
    more = f" and {len(held) - 1} more action" + ("s" if len(held) > 2 else "") if len(held) > 1 else ""
    return f"I need a go-ahead before I run *{escape_mrkdwn(first)}*{more}. The details are below."


async def is_workspace_admin(client: AsyncWebClient, user: str) -> bool:
    """Whether Slack says ``user`` is an admin or owner of the workspace (no answer: not an admin)."""
    try:
        resp = await client.users_info(user=user)
    except _SlackErrors as exc:
        log.warning("users.info failed; treating the person as not an admin", error=str(exc))
        return False
    person = resp.get("user") or {}
    return bool(person.get("is_admin") or person.get("is_owner") or person.get("is_primary_owner"))


class ApprovalFlow:
    def __init__(
        self,
        guards: Guards,
        *,
        conversations: Conversations,
        agent: object,
        client_for: ClientFor,
        tasks: InFlight,
        pool: Any,
        known_toolkits: Callable[[], list[str]] = list,
    ) -> None:
        self._guards = guards
        self._runner = guards.runner
        self._conversations = conversations
        self._agent = agent if isinstance(agent, ResumableAgent) else None
        self._client_for = client_for
        self._tasks = tasks
        self._pool = pool
        self._known_toolkits = known_toolkits

    # --- the turn stopped: ask in the thread -------------------------------------------------

    async def ask(self, client: AsyncWebClient, turn: Turn, reply: ThreadReply, outcome: ApprovalRequired) -> None:
        """Finish the answer with one sentence, then post one request per waiting call."""
        held = await self._runner.hold(turn, outcome)
        await reply.finish(ask_sentence(held) if held else outcome.text or "This needs your approval first.")
        for approval in held:
            resp = await client.chat_postMessage(
                channel=approval.channel, thread_ts=approval.thread_ts, blocks=approval_blocks_for(approval),
                text=approval_text(approval.tool, approval.arguments, approval.risk, toolkit=approval.toolkit),
                unfurl_links=False, unfurl_media=False,
            )
            await self._runner.store.attach_message(approval.id, str(resp["ts"]))

    # --- a click -----------------------------------------------------------------------------

    async def on_click(self, client: AsyncWebClient, click: Click, respond: Respond | None = None) -> None:
        """Decide, show the decision, run the approved call, continue the turn. Never raises."""
        try:
            decision = await self._runner.decide(
                click.approval_id, click.user, click.approve, workspace=click.workspace,
                is_admin=lambda: is_workspace_admin(client, click.user),
            )
            log.info("approval clicked", approval=click.approval_id, outcome=decision.outcome, user=click.user)
            if not decision.changed or decision.approval is None:
                await self._tell(client, respond, click, decision)
                return
            await self._show(client, decision.approval, click.message_ts)
            if decision.outcome == "expired":
                await self._tell(client, respond, click, decision)
            settled = await self._runner.settle(decision)
            if settled is not None:
                await self._after(client, settled, click.team_id, click.message_ts)
        except _Errors as exc:
            log.warning("could not carry out an approval click", approval=click.approval_id, error=str(exc))

    async def _tell(self, client: AsyncWebClient, respond: Respond | None, click: Click, decision: Decision) -> None:
        """A private sentence for the clicker only."""
        where = decision.approval
        channel = click.channel or (where.channel if where else None)
        if channel is not None:
            try:
                await client.chat_postEphemeral(channel=channel, user=click.user, text=decision.message,
                                                thread_ts=where.thread_ts if where else None)
                return
            except _SlackErrors as exc:  # e.g. they are not in the channel: the click's response URL still works
                log.info("ephemeral message refused; answering through the response URL", error=str(exc))
        if respond is not None:
            await respond(text=decision.message, response_type="ephemeral", replace_original=False)

    async def _show(self, client: AsyncWebClient, approval: Approval, clicked_ts: str | None,
                    error: str | None = None) -> None:
        """The request's message without buttons: what ran (or would have), who decided, when."""
        ts = approval.message_ts or clicked_ts
        if not ts:
            return
        try:
            await client.chat_update(channel=approval.channel, ts=ts, blocks=decided_blocks(approval, error=error),
                                     text=decision_line(approval, error=error))
        except _SlackErrors as exc:
            log.warning("could not update the approval message", approval=approval.id, error=str(exc))

    async def _after(self, client: AsyncWebClient, settled: Settled, team_id: str | None,
                     clicked_ts: str | None = None) -> None:
        if settled.approval.status in ("done", "failed"):
            await self._show(client, settled.approval, clicked_ts, settled.error)
        if settled.resume is not None:
            await self._continue(client, settled.resume, team_id)

    async def _continue(self, client: AsyncWebClient, resume: Resume, team_id: str | None) -> None:
        agent = self._agent
        if agent is None:
            log.warning("the agent cannot continue a turn; the decision stays in the request's message")
            return

        async def run(turn: Turn, reply: ThreadReply) -> Outcome:
            return await agent.resume_turn(turn, resume.state, resume.results, reply)

        await self._conversations.answer(client, resume.turn, team_id, run=run)

    # --- the sweeper ---------------------------------------------------------------------------

    async def sweep_forever(self, every: float = SWEEP_SECONDS) -> None:
        """Expire requests, give up on orphaned ones, prune the audit log; until cancelled."""
        pruned_at = float("-inf")
        while True:
            try:
                await self.sweep_once()
                if time.monotonic() - pruned_at >= PRUNE_SECONDS:
                    pruned_at = time.monotonic()
                    gone = await audit.prune(self._pool, retention_days=self._guards.audit_retention_days)
                    if gone:
                        log.info("pruned the audit log", rows=gone, retention_days=self._guards.audit_retention_days)
            except _Errors as exc:
                log.warning("approval sweep failed; trying again later", error=str(exc))
            await asyncio.sleep(every)

    async def sweep_once(self) -> int:
        """One pass; returns how many requests it closed."""
        settled = await self._runner.sweep()
        for item in settled:
            found = await self._client_for(item.approval.workspace)
            if found is None:
                continue
            client, team_id = found
            await self._show(client, item.approval, None, item.error)
            if item.resume is not None:
                self._tasks.spawn(self._continue(client, item.resume, team_id), name=f"resume-{item.approval.id}")
        return len(settled)

    # --- /lucy-policy ----------------------------------------------------------------------------

    async def policy_command(self, respond: Respond, client: AsyncWebClient, *, workspace: str, user: str,
                             text: str) -> None:
        """Show or change the approval policy; only admins change it. Always ephemeral."""
        try:
            admin = await is_workspace_admin(client, user)
            answer = await run_policy_command(self._guards.policy, workspace=workspace, user=user, is_admin=admin,
                                              text=text, known_toolkits=self._known_toolkits())
        except _Errors as exc:
            log.warning("/lucy-policy failed", error=str(exc))
            answer = LucyError.user_message
        await respond(text=answer, response_type="ephemeral")
