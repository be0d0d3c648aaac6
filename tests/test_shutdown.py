"""SIGTERM on a real ``python -m lucy serve``: take nothing new, finish what is in progress within
``LUCY_SHUTDOWN_GRACE_SECONDS``, tell the threads that could not finish, close everything, exit 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lucy.slack.conversation import RESTART_SENTENCE
from tests.fakes.fake_composio import FakeComposio
from tests.fakes.fake_llm import FakeLLM, RecordedRequest, Reply, text
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.lucy_server import thread
from tests.test_multi_instance import LucyProcess, start_instances

CHANNEL = "C0GENERAL"
GRACE = "6"


def slow_or_quick(request: RecordedRequest) -> Reply:
    said = str(request.messages[-1].get("content"))
    if "slow" in said:
        return text("You will never see this.", delay=120)  # outlives the grace period
    return text("Quick answer.", delay=1.0)  # finishes within it


@pytest.fixture
async def lucy_proc(tmp_path: Path, db_dsn: str, fake_slack: FakeSlack, fake_composio: FakeComposio,
                    fake_llm: FakeLLM, request: pytest.FixtureRequest) -> AsyncIterator[LucyProcess]:
    fake_llm.responder = slow_or_quick
    extra = {"SLACK_APP_TOKEN": fake_slack.app_token} if "socket" in request.node.name else {}
    [proc] = await start_instances(["lucy"], tmp_path, fake_slack, db_dsn=db_dsn, composio=fake_composio,
                                   llm=fake_llm, LUCY_SHUTDOWN_GRACE_SECONDS=GRACE, **extra)
    try:
        yield proc
    finally:
        proc.kill()


async def test_sigterm_finishes_quick_answers_tells_slow_ones_and_refuses_new_events(
    lucy_proc: LucyProcess, fake_slack: FakeSlack, fake_llm: FakeLLM,
) -> None:
    slack, sender = fake_slack, lucy_proc.sender
    assert sender is not None
    slow = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> a slow question")
    quick = slack.user_message(CHANNEL, "U0BOB", "<@U0LUCY> a quick question")
    for msg in (slow, quick):
        assert (await sender.event(slack.app_mention_event(msg))).status == 200
    await slack.wait_for(lambda: len(fake_llm.requests) == 2, timeout=30)

    lucy_proc.terminate()
    await _wait_until_not_ready(lucy_proc)
    late = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> one more thing")
    refused = await sender.event(slack.app_mention_event(late))
    code = await lucy_proc.wait_exit(60)

    assert refused.status == 503  # Slack retries it, and the load balancer sends that to another instance
    assert code == 0
    assert thread(slack, CHANNEL, quick.ts) == ["Quick answer."]
    assert thread(slack, CHANNEL, slow.ts) == [RESTART_SENTENCE]
    assert thread(slack, CHANNEL, late.ts) == [] and len(fake_llm.requests) == 2
    events = [e.get("event") for e in lucy_proc.log_events()]
    assert "turn cut short by shutdown" in events and events[-1] == "stopped"


async def test_sigterm_in_socket_mode_disconnects_first_then_finishes_the_answer(
    lucy_proc: LucyProcess, fake_slack: FakeSlack, fake_llm: FakeLLM,
) -> None:
    slack = fake_slack
    await slack.socket_connected(timeout=30)
    quick = slack.user_message(CHANNEL, "U0BOB", "<@U0LUCY> a quick question")
    await slack.socket_send(slack.app_mention_event(quick))
    await slack.wait_for(lambda: len(fake_llm.requests) == 1, timeout=30)

    lucy_proc.terminate()
    # The socket goes first (Slack then sends new events to the other connections) ...
    await slack.wait_for(lambda: not slack._sockets, timeout=30)
    answered_before_disconnect = bool(thread(slack, CHANNEL, quick.ts))
    code = await lucy_proc.wait_exit(60)

    # ... and the answer in progress is still written.
    assert not answered_before_disconnect
    assert code == 0
    assert thread(slack, CHANNEL, quick.ts) == ["Quick answer."]


async def _wait_until_not_ready(proc: LucyProcess) -> None:
    for _ in range(200):
        status, _ = await proc.get("/readyz")
        if status == 503:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("/readyz kept answering 200 after SIGTERM")
