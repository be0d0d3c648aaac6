"""Multi-workspace mode: Slack OAuth install through /slack/install and /slack/oauth_redirect with the
PostgreSQL stores, events authorized with the stored token, and uninstall / token revocation."""

from __future__ import annotations

from typing import Any

import aiohttp

from lucy.core.types import Answer
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.slack_ports import ScriptedAgent, SlackHarness, slack_settings

CHANNEL = "C0GENERAL"


def multi(slack: FakeSlack) -> Any:
    return slack_settings(slack, SLACK_BOT_TOKEN=None, SLACK_CLIENT_ID=slack.client_id,
                          SLACK_CLIENT_SECRET=slack.client_secret)


async def install(h: SlackHarness) -> tuple[int, str]:
    """Walk the browser through install → Slack's Allow page → the redirect back to Lucy."""
    async with aiohttp.ClientSession() as browser:
        async with browser.get(f"{h.base}/slack/install", allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            authorize = resp.headers["Location"]
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
        async with browser.get(authorize, allow_redirects=False) as resp:
            assert resp.status == 302
            back = resp.headers["Location"]
        async with browser.get(back, headers={"Cookie": cookie}, allow_redirects=False) as resp:
            first = resp.status
        async with browser.get(back, headers={"Cookie": cookie}, allow_redirects=False) as resp:
            replay = resp.status  # the state is single-use
    return first, f"{authorize} {replay}"


async def test_install_stores_the_workspace_and_its_events_are_answered_with_its_token(
    pool: Any, fake_slack: FakeSlack
) -> None:
    agent = ScriptedAgent([Answer("Hello, Newco!")])
    async with SlackHarness.start(pool, fake_slack, agent=agent, settings=multi(fake_slack)) as h:
        fake_slack.redirect_uri = f"{h.base}/slack/oauth_redirect"
        status, info = await install(h)
        assert status == 200, info
        assert info.endswith(" 401") or info.endswith(" 400")
        assert "scope=app_mentions:read,assistant:write" in info and f"client_id={fake_slack.client_id}" in info

        new = fake_slack.install_team
        auth_tests = len(fake_slack.calls("auth.test"))  # Bolt's install asks once, for the bot id
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", f"<@{new.bot_user_id}> hi", team_id=new.team_id)
        await h.sender.event(fake_slack.app_mention_event(msg))
        stranger = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi", team_id="T0STRANGER")
        await h.sender.event(fake_slack.app_mention_event(stranger))
        await h.idle()
        rows = await pool.fetch("SELECT workspace_id, bot_token, bot_user_id FROM slack_installations")
        ws = await pool.fetchrow("SELECT name, uninstalled_at FROM workspaces WHERE id = $1", new.team_id)

    assert [(r["workspace_id"], r["bot_token"], r["bot_user_id"]) for r in rows] == [
        (new.team_id, new.bot_token, new.bot_user_id)]
    assert ws["name"] == "Newco" and ws["uninstalled_at"] is None
    [reply] = fake_slack.bot_messages_in(CHANNEL, msg.ts)
    assert reply.text == "Hello, Newco!"
    assert {c.token for c in fake_slack.calls() if c.method.startswith("chat.")} == {new.bot_token}
    assert len(fake_slack.calls("auth.test")) == auth_tests  # events: the stored bot, no auth.test
    assert fake_slack.bot_messages_in(CHANNEL, stranger.ts) == [] and len(agent.turns) == 1


async def test_uninstall_and_revocation_remove_the_workspace_tokens(pool: Any, fake_slack: FakeSlack) -> None:
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent(), settings=multi(fake_slack)) as h:
        fake_slack.redirect_uri = f"{h.base}/slack/oauth_redirect"
        assert (await install(h))[0] == 200
        new = fake_slack.install_team
        await pool.execute("INSERT INTO integrations (workspace_id, toolkit, status) VALUES ($1, 'github', 'active')",
                           new.team_id)
        revoked = fake_slack.envelope({"type": "tokens_revoked", "tokens": {"bot": [new.bot_user_id]}},
                                      team_id=new.team_id)
        assert (await h.sender.event(revoked)).status == 200
        await h.idle()
        bot_tokens = await pool.fetchval("SELECT count(bot_token) FROM slack_installations")
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", f"<@{new.bot_user_id}> hi", team_id=new.team_id)
        await h.sender.event(fake_slack.app_mention_event(msg))
        uninstall = fake_slack.envelope({"type": "app_uninstalled"}, team_id=new.team_id)
        assert (await h.sender.event(uninstall)).status == 200
        await h.idle()
        installs = await pool.fetchval("SELECT count(*) FROM slack_installations")
        integrations = await pool.fetchval("SELECT count(*) FROM integrations")
        gone = await pool.fetchval("SELECT uninstalled_at IS NOT NULL FROM workspaces WHERE id = $1", new.team_id)
    assert bot_tokens == 0
    assert fake_slack.bot_messages_in(CHANNEL, msg.ts) == []  # no token left: nothing is answered
    assert (installs, integrations, gone) == (0, 0, True)


async def test_single_workspace_mode_has_nothing_to_install(pool: Any, fake_slack: FakeSlack) -> None:
    async with SlackHarness.start(pool, fake_slack) as h, aiohttp.ClientSession() as browser:
        async with browser.get(f"{h.base}/slack/install", allow_redirects=False) as resp:
            assert resp.status == 404
            assert "one workspace" in await resp.text()
