"""Every Bolt listener, registered in one place. Each is ack → parse → delegate."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from lucy.core.inflight import InFlight
from lucy.integrations.policy import POLICY_COMMAND
from lucy.log import get_logger
from lucy.slack.approval_flow import ApprovalFlow, click_of
from lucy.slack.blocks import APPROVE_ACTION, CONNECT_ACTION_PREFIX, DENY_ACTION
from lucy.slack.connect import ConnectCommand
from lucy.slack.conversation import Conversations, Where
from lucy.slack.greeting import Greeter
from lucy.slack.ids import workspace_id

log = get_logger("lucy.slack.listeners")

Ack = Callable[..., Awaitable[Any]]


@dataclass
class Handlers:
    """What the listeners delegate to."""

    conversations: Conversations
    connect: ConnectCommand
    greeter: Greeter
    tasks: InFlight
    uninstall: Callable[[AsyncBoltContext], Awaitable[None]]
    revoke: Callable[[dict[str, Any], AsyncBoltContext], Awaitable[None]]
    approvals: ApprovalFlow | None = None  # None: approvals are not wired (buttons are only acked)


def where(context: AsyncBoltContext) -> Where:
    auth = context.authorize_result
    return Where(
        workspace=workspace_id(context.enterprise_id, context.team_id),
        bot_user_id=context.bot_user_id,
        team_id=context.team_id or context.enterprise_id,
        workspace_name=auth.team if auth is not None else None,
    )


def register_listeners(app: AsyncApp, h: Handlers) -> None:
    """Register every listener Lucy has on ``app``."""

    @app.event("app_mention")
    async def app_mention(event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient) -> None:
        await h.conversations.on_mention(client, event, where(context))

    @app.event("message")
    async def message(event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient) -> None:
        await h.conversations.on_message(client, event, where(context))

    @app.event("app_home_opened")
    async def app_home_opened(event: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient) -> None:
        if event.get("tab") != "messages" or not event.get("channel"):
            return
        await h.greeter.on_messages_tab(client, workspace=where(context).workspace, user=event["user"],
                                        channel=event["channel"])

    @app.event("app_context_changed")
    async def app_context_changed(event: dict[str, Any]) -> None:
        # Acked so Slack stops retrying; what the person looks at is not used yet.
        log.debug("app context changed", entities=len((event.get("context") or {}).get("entities") or []))

    @app.event("app_uninstalled")
    async def app_uninstalled(context: AsyncBoltContext) -> None:
        await h.uninstall(context)

    @app.event("tokens_revoked")
    async def tokens_revoked(event: dict[str, Any], context: AsyncBoltContext) -> None:
        await h.revoke(event, context)

    @app.command("/lucy-connect")
    async def lucy_connect(ack: Ack, command: dict[str, Any], context: AsyncBoltContext, respond: Ack) -> None:
        await ack()
        run = h.connect.run(respond, workspace=where(context).workspace, user=command["user_id"],
                            channel=command["channel_id"], text=command.get("text") or "")
        h.tasks.spawn(run, name="lucy-connect")

    @app.action(re.compile(f"^{CONNECT_ACTION_PREFIX}"))
    async def connect_clicked(ack: Ack, body: dict[str, Any]) -> None:
        # A URL button: the browser opens the link; Slack still wants the click acked (else ⚠️).
        await ack()
        log.info("connect button clicked", action=(body.get("actions") or [{}])[0].get("action_id"))

    async def decision_clicked(ack: Ack, body: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient,
                               respond: Ack) -> None:
        await ack()
        click = click_of(body, context, approve=body["actions"][0]["action_id"] == APPROVE_ACTION)
        if h.approvals is None or click is None:
            log.warning("approval click not handled", wired=h.approvals is not None)
            return
        # Deciding, running the tool and continuing the turn outlast Slack's 3 s: a kept task.
        h.tasks.spawn(h.approvals.on_click(client, click, respond), name=f"approval-{click.approval_id}")

    app.action(APPROVE_ACTION)(decision_clicked)
    app.action(DENY_ACTION)(decision_clicked)

    @app.command(POLICY_COMMAND)
    async def lucy_policy(ack: Ack, command: dict[str, Any], context: AsyncBoltContext, client: AsyncWebClient,
                          respond: Ack) -> None:
        await ack()
        if h.approvals is None:
            await respond(text="Approvals are not set up on this Lucy.", response_type="ephemeral")
            return
        run = h.approvals.policy_command(respond, client, workspace=where(context).workspace,
                                         user=command["user_id"], text=command.get("text") or "")
        h.tasks.spawn(run, name="lucy-policy")
