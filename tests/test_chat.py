"""`lucy chat`: the same agent loop in a terminal, driven line by line (real litellm → fake server)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from lucy.chat import ChatTools, run_chat
from lucy.config import Settings
from tests.fakes.fake_llm import FakeLLM, text, tool_call
from tests.test_agent import CREATE_ISSUE, ScriptedExecutor, StaticApps, StaticToolset


def settings_for(fake: FakeLLM, **extra: str) -> Settings:
    values = {"LLM_MODEL": "openai/fake", "LLM_API_BASE": fake.base_url, "LLM_API_KEY": "sk-chat-test", **extra}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def chat(settings: Settings, lines: list[str], tools: ChatTools | None = None) -> str:
    out = io.StringIO()
    # run_chat owns its event loop (asyncio.run), as under `lucy chat`; the fakes keep serving on this one.
    code = await asyncio.to_thread(run_chat, settings, workspace="T0CHAT", user="U0ME",
                                   stdin=io.StringIO("".join(f"{line}\n" for line in lines)), stdout=out, tools=tools)
    assert code == 0
    return out.getvalue()


async def test_chat_keeps_the_thread_between_lines(fake_llm: FakeLLM) -> None:
    fake_llm.script([text("Nice to meet you, Ada."), text("Your name is Ada.")])
    output = await chat(settings_for(fake_llm), ["my name is Ada", "what is my name?"])

    assert "COMPOSIO_API_KEY is not set" in output
    assert "lucy> Nice to meet you, Ada." in output and "lucy> Your name is Ada." in output
    second = [m.get("content") for m in fake_llm.requests[1].messages]
    assert "<@U0ME>: my name is Ada" in second and "Nice to meet you, Ada." in second


async def test_new_starts_a_fresh_thread(fake_llm: FakeLLM) -> None:
    fake_llm.script([text("Noted."), text("I don't know your name.")])
    await chat(settings_for(fake_llm), ["my name is Ada", "/new", "what is my name?"])
    assert [m["role"] for m in fake_llm.requests[1].messages] == ["system", "user"]


async def test_chat_shows_each_tool_call_and_result(fake_llm: FakeLLM) -> None:
    async def create(args: dict[str, Any]) -> Any:
        return {"number": 7}

    executor = ScriptedExecutor({"GITHUB_CREATE_AN_ISSUE": create})
    tools = ChatTools(toolset=StaticToolset([CREATE_ISSUE]), executor=executor, apps=StaticApps(["github"]))
    fake_llm.script([tool_call("GITHUB_CREATE_AN_ISSUE", {"title": "Bug"}), text("Created issue #7.")])
    output = await chat(settings_for(fake_llm), ["file a bug"], tools)

    assert '  → GITHUB_CREATE_AN_ISSUE {"title": "Bug"}\n' in output
    assert '  ← GITHUB_CREATE_AN_ISSUE ok: {"number": 7}\n' in output
    assert output.index("→ GITHUB_CREATE_AN_ISSUE") < output.index("lucy> Created issue #7.")
    assert executor.executed == [("T0CHAT", "GITHUB_CREATE_AN_ISSUE", {"title": "Bug"})]


async def test_chat_uses_composio_tools_when_configured(fake_llm: FakeLLM, db_dsn: str) -> None:
    from tests.fakes.fake_composio import FakeComposio

    async with FakeComposio() as composio:
        composio.connect("T0CHAT", "github")
        composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 11})
        settings = settings_for(fake_llm, COMPOSIO_API_KEY=composio.api_key, COMPOSIO_BASE_URL=composio.base_url,
                                DATABASE_URL=db_dsn)
        fake_llm.script([tool_call("GITHUB_CREATE_AN_ISSUE", {"owner": "acme", "repo": "app", "title": "Bug"}),
                         text("Created issue #11.")])
        output = await chat(settings, ["file a bug in acme/app"])

    assert "← GITHUB_CREATE_AN_ISSUE ok:" in output and "lucy> Created issue #11." in output
    assert [(e.user_id, e.slug) for e in composio.executes] == [("T0CHAT", "GITHUB_CREATE_AN_ISSUE")]
    assert "GITHUB_CREATE_AN_ISSUE" in fake_llm.requests[0].tool_names


async def test_a_model_outage_is_one_sentence_not_a_traceback(fake_llm: FakeLLM) -> None:
    fake_llm.down("fake", 503)
    output = await chat(settings_for(fake_llm), ["hello?"])
    assert "lucy> My language model isn't answering right now. Please try again in a minute." in output
    assert "Traceback" not in output
