"""Faults survived: Composio, the LLM, PostgreSQL and Redis failing while ``lucy serve`` runs.

Each test drives the real ``serve()`` (HTTP mode, in this process) with signed events, injects a
fault at a fake or a real dependency, and checks what the person sees in the thread, that nothing
ran twice or went missing, and that Lucy carries on without a restart.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from lucy.errors import LLMError
from tests.fakes.fake_composio import FakeComposio
from tests.fakes.fake_llm import FakeLLM, RecordedRequest, Reply, error, text, tool_call
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.lucy_server import Lucy, free_port, thread
from tests.fakes.lucy_server import start_lucy as serve_lucy

CHANNEL = "C0GENERAL"
WS = "T0001"
ISSUE = {"owner": "acme", "repo": "web", "title": "Login fails"}

Start = Callable[..., Awaitable[Lucy]]


@pytest.fixture
async def start_lucy(db_dsn: str, fake_slack: FakeSlack, fake_composio: FakeComposio,
                     fake_llm: FakeLLM) -> AsyncIterator[Start]:
    """``await start_lucy(**env)``: ``lucy serve`` in this process, on the fakes, with extra settings."""
    started: list[Lucy] = []

    async def start(**env: Any) -> Lucy:
        lucy = await serve_lucy(db_dsn, fake_slack, fake_composio, fake_llm,
                                LUCY_SHUTDOWN_GRACE_SECONDS=30, **env)
        started.append(lucy)
        return lucy

    try:
        yield start
    finally:
        for lucy in started:
            await lucy.shutdown()


async def ask(lucy: Lucy, words: str, user: str = "U0ALICE") -> str:
    """A person mentions Lucy; returns the message ts (the thread)."""
    msg = lucy.slack.user_message(CHANNEL, user, f"<@U0LUCY> {words}")
    delivery = await lucy.sender.event(lucy.slack.app_mention_event(msg))
    assert delivery.status == 200, delivery.text
    return msg.ts


async def answer_of(lucy: Lucy, ts: str, timeout: float = 30) -> list[str]:
    await lucy.slack.wait_for(lambda: thread(lucy.slack, CHANNEL, ts), timeout=timeout)
    await asyncio.sleep(0.2)  # a duplicate would show up by now
    return thread(lucy.slack, CHANNEL, ts)


def issue_model(request: RecordedRequest) -> Reply:
    """A model that creates the issue, then reports what the tool said."""
    last = request.messages[-1]
    if last.get("role") != "tool":
        return tool_call("GITHUB_CREATE_AN_ISSUE", ISSUE)
    content = str(last["content"])  # the result's JSON, inside Lucy's <untrusted-tool-output> wrapper
    result = json.loads(content[content.index("{"):content.rindex("}") + 1])
    if "error" in result:
        return text(f"I could not create the issue: {result['error']}")
    return text("Created issue #42.")


def tool_errors(llm: FakeLLM) -> list[str]:
    return [m["content"] for r in llm.requests for m in r.messages if m.get("role") == "tool"]


# --- Composio -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [
    {"status": 500}, {"status": 503, "times": 2}, {"status": 429, "retry_after": 0.2}, {"malformed": True},
], ids=["500", "503-twice", "429-retry-after", "garbage"])
async def test_composio_read_faults_are_retried_and_the_answer_is_normal(
    start_lucy: Start, fake_composio: FakeComposio, fake_llm: FakeLLM, fault: dict[str, Any],
) -> None:
    lucy = await start_lucy()
    fake_composio.connect(WS, "github")
    fake_composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 42})
    fake_llm.responder = issue_model
    fake_composio.fail_next("GET /connected_accounts", **fault)
    ts = await ask(lucy, "create a github issue in acme/web: Login fails")
    assert await answer_of(lucy, ts) == ["Created issue #42."]
    assert [(e.user_id, e.slug) for e in fake_composio.executes] == [(WS, "GITHUB_CREATE_AN_ISSUE")]


async def test_composio_down_for_reads_gives_a_clear_answer_and_recovers(
    start_lucy: Start, fake_composio: FakeComposio, fake_llm: FakeLLM,
) -> None:
    # The registry reuses a stale answer for min(15 s, the cache TTL) so a down Composio is not hammered.
    lucy = await start_lucy(LUCY_COMPOSIO_TIMEOUT_SECONDS=2, LUCY_CACHE_TTL_SECONDS=1)
    fake_composio.connect(WS, "github")
    fake_llm.responder = lambda r: text("Hello!")
    fake_composio.down = True
    ts = await ask(lucy, "hello")
    assert await answer_of(lucy, ts) == ["Hello!"]  # an answer without the apps, not silence or an error
    fake_composio.down = False
    await asyncio.sleep(1.2)  # past that window
    fake_composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 42})
    fake_llm.responder = issue_model
    ts = await ask(lucy, "create a github issue in acme/web: Login fails")
    assert await answer_of(lucy, ts) == ["Created issue #42."]
    assert [(e.user_id, e.slug) for e in fake_composio.executes] == [(WS, "GITHUB_CREATE_AN_ISSUE")]


@pytest.mark.parametrize("fault", [
    {"status": 500}, {"status": 502}, {"status": 429, "retry_after": 0}, {"malformed": True},
], ids=["500", "502", "429", "garbage"])
async def test_composio_execute_faults_are_never_retried_and_the_person_is_told(
    start_lucy: Start, fake_composio: FakeComposio, fake_llm: FakeLLM, fault: dict[str, Any],
) -> None:
    lucy = await start_lucy()
    fake_composio.connect(WS, "github")
    fake_llm.responder = issue_model
    fake_composio.fail_next("POST /tools/execute/*", **fault)
    ts = await ask(lucy, "create a github issue in acme/web: Login fails")
    [answer] = await answer_of(lucy, ts)

    assert fake_composio.count("POST", "/tools/execute/*") == 1  # a write is never sent twice
    assert answer.startswith("I could not create the issue: ")
    [told] = tool_errors(fake_llm)
    assert "Composio" in told and "Traceback" not in told  # the model got a plain sentence to pass on


async def test_composio_execute_timeout_is_not_retried(
    start_lucy: Start, fake_composio: FakeComposio, fake_llm: FakeLLM,
) -> None:
    lucy = await start_lucy(LUCY_TOOL_TIMEOUT_SECONDS=1)
    fake_composio.connect(WS, "github")
    fake_composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 42})
    fake_llm.responder = issue_model
    fake_composio.fail_next("POST /tools/execute/*", status=200, delay=3)  # runs, then answers too late
    ts = await ask(lucy, "create a github issue in acme/web: Login fails")
    [answer] = await answer_of(lucy, ts)
    assert answer.startswith("I could not create the issue: ")
    assert fake_composio.count("POST", "/tools/execute/*") == 1
    assert len(fake_composio.executes) == 1  # done once on the app's side, and not again


# --- the LLM ------------------------------------------------------------------------------------


async def test_llm_500s_are_retried_then_answered(start_lucy: Start, fake_llm: FakeLLM) -> None:
    lucy = await start_lucy()
    fake_llm.script([error(500), error(503), text("Answered after two failures.")])
    ts = await ask(lucy, "hi")
    assert await answer_of(lucy, ts) == ["Answered after two failures."]
    assert len(fake_llm.requests) == 3


async def test_llm_down_falls_back_to_the_next_model(start_lucy: Start, fake_llm: FakeLLM) -> None:
    lucy = await start_lucy(LLM_FALLBACK_MODELS="openai/backup")
    fake_llm.down("fake", status=500)
    fake_llm.script([text("The backup model answered.")], model="backup")
    ts = await ask(lucy, "hi")
    assert await answer_of(lucy, ts) == ["The backup model answered."]


async def test_llm_down_everywhere_gives_a_clear_sentence_then_recovers(
    start_lucy: Start, fake_llm: FakeLLM,
) -> None:
    lucy = await start_lucy()
    fake_llm.down("fake", status=503)
    ts = await ask(lucy, "hi")
    assert await answer_of(lucy, ts) == [LLMError.user_message]
    fake_llm.up("fake")
    fake_llm.script([text("Back again.")])
    ts = await ask(lucy, "hi again")
    assert await answer_of(lucy, ts) == ["Back again."]


async def test_llm_timeouts_give_a_clear_sentence(start_lucy: Start, fake_llm: FakeLLM) -> None:
    lucy = await start_lucy(LUCY_LLM_TIMEOUT_SECONDS=1)
    fake_llm.responder = lambda r: text("far too late", delay=5)
    ts = await ask(lucy, "hi")
    assert await answer_of(lucy, ts, timeout=60) == [LLMError.user_message]
    assert len(thread(lucy.slack, CHANNEL, ts)) == 1


# --- PostgreSQL ---------------------------------------------------------------------------------


async def _terminate_backends(db_dsn: str) -> int:
    conn = await asyncpg.connect(db_dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    finally:
        await conn.close()


async def test_postgres_connections_dropped_mid_run_are_replaced_without_a_restart(
    start_lucy: Start, fake_llm: FakeLLM, db_dsn: str,
) -> None:
    lucy = await start_lucy()
    fake_llm.script([text("First.")])
    first = await ask(lucy, "one")
    assert await answer_of(lucy, first) == ["First."]

    # While a turn waits for the model, every connection Lucy holds is killed (what a restart does).
    fake_llm.script([text("Second, though the database went away meanwhile.", delay=1.0)])
    second = await ask(lucy, "two")
    await lucy.slack.wait_for(lambda: len(fake_llm.requests) == 2, timeout=30)
    assert await _terminate_backends(db_dsn) >= 1
    assert await answer_of(lucy, second) == ["Second, though the database went away meanwhile."]

    await _terminate_backends(db_dsn)
    fake_llm.script([text("Third.")])
    third = await ask(lucy, "three")
    assert await answer_of(lucy, third) == ["Third."]
    status, _ = await lucy.get("/readyz")
    assert status == 200
    assert len(fake_llm.requests) == 3  # nothing was asked twice


async def test_readyz_fails_while_the_database_does_not_answer(start_lucy: Start, db_dsn: str) -> None:
    lucy = await start_lucy()
    conn = await asyncpg.connect(db_dsn)
    try:
        async with conn.transaction():  # /readyz reads schema_migrations: make it wait
            await conn.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
            status, body = await lucy.get("/readyz")
            assert status == 503 and "database" in body
            assert (await lucy.get("/healthz"))[0] == 200  # alive, just not ready
    finally:
        await conn.close()
    status, _ = await lucy.get("/readyz")
    assert status == 200


# --- Redis --------------------------------------------------------------------------------------


async def _redis_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        proc = await asyncio.create_subprocess_exec("redis-cli", "-p", str(port), "ping",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        if out.strip() == b"PONG":
            return server
        await asyncio.sleep(0.05)
    server.kill()
    raise AssertionError("redis-server did not start")


async def test_redis_gone_falls_back_to_the_in_process_cache_says_so_and_comes_back(
    start_lucy: Start, fake_llm: FakeLLM, fake_composio: FakeComposio, capsys: pytest.CaptureFixture[str],
) -> None:
    import redis.asyncio as redis

    port = free_port()
    server = await _redis_server(port)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        lucy = await start_lucy(REDIS_URL=url, LUCY_RATE_USER_TURNS=100)
        fake_composio.connect(WS, "github")
        fake_llm.responder = lambda r: text("Answered.")
        first = await ask(lucy, "one")
        assert await answer_of(lucy, first) == ["Answered."]

        server.terminate()
        server.wait(10)
        capsys.readouterr()
        second = await ask(lucy, "two", user="U0BOB")
        assert await answer_of(lucy, second) == ["Answered."]
        said = capsys.readouterr().out  # structlog, unconfigured in tests, prints log lines there
        assert "Redis is unreachable; using the in-process cache for now" in said
        assert "Redis is unreachable; rate limits count in this process for now" in said
        status, metrics = await lucy.get("/metrics")
        assert status == 200 and "lucy_cache_degraded 1.0" in metrics

        server = await _redis_server(port)  # Redis is back (empty, like after a restart)
        await asyncio.sleep(5.5)  # Lucy tries Redis again after 5 s
        lucy.slack.add_user("U0P01", "p01", "Person One", "UTC")
        third = await ask(lucy, "three", user="U0P01")
        assert await answer_of(lucy, third) == ["Answered."]
        client = redis.Redis.from_url(url)
        try:
            keys = await client.keys("lucy:*")
        finally:
            await client.aclose()
        assert keys  # the cache and the rate limits are in Redis again
        status, metrics = await lucy.get("/metrics")
        assert "lucy_cache_degraded 0.0" in metrics
    finally:
        server.kill()
        server.wait(10)


# --- what /metrics shows ------------------------------------------------------------------------


async def test_metrics_show_events_turns_tools_cache_tokens_and_approvals(
    start_lucy: Start, fake_composio: FakeComposio, fake_llm: FakeLLM, db_dsn: str,
) -> None:
    lucy = await start_lucy()
    fake_composio.connect(WS, "github")
    fake_composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 42})
    fake_llm.responder = issue_model
    ts = await ask(lucy, "create a github issue in acme/web: Login fails")
    assert await answer_of(lucy, ts) == ["Created issue #42."]
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute(
            "INSERT INTO pending_actions (id, workspace_id, kind, channel, thread_ts, slack_user, tool, expires_at) "
            "VALUES ('ap_1', $1, 'approval', $2, $3, 'U0ALICE', 'GITHUB_DELETE_A_REPOSITORY', "
            "now() + interval '10 minutes')", WS, CHANNEL, ts)
    finally:
        await conn.close()
    status, body = await lucy.get("/metrics")
    assert status == 200
    samples = _samples(body)
    assert samples['lucy_slack_events_total{kind="app_mention",outcome="handled"}'] == 1
    assert samples['lucy_turns_total{outcome="answer"}'] == 1
    assert samples["lucy_turn_seconds_count"] == 1
    assert samples['lucy_tool_executions_total{status="executed"}'] == 1
    assert samples['lucy_cache_requests_total{result="miss"}'] >= 1
    assert samples['lucy_llm_tokens_total{kind="prompt"}'] > 0
    assert "lucy_llm_cost_usd_total" in samples
    assert samples["lucy_approvals_pending"] == 1
    assert samples["lucy_turns_in_flight"] == 0


def _samples(body: str) -> dict[str, float]:
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out



# --- overload -----------------------------------------------------------------------------------


async def test_more_requests_than_may_run_wait_their_turn_and_are_all_answered(
    start_lucy: Start, fake_llm: FakeLLM, fake_slack: FakeSlack,
) -> None:
    lucy = await start_lucy(LUCY_MAX_CONCURRENT_TURNS=1)
    fake_llm.responder = lambda r: text("Answered.", delay=2.0)
    threads = [await ask(lucy, f"question {i}", user=user) for i, user in enumerate(["U0ALICE", "U0BOB", "U0ALICE"])]
    # Everyone sees "is thinking…" at once, though only one answer runs at a time.
    await fake_slack.wait_for(lambda: len(fake_slack.calls("assistant.threads.setStatus")) >= 3, timeout=30)
    waiting = [ts for ts in threads if not thread(fake_slack, CHANNEL, ts)]
    for ts in threads:
        assert await answer_of(lucy, ts) == ["Answered."]
    assert len(waiting) >= 2 and len(fake_llm.requests) == 3
