"""Socket Mode: with SLACK_APP_TOKEN, events arrive over the WebSocket (no public URL); the same
claim-once and answering apply, and /slack/events is not served."""

from __future__ import annotations

from typing import Any

import aiohttp

from lucy.core.types import Answer
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.slack_ports import ScriptedAgent, SlackHarness, Step, slack_settings

CHANNEL = "C0GENERAL"


async def test_socket_mode_answers_events_once_and_acks_every_envelope(pool: Any, fake_slack: FakeSlack) -> None:
    settings = slack_settings(fake_slack, SLACK_APP_TOKEN=fake_slack.app_token, SLACK_SIGNING_SECRET=None)
    agent = ScriptedAgent([Step(Answer("Over the socket."), delay=0.1)])
    async with SlackHarness.start(pool, fake_slack, agent=agent, settings=settings) as h:
        await fake_slack.socket_connected()
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
        payload = fake_slack.app_mention_event(msg)
        first = await fake_slack.socket_send(payload)
        retry = await fake_slack.socket_send(payload, retry_attempt=1)
        await fake_slack.wait_for(lambda: len(fake_slack.socket_acks) >= 2)
        await fake_slack.wait_for(lambda: fake_slack.bot_messages_in(CHANNEL, msg.ts))
        await h.idle()
        async with aiohttp.ClientSession() as session, session.post(h.url, data=b"{}") as resp:
            events_route = resp.status
    assert {a["envelope_id"] for a in fake_slack.socket_acks} == {first, retry}
    assert [m.text for m in fake_slack.bot_messages_in(CHANNEL, msg.ts)] == ["Over the socket."]
    assert len(agent.turns) == 1
    assert events_route == 404  # no POST /slack/events in Socket Mode
    assert fake_slack.ok_calls("apps.connections.open")[0].token == fake_slack.app_token
