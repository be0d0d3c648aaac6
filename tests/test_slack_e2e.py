"""End to end over real HTTP: signed requests into ``lucy serve`` (HTTP mode, in this process) with
the fake Slack, fake Composio and fake LLM servers. Everything between them is real: Bolt,
slack_sdk, the agent loop on litellm, the integrations layer on the Composio SDK, PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes.fake_composio import FakeComposio
from tests.fakes.fake_llm import FakeLLM, call, text, tool_call, tool_calls
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.lucy_server import Lucy, start_lucy, thread

CHANNEL = "C0GENERAL"
DM = "D0ALICE"
WS = "T0001"


@pytest.fixture
async def lucy(db_dsn: str, fake_slack: FakeSlack, fake_composio: FakeComposio,
               fake_llm: FakeLLM) -> AsyncIterator[Lucy]:
    server = await start_lucy(db_dsn, fake_slack, fake_composio, fake_llm)
    try:
        yield server
    finally:
        await server.shutdown()


async def test_mention_dm_and_follow_up_are_answered_in_their_threads(lucy: Lucy) -> None:
    slack, llm = lucy.slack, lucy.llm
    llm.script([text("Hello from Lucy!"), text("DMs work too."), text("Following up.")])
    mention = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hello")
    assert (await lucy.sender.event(slack.app_mention_event(mention))).status == 200
    await slack.wait_for(lambda: thread(slack, CHANNEL, mention.ts))
    dm = slack.user_message(DM, "U0ALICE", "are you there?")
    await lucy.sender.event(slack.message_event(dm, "im"))
    await slack.wait_for(lambda: thread(slack, DM, dm.ts))
    follow = slack.user_message(CHANNEL, "U0ALICE", "and one more thing", thread_ts=mention.ts)
    await lucy.sender.event(slack.message_event(follow))
    await slack.wait_for(lambda: len(thread(slack, CHANNEL, mention.ts)) == 2)
    await lucy.shutdown()

    assert thread(slack, CHANNEL, mention.ts) == ["Hello from Lucy!", "Following up."]
    assert thread(slack, DM, dm.ts) == ["DMs work too."]
    assert slack.calls("chat.startStream")  # streamed
    # The follow-up was answered with the thread's history in the prompt.
    last = llm.requests[-1].messages
    assert any("hello" in str(m.get("content")) for m in last) and any(
        "Hello from Lucy!" in str(m.get("content")) for m in last)
    assert "<@U0ALICE>" in str(last[-1]["content"]) and "and one more thing" in str(last[-1]["content"])


async def test_a_retried_event_and_the_mention_message_pair_run_once(lucy: Lucy) -> None:
    slack, llm, composio = lucy.slack, lucy.llm, lucy.composio
    composio.connect(WS, "github")
    composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 42, "html_url": "https://github.com/acme/web/issues/42"})
    llm.script([
        tool_call("GITHUB_CREATE_AN_ISSUE", {"owner": "acme", "repo": "web", "title": "Login fails"}, delay=0.3),
        text("Created [issue #42](https://github.com/acme/web/issues/42)."),
    ])
    msg = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> create a github issue in acme/web: Login fails")
    mention = slack.app_mention_event(msg)
    deliveries = [
        await lucy.sender.event(mention),
        await lucy.sender.event(mention, retry_num=1),
        await lucy.sender.event(slack.message_event(msg)),
        await lucy.sender.event(mention, retry_num=2),
    ]
    await slack.wait_for(lambda: thread(slack, CHANNEL, msg.ts))
    await lucy.shutdown()

    assert [d.status for d in deliveries] == [200, 200, 200, 200]
    assert thread(slack, CHANNEL, msg.ts) == ["Created [issue #42](https://github.com/acme/web/issues/42)."]
    assert [(e.user_id, e.slug) for e in composio.executes] == [(WS, "GITHUB_CREATE_AN_ISSUE")]
    assert len(llm.requests) == 2
    [reply] = slack.bot_messages_in(CHANNEL, msg.ts)
    assert reply.tasks and next(iter(reply.tasks.values()))["title"] == "Creating the GitHub issue"


async def test_forged_and_stale_requests_get_401_and_nothing_runs(lucy: Lucy) -> None:
    slack = lucy.slack
    msg = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> delete everything")
    forged = await lucy.sender.event(slack.app_mention_event(msg), secret="guessed-secret")
    stale = await lucy.sender.event(slack.app_mention_event(msg), timestamp=int(time.time()) - 3600)
    command, _ = await lucy.sender.command("github", secret="guessed-secret")
    await lucy.shutdown()
    assert (forged.status, stale.status, command.status) == (401, 401, 401)
    assert lucy.llm.requests == [] and lucy.composio.executes == []
    assert slack.calls() == [] and slack.responses == []


async def test_lucy_connect_with_and_without_an_app(lucy: Lucy) -> None:
    slack, composio = lucy.slack, lucy.composio
    composio.connect(WS, "github")
    _, overview_url = await lucy.sender.command("")
    _, gcal_url = await lucy.sender.command("google calendar")
    _, typo_url = await lucy.sender.command("gmial")
    await slack.wait_for(lambda: len(slack.responses) == 3)
    await lucy.shutdown()

    by_url = {r["url"]: r for r in slack.responses}
    overview, gcal, typo = by_url[overview_url], by_url[gcal_url], by_url[typo_url]
    assert all(r["response_type"] == "ephemeral" for r in slack.responses)
    assert "*GitHub* — connected" in overview["blocks"][0]["text"]["text"]
    offered = [e["action_id"] for b in overview["blocks"] for e in b.get("elements", []) if e.get("type") == "button"]
    assert "lucy_connect_gmail" in offered and "lucy_connect_github" not in offered
    [button] = [e for b in gcal["blocks"] for e in b.get("elements", []) if e.get("type") == "button"]
    assert button["action_id"] == "lucy_connect_googlecalendar"
    assert button["url"].startswith(composio.base_url + "/link/")
    assert "Did you mean *Gmail*" in typo["blocks"][0]["text"]["text"]


async def test_connect_then_callback_completes_the_waiting_request(lucy: Lucy) -> None:
    slack, llm, composio = lucy.slack, lucy.llm, lucy.composio
    composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 7})
    llm.script([
        tool_call("connect_app", {"toolkit": "github", "app": "github"}),
        tool_calls(call("GITHUB_CREATE_AN_ISSUE", {"owner": "acme", "repo": "web", "title": "Login fails"})),
        text("Created issue #7 in acme/web."),
    ])
    msg = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> create a github issue in acme/web: Login fails")
    await lucy.sender.event(slack.app_mention_event(msg))
    first = await slack.wait_for(lambda: [m for m in slack.bot_messages_in(CHANNEL, msg.ts) if m.buttons])
    [button] = first[0].buttons
    assert button["action_id"] == "lucy_connect_github"
    assert (await lucy.sender.action(button["action_id"], button["value"], url=button["url"])).status == 200

    # The person follows the button: Composio's page, then the redirect back to Lucy's callback.
    async with aiohttp.ClientSession() as browser, browser.get(button["url"]) as resp:
        page_status, page = resp.status, await resp.text()
        landed = str(resp.url)
    await slack.wait_for(lambda: len(thread(slack, CHANNEL, msg.ts)) == 3, timeout=20)
    await lucy.shutdown()

    assert landed.startswith(lucy.base + "/integrations/callback")
    assert page_status == 200 and "GitHub is connected" in page and "close this tab" in page
    texts = thread(slack, CHANNEL, msg.ts)
    assert texts[0].startswith("To do that I need access to GitHub")
    assert texts[1:] == ["GitHub is connected.", "Created issue #7 in acme/web."]
    assert [(e.user_id, e.slug) for e in composio.executes] == [(WS, "GITHUB_CREATE_AN_ISSUE")]
    # The request went on, it was not asked again: the person's message is in the model's view once,
    # followed by Lucy's note that the app is connected.
    last = [m for m in llm.requests[-1].messages if m["role"] == "user"]
    assert sum("create a github issue" in str(m["content"]) for m in last) == 1
    assert "GitHub is connected." in str(last[-1]["content"])


async def test_a_forged_callback_confirms_nothing(lucy: Lucy) -> None:
    slack, llm, composio = lucy.slack, lucy.llm, lucy.composio
    llm.script([tool_call("connect_app", {"toolkit": "github", "app": "github"})])
    msg = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> star acme/web on github")
    await lucy.sender.event(slack.app_mention_event(msg))
    await slack.wait_for(lambda: slack.bot_messages_in(CHANNEL, msg.ts))
    other = composio.connect("T0EVIL", "github")  # an ACTIVE account, but another workspace's
    status, page = await lucy.get("/integrations/callback", workspace=WS, toolkit="github",
                                  status="success", connected_account_id=other)
    made_up, _ = await lucy.get("/integrations/callback", workspace=WS, toolkit="github",
                                status="success", connected_account_id="ca_madeup")
    await lucy.shutdown()
    assert (status, made_up) == (400, 400) and "Traceback" not in page
    assert len(thread(slack, CHANNEL, msg.ts)) == 1 and len(llm.requests) == 1


async def test_uninstall_cleans_up_the_workspace(lucy: Lucy, db_dsn: str) -> None:
    import asyncpg

    slack, llm = lucy.slack, lucy.llm
    llm.script([text("Hi!")])
    msg = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
    await lucy.sender.event(slack.app_mention_event(msg))
    await slack.wait_for(lambda: thread(slack, CHANNEL, msg.ts))
    conn = await asyncpg.connect(db_dsn)
    try:
        before = await conn.fetchval("SELECT count(*) FROM thread_messages WHERE workspace_id = $1", WS)
        assert (await lucy.sender.event(slack.envelope({"type": "app_uninstalled"}))).status == 200
        await lucy.shutdown()
        after = await conn.fetchval("SELECT count(*) FROM thread_messages WHERE workspace_id = $1", WS)
        claims = await conn.fetchval("SELECT count(*) FROM processed_messages WHERE workspace_id = $1", WS)
    finally:
        await conn.close()
    assert before >= 2 and after == 0 and claims == 0


async def test_slack_429_on_posting_still_delivers_the_answer(lucy: Lucy) -> None:
    slack, llm = lucy.slack, lucy.llm
    slack.unsupported("chat.startStream")  # post + update, the path 429s hit hardest
    slack.rate_limit_next("chat.postMessage", retry_after=0, times=3)
    llm.script([text("**Made it** through the rate limit.")])
    msg = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
    await lucy.sender.event(slack.app_mention_event(msg))
    await slack.wait_for(lambda: thread(slack, CHANNEL, msg.ts), timeout=20)
    await lucy.shutdown()
    assert thread(slack, CHANNEL, msg.ts) == ["*Made it* through the rate limit."]
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 429, 429, 200]
