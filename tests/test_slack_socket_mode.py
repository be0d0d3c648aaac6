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


async def test_two_instances_over_socket_mode_answer_a_message_once(pool: Any, fake_slack: FakeSlack) -> None:
    # Slack spreads an app's envelopes over all its open connections: the mention lands on one
    # instance, the channel message of the same post and a retry of the mention on the other.
    # The claims they share in PostgreSQL decide which one answers; both ack everything.
    settings = slack_settings(fake_slack, SLACK_APP_TOKEN=fake_slack.app_token, SLACK_SIGNING_SECRET=None)
    first_agent = ScriptedAgent([Step(Answer("From the first instance."), delay=0.1)])
    second_agent = ScriptedAgent([Step(Answer("From the second instance."), delay=0.1)])
    async with SlackHarness.start(pool, fake_slack, agent=first_agent, settings=settings) as one, \
            SlackHarness.start(pool, fake_slack, agent=second_agent, settings=settings) as two:
        await fake_slack.socket_connected(count=2)
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> what's on today?")
        mention = fake_slack.app_mention_event(msg)
        sent = [await fake_slack.socket_send(mention, to=0),
                await fake_slack.socket_send(fake_slack.message_event(msg), to=1),
                await fake_slack.socket_send(mention, retry_attempt=1, to=1)]
        await fake_slack.wait_for(lambda: len(fake_slack.socket_acks) >= 3)
        await fake_slack.wait_for(lambda: fake_slack.bot_messages_in(CHANNEL, msg.ts))
        await one.idle()
        await two.idle()
    assert {a["envelope_id"] for a in fake_slack.socket_acks} == set(sent)
    # Which instance wins the claim is a race; that exactly one answers is not.
    [answer] = [m.text for m in fake_slack.bot_messages_in(CHANNEL, msg.ts)]
    assert answer in {"From the first instance.", "From the second instance."}
    assert len(first_agent.turns) + len(second_agent.turns) == 1
