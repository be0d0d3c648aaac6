"""/lucy-connect and the OAuth callback over real HTTP, with Lucy's Connections port scripted."""

from __future__ import annotations

from typing import Any

import aiohttp

from lucy.core.types import Answer, ConnectionRequired
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.slack_ports import FakeConnections, ScriptedAgent, SlackHarness, Step

CHANNEL = "C0GENERAL"


async def get(url: str, **params: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as resp:
        return resp.status, await resp.text()


async def test_lucy_connect_without_an_app_lists_connections_and_offers_popular_apps(
    pool: Any, fake_slack: FakeSlack
) -> None:
    connections = FakeConnections()
    connections.connect(fake_slack.team_id, "github")
    async with SlackHarness.start(pool, fake_slack, connections=connections) as h:
        delivery, response_url = await h.sender.command("")
        await h.idle()
    assert delivery.status == 200
    [answer] = fake_slack.responses
    assert answer["url"] == response_url and answer["response_type"] == "ephemeral"
    text = " ".join(b.get("text", {}).get("text", "") for b in answer["blocks"])
    assert "*GitHub* — connected" in text
    buttons = [e for b in answer["blocks"] for e in b.get("elements", []) if e.get("type") == "button"]
    labels = [b["text"]["text"] for b in buttons]
    assert labels == ["Connect Gmail", "Connect Google Calendar", "Connect Notion", "Connect Google Drive"]
    assert all(b["url"].startswith("https://connect.composio.example/") for b in buttons)
    assert "github" not in {t for _, t in connections.links}  # already connected: no new link


async def test_lucy_connect_with_a_loose_app_name_gives_its_connect_button(pool: Any, fake_slack: FakeSlack) -> None:
    connections = FakeConnections()
    async with SlackHarness.start(pool, fake_slack, connections=connections) as h:
        urls = [(await h.sender.command(name))[1] for name in ("gh", "google calendar", "Gmail")]
        await h.idle()
    toolkits = []
    by_url = {r["url"]: r for r in fake_slack.responses}
    for answer in (by_url[u] for u in urls):
        [button] = [e for b in answer["blocks"] for e in b.get("elements", []) if e.get("type") == "button"]
        toolkits.append(button["action_id"].removeprefix("lucy_connect_"))
        assert button["url"].startswith("https://connect.composio.example/")
    assert toolkits == ["github", "googlecalendar", "gmail"]
    assert sorted(connections.links) == sorted((fake_slack.team_id, t) for t in toolkits)


async def test_lucy_connect_with_an_unknown_name_offers_the_closest_matches(pool: Any, fake_slack: FakeSlack) -> None:
    async with SlackHarness.start(pool, fake_slack) as h:
        _, first = await h.sender.command("githib")
        _, second = await h.sender.command("zzzzqqq")
        await h.idle()
    by_url = {r["url"]: r for r in fake_slack.responses}
    close, nothing = by_url[first], by_url[second]
    assert "Did you mean *GitHub*" in close["blocks"][0]["text"]["text"]
    assert "I don't know an app called *zzzzqqq*" in nothing["blocks"][0]["text"]["text"]


async def test_lucy_connect_when_composio_is_down_says_so_in_one_sentence(pool: Any, fake_slack: FakeSlack) -> None:
    connections = FakeConnections()
    connections.fail_links = True
    async with SlackHarness.start(pool, fake_slack, connections=connections) as h:
        await h.sender.command("notion")
        await h.idle()
    [answer] = fake_slack.responses
    assert answer["text"].startswith("I couldn't reach the app integration service")
    assert answer["response_type"] == "ephemeral"


async def test_connect_button_clicks_are_acknowledged(pool: Any, fake_slack: FakeSlack) -> None:
    async with SlackHarness.start(pool, fake_slack) as h:
        delivery = await h.sender.action("lucy_connect_github", "github", url="https://connect.composio.example/x")
    assert delivery.status == 200


async def test_connect_then_callback_resumes_the_waiting_request(pool: Any, fake_slack: FakeSlack) -> None:
    connections = FakeConnections()
    agent = ScriptedAgent([
        Step(ConnectionRequired("github", None, "To do that I need access to GitHub.")),
        Answer("Created issue #7."),
    ])
    async with SlackHarness.start(pool, fake_slack, agent=agent, connections=connections) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> file a bug about login")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
        ca = connections.finish_oauth(fake_slack.team_id, "github")
        status, page = await get(f"{h.base}/integrations/callback", status="success",
                                 connected_account_id=ca, workspace=fake_slack.team_id)
        await h.idle()
        again, _ = await get(f"{h.base}/integrations/callback", status="success",
                             connected_account_id=ca, workspace=fake_slack.team_id)
        await h.idle()
    assert status == 200 and "GitHub is connected" in page and "close this tab" in page
    assert again == 200
    texts = [m.text for m in fake_slack.bot_messages_in(CHANNEL, msg.ts)]
    assert texts == ["To do that I need access to GitHub.", "GitHub is connected.", "Created issue #7."]
    assert [t.text for t in agent.turns] == ["file a bug about login", "file a bug about login"]
    assert agent.notes == ["GitHub is connected."]  # the second went on with the request (continue_turn)
    assert connections.confirmed == [(fake_slack.team_id, ca), (fake_slack.team_id, ca)]


async def test_the_callback_trusts_composio_not_its_query(pool: Any, fake_slack: FakeSlack) -> None:
    connections = FakeConnections()
    agent = ScriptedAgent([Step(ConnectionRequired("github", None, "Need GitHub."))])
    async with SlackHarness.start(pool, fake_slack, agent=agent, connections=connections) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> file a bug")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
        not_finished = next(iter(connections.accounts))  # the link was opened, OAuth not completed
        other_ws = connections.connect("T0EVIL", "github")  # an account of another workspace
        results = [
            await get(f"{h.base}/integrations/callback", status="success", connected_account_id=not_finished,
                      workspace=fake_slack.team_id),
            await get(f"{h.base}/integrations/callback", status="success", connected_account_id=other_ws,
                      workspace=fake_slack.team_id),
            await get(f"{h.base}/integrations/callback", status="success"),
        ]
        await h.idle()
        still_waiting = await pool.fetchval("SELECT count(*) FROM pending_actions WHERE status = 'pending'")
    assert [s for s, _ in results] == [400, 400, 400]
    assert "Traceback" not in "".join(p for _, p in results)
    assert [m.text for m in fake_slack.bot_messages_in(CHANNEL, msg.ts)] == ["Need GitHub."]
    assert len(agent.turns) == 1 and still_waiting == 1


async def test_a_slash_command_link_tells_the_person_when_it_is_connected(pool: Any, fake_slack: FakeSlack) -> None:
    connections = FakeConnections()
    async with SlackHarness.start(pool, fake_slack, connections=connections) as h:
        await h.sender.command("notion", channel=CHANNEL)
        await h.idle()
        ca = connections.finish_oauth(fake_slack.team_id, "notion")
        status, _ = await get(f"{h.base}/integrations/callback", connected_account_id=ca,
                              workspace=fake_slack.team_id)
        await h.idle()
    assert status == 200
    [notice] = fake_slack.ephemerals
    assert notice.args["user"] == "U0ALICE" and notice.args["text"] == "Notion is connected."
