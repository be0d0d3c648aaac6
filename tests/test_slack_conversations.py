"""The Slack layer over real HTTP: signed Events API requests into Lucy's aiohttp server, the real
Bolt and slack_sdk, answers checked in the fake Slack. The agent and connections are Lucy's own
ports, scripted (the end-to-end file runs the real agent)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from lucy.core.types import Answer, Failure, NeedsConnection, ToolCall
from lucy.errors import LLMError
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.slack_ports import ScriptedAgent, SlackHarness, Step, ok, slack_settings

CHANNEL = "C0GENERAL"
DM = "D0ALICE"


def answers(slack: FakeSlack, channel: str, thread_ts: str) -> list[Any]:
    return slack.bot_messages_in(channel, thread_ts)


async def test_a_mention_is_answered_once_in_its_thread_streamed(pool: Any, fake_slack: FakeSlack) -> None:
    agent = ScriptedAgent([Step(Answer("Here is **the plan**."), deltas=["Here is ", "**the plan**."])])
    async with SlackHarness.start(pool, fake_slack, agent=agent) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> what's the plan?")
        delivery = await h.sender.event(fake_slack.app_mention_event(msg))
        assert delivery.status == 200
        await h.idle()

    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.thread_ts == msg.ts and reply.text == "Here is **the plan**."
    assert [c.method for c in fake_slack.calls() if c.method.startswith("chat.")] == [
        "chat.startStream", "chat.stopStream"]
    start = fake_slack.calls("chat.startStream")[0].args
    assert start["recipient_user_id"] == "U0ALICE" and start["recipient_team_id"] == fake_slack.team_id
    status = fake_slack.calls("assistant.threads.setStatus")[0].args
    assert status["status"] == "is thinking…" and status["thread_ts"] == msg.ts
    [turn] = agent.turns
    assert turn.text == "what's the plan?" and turn.workspace == fake_slack.team_id
    assert (turn.user_name, turn.user_tz) == ("alice", "Europe/Oslo")


async def test_a_direct_message_is_answered_in_its_thread(pool: Any, fake_slack: FakeSlack) -> None:
    agent = ScriptedAgent([Answer("Hi Alice!")])
    async with SlackHarness.start(pool, fake_slack, agent=agent) as h:
        msg = fake_slack.user_message(DM, "U0ALICE", "hello")
        await h.sender.event(fake_slack.message_event(msg, "im"))
        await h.idle()
    [reply] = answers(fake_slack, DM, msg.ts)
    assert reply.text == "Hi Alice!" and reply.thread_ts == msg.ts
    assert agent.turns[0].text == "hello"


async def test_thread_follow_ups_without_a_mention_are_answered_only_in_lucys_threads(
    pool: Any, fake_slack: FakeSlack
) -> None:
    agent = ScriptedAgent([Answer("First answer."), Answer("Follow-up answer.")])
    async with SlackHarness.start(pool, fake_slack, agent=agent) as h:
        root = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> start")
        await h.sender.event(fake_slack.app_mention_event(root))
        await h.idle()
        follow = fake_slack.user_message(CHANNEL, "U0ALICE", "and then?", thread_ts=root.ts)
        await h.sender.event(fake_slack.message_event(follow))
        aside = fake_slack.user_message(CHANNEL, "U0BOB", "<@U0ALICE> lunch?", thread_ts=root.ts)
        await h.sender.event(fake_slack.message_event(aside))
        other_root = fake_slack.user_message(CHANNEL, "U0BOB", "unrelated")
        other = fake_slack.user_message(CHANNEL, "U0ALICE", "reply", thread_ts=other_root.ts)
        await h.sender.event(fake_slack.message_event(other))
        await h.idle()
        history = await h.memory.load(fake_slack.team_id, CHANNEL, root.ts)

    texts = [m.text for m in answers(fake_slack, CHANNEL, root.ts)]
    assert texts == ["First answer.", "Follow-up answer."]
    assert [t.text for t in agent.turns] == ["start", "and then?"]
    assert answers(fake_slack, CHANNEL, other_root.ts) == []
    # The aside was not answered, but Lucy keeps it for the next answer in that thread.
    assert any("lunch?" in str(m.get("content")) for m in history)


async def test_a_retried_event_and_the_mention_message_pair_get_one_answer(pool: Any, fake_slack: FakeSlack) -> None:
    agent = ScriptedAgent([Step(Answer("Once."), delay=0.2)])
    async with SlackHarness.start(pool, fake_slack, agent=agent) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> do it")
        mention = fake_slack.app_mention_event(msg)
        first = await h.sender.event(mention)
        retry = await h.sender.event(mention, retry_num=1)
        twin = await h.sender.event(fake_slack.message_event(msg))
        await h.idle()
        events = await h.deps.pool.fetchval("SELECT count(*) FROM processed_events")
        metrics = h.deps.metrics.render().decode()
    assert (first.status, retry.status, twin.status) == (200, 200, 200)
    assert len(agent.turns) == 1
    assert [m.text for m in answers(fake_slack, CHANNEL, msg.ts)] == ["Once."]
    assert events == 2  # the mention and the message.channels twin (the retry was not claimed again)
    assert 'outcome="duplicate"' in metrics


async def test_a_forged_signature_or_a_stale_timestamp_is_refused_and_nothing_runs(
    pool: Any, fake_slack: FakeSlack
) -> None:
    agent = ScriptedAgent()
    async with SlackHarness.start(pool, fake_slack, agent=agent) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
        forged = await h.sender.event(fake_slack.app_mention_event(msg), secret="not-the-secret")
        stale = await h.sender.event(fake_slack.app_mention_event(msg), timestamp=int(time.time()) - 600)
        await h.idle()
        claimed = await h.deps.pool.fetchval("SELECT count(*) FROM processed_events")
    assert (forged.status, stale.status) == (401, 401)
    assert agent.turns == [] and fake_slack.calls() == [] and claimed == 0


async def test_bot_messages_edits_and_deletions_are_ignored(pool: Any, fake_slack: FakeSlack) -> None:
    agent = ScriptedAgent()
    async with SlackHarness.start(pool, fake_slack, agent=agent) as h:
        msg = fake_slack.user_message(DM, "U0ALICE", "hello")
        base = fake_slack.message_event(msg, "im")["event"]
        noise = [
            {**base, "subtype": "bot_message", "bot_id": "B0OTHER", "user": None},
            {**base, "bot_id": fake_slack.bot_id, "user": fake_slack.bot_user_id},  # Lucy's own message
            {**base, "subtype": "message_changed", "message": {"text": "edited"}},
            {**base, "subtype": "message_deleted"},
            {**base, "subtype": "channel_join"},
        ]
        for event in noise:
            assert (await h.sender.event(fake_slack.envelope(event))).status == 200
        await h.idle()
    assert agent.turns == []
    assert not [c for c in fake_slack.calls() if c.method.startswith(("chat.", "assistant."))]


async def test_without_streaming_the_answer_is_posted_as_mrkdwn(pool: Any, fake_slack: FakeSlack) -> None:
    fake_slack.unsupported("chat.startStream")
    md = "**Done.** See [the issue](https://github.com/o/r/issues/1):\n- one\n- two\n```py\nx = 1 < 2\n```"
    agent = ScriptedAgent([Answer(md)])
    async with SlackHarness.start(pool, fake_slack, agent=agent) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> go")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.text == (
        "*Done.* See <https://github.com/o/r/issues/1|the issue>:\n• one\n• two\n```\nx = 1 &lt; 2\n```")


async def test_progress_shows_while_tools_run(pool: Any, fake_slack: FakeSlack) -> None:
    step = Step(Answer("Created issue #1."), tools=[ok("c1", "GITHUB_CREATE_AN_ISSUE")])
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([step])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> file a bug")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.tasks["c1"]["title"] == "Creating the GitHub issue"
    assert reply.tasks["c1"]["status"] == "complete"
    assert reply.text == "Created issue #1."
    statuses = [c.args["status"] for c in fake_slack.calls("assistant.threads.setStatus")]
    assert "is creating the GitHub issue…" in statuses


async def test_progress_without_streaming_or_status_is_one_message_that_becomes_the_answer(
    pool: Any, fake_slack: FakeSlack
) -> None:
    fake_slack.unsupported("chat.startStream")
    fake_slack.unsupported("assistant.threads.setStatus", "method_not_supported_for_channel_type")
    step = Step(Answer("Sent."), tools=[ok("c1", "GMAIL_SEND_EMAIL")])
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([step])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> email Bob")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.text == "Sent." and reply.edits >= 1
    posted = [c.args["text"] for c in fake_slack.ok_calls("chat.postMessage")]
    assert posted == ["_Sending the Gmail email…_"]
    # The 👀 reaction stood in for the status and was taken away once the answer was there.
    assert [c.method for c in fake_slack.ok_calls("reactions.add")] == ["reactions.add"]
    assert fake_slack.find(CHANNEL, msg.ts).reactions == set()


async def test_a_long_answer_is_split_within_slacks_limits(pool: Any, fake_slack: FakeSlack) -> None:
    paragraph = "word " * 190 + "\n\n"
    long_md = paragraph * 14 + "```\n" + "code line\n" * 300 + "```\n" + paragraph * 4
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([Answer(long_md)])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> essay")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    replies = answers(fake_slack, CHANNEL, msg.ts)
    assert len(replies) >= 2
    assert all(c.ok for c in fake_slack.calls() if c.method.startswith("chat."))
    assert len(replies[0].text) <= 10_000 and all(len(r.text) <= 4_000 for r in replies[1:])
    assert all(r.text.count("```") % 2 == 0 for r in replies)
    words = sum(r.text.count("word") for r in replies)
    assert words == 190 * 18 and sum(r.text.count("code line") for r in replies) == 300


async def test_slack_429_on_posting_is_waited_out(pool: Any, fake_slack: FakeSlack) -> None:
    fake_slack.unsupported("chat.startStream")
    fake_slack.rate_limit_next("chat.postMessage", retry_after=0, times=2)
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([Answer("Still here.")])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    assert [m.text for m in answers(fake_slack, CHANNEL, msg.ts)] == ["Still here."]
    assert [c.status for c in fake_slack.calls("chat.postMessage")] == [429, 429, 200]


async def test_429_while_streaming_is_waited_out_too(pool: Any, fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit_next("chat.startStream", retry_after=0)
    fake_slack.rate_limit_next("chat.stopStream", retry_after=0)
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([Answer("Streamed anyway.")])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    assert [m.text for m in answers(fake_slack, CHANNEL, msg.ts)] == ["Streamed anyway."]


@pytest.mark.parametrize("step, sentence", [
    (Step(Answer("x"), raises=LLMError("all models down")), LLMError.user_message),
    (Step(Answer("x"), raises=RuntimeError("bug")), "Something went wrong on my side. Please try again in a moment."),
    (Step(Failure("I couldn't reach GitHub.", detail="503")), "I couldn't reach GitHub."),
])
async def test_whatever_goes_wrong_the_person_gets_one_plain_sentence(
    pool: Any, fake_slack: FakeSlack, step: Step, sentence: str
) -> None:
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([step])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.text == sentence and "Traceback" not in reply.text


async def test_a_broken_stream_still_ends_in_one_answer(pool: Any, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.stopStream", "message_not_in_streaming_state")
    step = Step(Answer("Final words."), tools=[ok("c1", "NOTION_SEARCH_PAGES")])
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([step])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> search")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.text == "Final words."


async def test_streamed_words_from_an_earlier_step_are_replaced_by_the_answer(
    pool: Any, fake_slack: FakeSlack
) -> None:
    step = Step(Answer("The answer."), deltas=["Let me check that for you, it may take a moment. " * 20])
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([step])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> q")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.text == "The answer."


async def test_a_connection_needed_mid_turn_shows_a_connect_button(pool: Any, fake_slack: FakeSlack) -> None:
    from lucy.core.types import ConnectionRequired

    needs = NeedsConnection("github", None, call_id="c1", tool="GITHUB_CREATE_AN_ISSUE")
    step = Step(ConnectionRequired("github", None, "To do that I need access to GitHub."),
                tools=[(ToolCall("c1", "GITHUB_CREATE_AN_ISSUE", {}), needs)])
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([step])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> file a bug")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
        waiting = await h.deps.pool.fetch("SELECT * FROM pending_actions WHERE kind = 'connection'")
    [reply] = answers(fake_slack, CHANNEL, msg.ts)
    assert reply.text == "To do that I need access to GitHub."
    [button] = reply.buttons
    assert button["action_id"] == "lucy_connect_github" and button["url"].startswith("https://connect.composio")
    assert reply.tasks["c1"]["status"] == "pending"
    assert [(r["toolkit"], r["thread_ts"], r["slack_user"]) for r in waiting] == [("github", msg.ts, "U0ALICE")]


async def test_approval_needed_shows_approve_and_deny_buttons_whose_clicks_are_acked(
    pool: Any, fake_slack: FakeSlack
) -> None:
    from lucy.core.types import ApprovalRequired, NeedsApproval

    approval = NeedsApproval("ap_1", "GITHUB_DELETE_A_REPOSITORY", {"repo": "r"}, "Deletes the repository.")
    async with SlackHarness.start(pool, fake_slack,
                                  agent=ScriptedAgent([ApprovalRequired(approval, "I need a go-ahead.")])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> delete r")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
        [reply] = answers(fake_slack, CHANNEL, msg.ts)
        clicks = [await h.sender.action(b["action_id"], b["value"], message_ts=reply.ts) for b in reply.buttons]
    assert [(b["action_id"], b["value"]) for b in reply.buttons] == [("lucy_approve", "ap_1"), ("lucy_deny", "ap_1")]
    assert reply.text == "I need a go-ahead." and "GITHUB_DELETE_A_REPOSITORY" in reply.block_text
    assert [c.status for c in clicks] == [200, 200]


async def test_the_messages_tab_greets_a_new_person_once(pool: Any, fake_slack: FakeSlack) -> None:
    async with SlackHarness.start(pool, fake_slack) as h:
        event = {"type": "app_home_opened", "user": "U0ALICE", "channel": DM, "tab": "messages",
                 "event_ts": "1.1"}
        await h.sender.event(fake_slack.envelope(event))
        await h.sender.event(fake_slack.envelope(event))
        await h.idle()
    [greeting] = fake_slack.bot_messages_in(DM)
    assert greeting.text.startswith("Hi, I'm Lucy.")
    [prompts] = fake_slack.ok_calls("assistant.threads.setSuggestedPrompts")
    assert "thread_ts" not in prompts.args and len(prompts.args["prompts"]) >= 3


async def test_uninstall_removes_what_belongs_to_the_workspace(pool: Any, fake_slack: FakeSlack) -> None:
    other = "T0OTHER"
    async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([Answer("hi")])) as h:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
        await h.sender.event(fake_slack.app_mention_event(msg))
        await h.idle()
        await pool.execute("INSERT INTO integrations (workspace_id, toolkit, status) VALUES ($1, 'github', 'active'),"
                           " ($2, 'github', 'active')", fake_slack.team_id, other)
        await pool.execute("INSERT INTO workspaces (id, team_id) VALUES ($1, $1)", fake_slack.team_id)
        delivery = await h.sender.event(fake_slack.envelope({"type": "app_uninstalled", "event_ts": "1.2"}))
        await h.idle()
        left = {t: await pool.fetchval(f"SELECT count(*) FROM {t} WHERE workspace_id = $1", fake_slack.team_id)
                for t in ("integrations", "thread_messages", "processed_messages")}
        others = await pool.fetchval("SELECT count(*) FROM integrations WHERE workspace_id = $1", other)
        gone = await pool.fetchval("SELECT uninstalled_at IS NOT NULL FROM workspaces WHERE id = $1",
                                   fake_slack.team_id)
    assert delivery.status == 200
    assert left == {"integrations": 0, "thread_messages": 0, "processed_messages": 0}
    assert others == 1 and gone is True
    assert h.connections.forgotten == [fake_slack.team_id]  # its cached app list is dropped too


async def test_starting_with_the_bot_token_in_the_environment_logs_no_false_warning(
    pool: Any, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Bolt reads SLACK_BOT_TOKEN itself and warns the client's token wins; Lucy passes the client
    # on purpose, so a correctly configured deployment must not start with a warning.
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake_slack.bot_token)
    with caplog.at_level("WARNING"):
        async with SlackHarness.start(pool, fake_slack, agent=ScriptedAgent([Answer("hi")])) as h:
            msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
            await h.sender.event(fake_slack.app_mention_event(msg))
            await h.idle()
    assert [m.text for m in fake_slack.bot_messages_in(CHANNEL)] == ["hi"]
    assert not [r for r in caplog.records if "will be unused" in r.getMessage()]


def test_settings_helper_is_single_workspace_http(fake_slack: FakeSlack) -> None:
    s = slack_settings(fake_slack)
    assert not s.socket_mode and not s.multi_workspace and s.slack_configured


async def test_old_claims_and_abandoned_connection_requests_are_pruned(pool: Any) -> None:
    from lucy.slack.dedupe import Claims

    claims = Claims(pool)
    assert await claims.claim_event("EvOLD", "T1") and await claims.claim_event("EvNEW", "T1")
    assert await claims.claim_message("T1", "C1", "1.1")
    await pool.execute("UPDATE processed_events SET received_at = now() - interval '3 days' WHERE event_id = 'EvOLD'")
    await pool.execute("UPDATE processed_messages SET received_at = now() - interval '3 days'")
    await pool.execute(
        "INSERT INTO pending_actions (id, workspace_id, kind, channel, thread_ts, slack_user, toolkit, expires_at) "
        "VALUES ('p1', 'T1', 'connection', 'C1', '1.1', 'U1', 'github', now() - interval '1 minute')")
    assert await claims.prune() == 2
    assert not await claims.claim_event("EvNEW", "T1")  # still remembered
    assert await claims.claim_event("EvOLD", "T1")  # long past Slack's retry window: forgotten
    assert await pool.fetchval("SELECT status FROM pending_actions WHERE id = 'p1'") == "expired"


async def test_two_lucy_instances_answer_a_redelivered_message_once(pool: Any, fake_slack: FakeSlack) -> None:
    first_agent, second_agent = ScriptedAgent([Step(Answer("One."), delay=0.2)]), ScriptedAgent()
    async with SlackHarness.start(pool, fake_slack, agent=first_agent) as one, \
            SlackHarness.start(pool, fake_slack, agent=second_agent) as two:
        msg = fake_slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> hi")
        await one.sender.event(fake_slack.app_mention_event(msg))
        await two.sender.event(fake_slack.app_mention_event(msg))  # the twin event, on the other instance
        await two.sender.event(fake_slack.message_event(msg), retry_num=1)
        await one.idle()
        await two.idle()
    assert [m.text for m in answers(fake_slack, CHANNEL, msg.ts)] == ["One."]
    assert (len(first_agent.turns), len(second_agent.turns)) == (1, 0)
