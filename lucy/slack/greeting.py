"""The Messages tab: a new person is greeted once, with a few suggested prompts."""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from lucy.log import get_logger
from lucy.slack.blocks import GREETING, SUGGESTED_PROMPTS

log = get_logger("lucy.slack.greeting")


class Greeter:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def first_time(self, workspace: str, user: str) -> bool:
        row = await self._pool.fetchval(
            "INSERT INTO slack_greetings (workspace_id, slack_user) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING 1", workspace, user)
        return row is not None

    async def on_messages_tab(self, client: AsyncWebClient, *, workspace: str, user: str, channel: str) -> None:
        """Greet ``user`` in their DM ``channel`` the first time they open it; later opens do nothing."""
        if not await self.first_time(workspace, user):
            return
        try:
            # agent_view: the prompts sit at the top of the Messages tab; a thread_ts would make the call fail.
            await client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, prompts=SUGGESTED_PROMPTS, title="Try asking me")
        except (SlackApiError, SlackRequestError) as exc:
            log.info("suggested prompts not set", error=str(exc))
        try:
            await client.chat_postMessage(channel=channel, text=GREETING)
        except (SlackApiError, SlackRequestError) as exc:
            log.warning("could not greet a new person", error=str(exc))
