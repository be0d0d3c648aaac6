"""The LLM adapter against the fake OpenAI-compatible server, both ways it can talk to it.

Every behaviour test runs twice: ``direct`` (Lucy's own OpenAI wire client, the default for
OpenAI-compatible models) and ``litellm`` (``LUCY_LLM_CLIENT=litellm``, the real litellm, which
also carries every other provider)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from lucy.core.llm import LiteLLM, LLMConfig
from lucy.errors import LLMContextError, LLMError
from tests.fakes.fake_llm import FakeLLM, RecordedRequest, Reply, call, cut, error, garbage, text, tool_calls

ROOT = Path(__file__).resolve().parents[1]
USER = [{"role": "user", "content": "hello"}]


class Sleeps:
    """Records backoff delays instead of waiting them out (tests never wait on wall-clock time)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


Make = Callable[..., LiteLLM]


@pytest.fixture(params=["auto", "litellm"], ids=["direct", "litellm"])
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    made: list[LiteLLM] = []

    def make(fake: FakeLLM, model: str = "openai/fake", *, fallbacks: tuple[str, ...] = (),
             sleeps: Sleeps | None = None, **kw: object) -> LiteLLM:
        config = LLMConfig(model=model, fallbacks=fallbacks, api_base=fake.base_url, api_key="sk-test-key",
                           client=request.param, **kw)  # type: ignore[arg-type]
        made.append(LiteLLM(config, sleep=sleeps or Sleeps(), jitter=lambda: 1.0))
        assert made[-1].direct(model) == (request.param == "auto")
        return made[-1]

    yield make
    for llm in made:
        await llm.aclose()


async def test_text_answer_with_usage_and_cost(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(text("Hi there!", usage=(1000, 100)))
    reply = await adapter(fake_llm, "openai/gpt-4o-mini").complete(USER, [])
    assert reply.text == "Hi there!" and reply.tool_calls == ()
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (1000, 100)
    # gpt-4o-mini from the bundled (offline) price map: $0.15 / $0.60 per million tokens.
    assert reply.usage.cost_usd == pytest.approx(1000 * 0.15e-6 + 100 * 0.6e-6)
    sent = fake_llm.requests[0]
    assert sent.messages == USER and sent.model == "gpt-4o-mini"
    assert sent.headers["Authorization"] == "Bearer sk-test-key"
    assert sent.body["max_tokens"] == 4096 and "tools" not in sent.body


async def test_unknown_local_model_costs_nothing_and_uses_a_default_window(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(text("ok"))
    llm = adapter(fake_llm, "openai/my-local-model")
    reply = await llm.complete(USER, [])
    assert reply.usage.cost_usd == 0.0 and llm.context_tokens == 32_768


async def test_tool_calls_come_back_with_raw_arguments(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(tool_calls(call("A", {"q": 1}, id="call_a"), call("B", '{"broken"', id="call_b")))
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in "AB"]
    reply = await adapter(fake_llm).complete(USER, tools)
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_a", "A", '{"q": 1}'), ("call_b", "B", '{"broken"')]
    assert fake_llm.requests[0].tool_names == ["A", "B"] and fake_llm.requests[0].tool_choice == "auto"


async def test_429_then_success_retries_once_with_backoff(fake_llm: FakeLLM, adapter: Make) -> None:
    sleeps = Sleeps()
    fake_llm.script([error(429), text("made it")])
    reply = await adapter(fake_llm, sleeps=sleeps, backoff_seconds=0.5).complete(USER, [])
    assert reply.text == "made it"
    assert len(fake_llm.requests) == 2  # exactly one retry: the OpenAI client's own retries are off
    assert sleeps.delays == [0.5]


async def test_retry_after_header_is_honoured(fake_llm: FakeLLM, adapter: Make) -> None:
    sleeps = Sleeps()
    fake_llm.script([error(429, retry_after=3), error(503), text("ok")])
    await adapter(fake_llm, sleeps=sleeps, backoff_seconds=0.5).complete(USER, [])
    assert sleeps.delays == [3.0, 1.0]  # Retry-After, then exponential backoff (0.5 · 2¹)


async def test_a_client_error_is_not_retried(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(error(401, "invalid api key"))
    with pytest.raises(LLMError) as raised:
        await adapter(fake_llm).complete(USER, [])
    assert len(fake_llm.requests) == 1
    assert raised.value.user_message == "My language model isn't answering right now. Please try again in a minute."


async def test_primary_down_the_fallback_answers(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.down("primary", status=500)
    fake_llm.script(text("from the backup"), model="backup")
    llm = adapter(fake_llm, "openai/primary", fallbacks=("openai/backup",), max_retries=2)
    reply = await llm.complete(USER, [])
    assert reply.text == "from the backup" and reply.usage.model == "openai/backup"
    assert [r.model for r in fake_llm.requests] == ["primary"] * 3 + ["backup"]


async def test_every_model_down_raises_one_clear_sentence(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.down("primary", 503)
    fake_llm.down("backup", 500)
    llm = adapter(fake_llm, "openai/primary", fallbacks=("openai/backup",), max_retries=1)
    with pytest.raises(LLMError) as raised:
        await llm.complete(USER, [])
    assert "primary" in str(raised.value) and "backup" in str(raised.value)
    assert raised.value.user_message.endswith("Please try again in a minute.")
    assert len(fake_llm.requests) == 4


async def test_a_slow_model_times_out_and_the_fallback_answers(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script([text("warm-up"), text("too late", delay=30)], model="slow")
    fake_llm.script(text("quick"), model="quick")
    llm = adapter(fake_llm, "openai/slow", fallbacks=("openai/quick",), timeout_seconds=2)
    await llm.complete(USER, [])  # the first call of a process sets litellm up; keep that out of the deadline
    reply = await llm.complete(USER, [])
    assert reply.text == "quick"
    assert len(fake_llm.requests_for("slow")) == 2  # the timeout went straight to the next model


async def test_context_overflow_is_its_own_error(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(error(400, "This model's maximum context length is 8192 tokens. However, you sent 9000."))
    with pytest.raises(LLMContextError):
        await adapter(fake_llm, fallbacks=("openai/other",)).complete(USER, [])
    assert len(fake_llm.requests) == 1


async def test_streaming_sends_text_deltas_and_rebuilds_the_reply(fake_llm: FakeLLM, adapter: Make) -> None:
    deltas: list[str] = []

    async def on_text(piece: str) -> None:
        deltas.append(piece)

    fake_llm.script(text("Streaming works, piece by piece.", usage=(50, 9)))
    reply = await adapter(fake_llm).complete(USER, [], on_text=on_text)
    assert fake_llm.requests[0].stream
    assert len(deltas) > 1 and "".join(deltas) == "Streaming works, piece by piece."
    assert reply.text == "Streaming works, piece by piece." and reply.streamed
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (50, 9)


async def test_streamed_parallel_tool_calls_are_rebuilt_exactly(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(tool_calls(call("A", {"city": "Oslo", "days": 3}), call("B", {"x": [1, 2]}), chunk_size=3))
    reply = await adapter(fake_llm, "openai/gpt-4o-mini").complete(USER, [], on_text=_ignore)
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("A", {"city": "Oslo", "days": 3}), ("B", {"x": [1, 2]})]
    assert len({c.id for c in reply.tool_calls}) == 2
    assert reply.usage.cost_usd > 0  # priced even though a rebuilt stream has no response_cost


async def test_tool_choice_none_is_sent(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(text("answer"))
    tools = [{"type": "function", "function": {"name": "A", "parameters": {"type": "object"}}}]
    await adapter(fake_llm).complete(USER, tools, tool_choice="none")
    assert fake_llm.requests[0].tool_choice == "none"


async def test_missing_tool_call_ids_are_made_up(fake_llm: FakeLLM, adapter: Make) -> None:
    fake_llm.script(tool_calls(call("A", {}, id=""), call("A", {}, id="")))
    reply = await adapter(fake_llm).complete(USER, [])
    ids = [c.id for c in reply.tool_calls]
    assert all(ids) and len(set(ids)) == 2


async def test_fallback_on_another_endpoint_does_not_get_the_local_key(fake_llm: FakeLLM, adapter: Make) -> None:
    llm = adapter(fake_llm, "openai/local", fallbacks=("openai/second", "anthropic/claude-sonnet-4-5"))
    same = llm._kwargs("openai/second", USER, [], "auto")
    other = llm._kwargs("anthropic/claude-sonnet-4-5", USER, [], "auto")
    assert same["api_base"] == fake_llm.base_url and same["api_key"] == "sk-test-key"
    assert "api_base" not in other and "api_key" not in other


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "whole"])
async def test_a_garbage_answer_is_retried_then_the_fallback_answers(
    fake_llm: FakeLLM, adapter: Make, streamed: bool
) -> None:
    # A 200 whose body is not a reply is a failed call on both clients, not an empty answer.
    fake_llm.script([garbage(), garbage(b"data: {not json\n\n")], model="flaky")
    fake_llm.script(text("from the backup"), model="backup")
    llm = adapter(fake_llm, "openai/flaky", fallbacks=("openai/backup",), max_retries=1)
    reply = await llm.complete(USER, [], on_text=_ignore if streamed else None)
    assert reply.text == "from the backup"
    assert [r.model for r in fake_llm.requests] == ["flaky", "flaky", "backup"]


async def test_a_stream_cut_midway_is_retried_and_the_reply_is_whole(fake_llm: FakeLLM, adapter: Make) -> None:
    deltas: list[str] = []

    async def on_text(piece: str) -> None:
        deltas.append(piece)

    fake_llm.script([cut("The first try breaks off", after=3), text("The second try is whole.")])
    reply = await adapter(fake_llm).complete(USER, [], on_text=on_text)
    assert reply.text == "The second try is whole." and len(fake_llm.requests) == 2
    assert "".join(deltas).endswith("The second try is whole.")  # the sink may see a broken beginning first


async def test_a_tool_call_bigger_than_a_line_limit_arrives_whole(fake_llm: FakeLLM, adapter: Make) -> None:
    body = "x" * 200_000  # one SSE event of ~200 KB: past aiohttp's 64 KiB line limit
    fake_llm.script(tool_calls(call("GMAIL_SEND_EMAIL", {"body": body}), chunk_size=300_000))
    reply = await adapter(fake_llm).complete(USER, [], on_text=_ignore)
    assert json.loads(reply.tool_calls[0].arguments) == {"body": body}


async def test_openai_compatible_models_go_direct_and_others_through_litellm(fake_llm: FakeLLM) -> None:
    llm = LiteLLM(LLMConfig(model="openai/local", fallbacks=("gpt-4o-mini", "anthropic/claude-sonnet-4-5"),
                            api_base=fake_llm.base_url, api_key="sk-local"))
    try:
        assert llm.direct("openai/local") and llm.direct("gpt-4o-mini")
        assert not llm.direct("anthropic/claude-sonnet-4-5")
        off = LiteLLM(LLMConfig(model="openai/local", api_base=fake_llm.base_url, client="litellm"))
        assert not off.direct("openai/local")
    finally:
        await llm.aclose()


async def test_a_fallback_on_openai_gets_openais_key_not_the_local_one(
        fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeLLM() as openai_side:
        monkeypatch.setenv("OPENAI_BASE_URL", openai_side.base_url)  # stands in for api.openai.com
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-key")
        fake_llm.down("local", 503)
        openai_side.script(text("from OpenAI"))
        llm = LiteLLM(LLMConfig(model="openai/local", fallbacks=("gpt-4o-mini",), api_base=fake_llm.base_url,
                                api_key="sk-local-key", max_retries=0), sleep=Sleeps())
        try:
            reply = await llm.complete(USER, [])
        finally:
            await llm.aclose()
        assert reply.text == "from OpenAI" and llm.direct("gpt-4o-mini")
        [sent] = openai_side.requests
        assert sent.headers["Authorization"] == "Bearer sk-openai-key" and sent.model == "gpt-4o-mini"
        assert all(r.headers["Authorization"] == "Bearer sk-local-key" for r in fake_llm.requests)


async def test_more_streams_at_once_than_a_default_connection_pool_holds(fake_llm: FakeLLM) -> None:
    # Each turn keeps its connection for as long as the model takes; 150 turns waiting on one slow
    # model need 150 connections (aiohttp's default pool has 100: the rest waited for their deadline).
    import asyncio

    everyone = asyncio.Event()
    arrived = 0

    async def hold(request: RecordedRequest) -> Reply:
        nonlocal arrived
        arrived += 1
        if arrived >= 150:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 20)
        return text("ok")

    fake_llm.async_responder = hold
    llm = LiteLLM(LLMConfig(model="openai/fake", api_base=fake_llm.base_url, max_retries=0, timeout_seconds=30),
                  sleep=Sleeps())
    try:
        replies = await asyncio.gather(*(llm.complete(USER, [], on_text=_ignore) for _ in range(150)))
    finally:
        await llm.aclose()
    assert [r.text for r in replies] == ["ok"] * 150


def test_openai_itself_gets_max_completion_tokens_and_local_servers_max_tokens() -> None:
    from lucy.core.openai_wire import OpenAIWire

    # OpenAI's reasoning models refuse max_tokens; vLLM, Ollama and llama.cpp all know it.
    assert OpenAIWire("https://api.openai.com/v1/", None, timeout_seconds=5).max_tokens_field == "max_completion_tokens"
    assert OpenAIWire("http://127.0.0.1:11434/v1", None, timeout_seconds=5).max_tokens_field == "max_tokens"


def test_importing_lucy_does_not_import_litellm() -> None:
    code = ("import sys, lucy.core.agent, lucy.core.llm, lucy.core.memory, lucy.chat; "
            "sys.exit(1 if 'litellm' in sys.modules or 'openai' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_loading_litellm_makes_no_network_calls() -> None:
    code = """
import socket, sys
calls = []
def hook(event, args):
    if event in ("socket.getaddrinfo", "socket.connect"):
        calls.append((event, str(args)[:80]))
sys.addaudithook(hook)
from lucy.core.llm import LiteLLM, LLMConfig
LiteLLM(LLMConfig(model="anthropic/claude-sonnet-4-5", fallbacks=("gpt-4o-mini",)))
print(calls)
sys.exit(1 if calls else 0)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


async def _ignore(_text: str) -> None:
    return None
