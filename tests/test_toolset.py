"""Which tool definitions a workspace's model gets for a turn, and mid-turn search."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lucy.cache import memory_cache
from lucy.core.types import CONNECT_APP, SEARCH_TOOLS
from lucy.integrations import phrasebook
from lucy.integrations.composio_client import ComposioClient
from lucy.integrations.registry import IntegrationRegistry
from lucy.integrations.schemas import ToolSchemaCache, tool_name
from lucy.integrations.selection import ToolSelector
from lucy.integrations.toolset import MAX_TOOLS, WorkspaceToolset, capped, get_workspace_tools
from tests.fakes.fake_composio import FakeComposio

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@pytest.fixture
async def parts(fake_composio: FakeComposio, pool: Any) -> AsyncIterator[tuple[IntegrationRegistry, ToolSchemaCache]]:
    client = ComposioClient(api_key=fake_composio.api_key, base_url=fake_composio.base_url)
    yield IntegrationRegistry(client, pool, memory_cache()), ToolSchemaCache(client, memory_cache())
    await client.aclose()


def names(tools: list[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tools]


async def test_only_the_workspaces_connected_toolkits_and_never_more_than_128(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio
) -> None:
    registry, schemas = parts
    fake_composio.connect("T1", "github")
    fake_composio.connect("T1", "gmail")
    fake_composio.connect("T10", "notion")
    toolset = WorkspaceToolset(registry, schemas, connectable=fake_composio.toolkits)

    first = await toolset.tools_for_turn("T1", "open an issue about the login bug")
    again = await toolset.tools_for_turn("T1", "something else entirely")

    assert len(first) == MAX_TOOLS and names(first) == names(again)  # capped, deterministically
    app_tools = [n for n in names(first) if n not in (SEARCH_TOOLS, CONNECT_APP)]
    assert {n.split("_")[0] for n in app_tools} == {"GITHUB", "GMAIL"}  # both apps get a share; no NOTION
    assert len([n for n in app_tools if n.startswith("GMAIL_")]) == 27  # all of Gmail fits beside GitHub
    assert names(first)[-2:] == [SEARCH_TOOLS, CONNECT_APP]
    connect = first[-1]["function"]["parameters"]["properties"]["app"]
    assert "github" not in connect["enum"] and "notion" in connect["enum"]
    assert all(NAME.match(n) for n in names(first))

    other = await toolset.tools_for_turn("T10", "open an issue")
    assert {n.split("_")[0] for n in names(other) if n not in (SEARCH_TOOLS, CONNECT_APP)} == {"NOTION"}


async def test_a_workspace_with_nothing_connected_gets_only_the_meta_tools(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio
) -> None:
    registry, schemas = parts
    toolset = WorkspaceToolset(registry, schemas, connectable=fake_composio.toolkits)
    assert names(await toolset.tools_for_turn("T1", "hi")) == [SEARCH_TOOLS, CONNECT_APP]
    assert await get_workspace_tools("T1", registry, schemas) == []
    assert fake_composio.count("GET", "/tools") == 0  # no schema fetched for nothing


async def test_get_workspace_tools_caps_and_maps_long_names(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio
) -> None:
    registry, schemas = parts
    fake_composio.connect("T1", "github")
    tools = await get_workspace_tools("T1", registry, schemas, limit=1000)
    assert len(tools) == MAX_TOOLS
    everything = (await schemas.toolkit("github")).tools
    assert len(capped([await schemas.toolkit("github")], 10_000)) == len(everything) == 831
    long_slug = "GITHUB_REMOVE_INTERACTION_RESTRICTIONS_FROM_YOUR_PUBLIC_REPOSITORIES"
    assert schemas.find(tool_name(long_slug)).slug == long_slug


async def test_with_the_selector_the_turn_gets_the_best_few_within_budget(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio
) -> None:
    registry, schemas = parts
    fake_composio.connect("T1", "github")
    fake_composio.connect("T1", "notion")
    selector = ToolSelector(k=10, token_budget=6000)
    toolset = WorkspaceToolset(registry, schemas, selector=selector, connectable=fake_composio.toolkits)

    tools = await toolset.tools_for_turn("T1", "close acme/web#377, it's a dupe of #350")

    app = [n for n in names(tools) if n not in (SEARCH_TOOLS, CONNECT_APP)]
    assert 0 < len(app) <= 10 and "GITHUB_UPDATE_AN_ISSUE" in app
    assert all(n.startswith(("GITHUB_", "NOTION_")) and NAME.match(n) for n in app)
    assert selector.has_toolkit("github") and not selector.has_toolkit("gmail")
    from lucy.integrations.selection import estimate_tokens

    assert sum(estimate_tokens(t) for t in tools) <= 6000


async def test_search_finds_more_tools_of_connected_apps_only(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio
) -> None:
    registry, schemas = parts
    fake_composio.connect("T1", "github")
    plain = WorkspaceToolset(registry, schemas)
    ranked = WorkspaceToolset(registry, schemas, selector=ToolSelector())

    for toolset in (plain, ranked):
        found = names(await toolset.search("T1", "create an issue"))
        assert "GITHUB_CREATE_AN_ISSUE" in found and len(found) <= 8
        assert all(n.startswith("GITHUB_") for n in found)
        without = names(await toolset.search("T1", "create an issue", frozenset({"GITHUB_CREATE_AN_ISSUE"})))
        assert "GITHUB_CREATE_AN_ISSUE" not in without
        assert await toolset.search("T10", "create an issue") == []  # T10 has connected nothing


async def test_tools_used_earlier_in_the_thread_stay_available(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio
) -> None:
    registry, schemas = parts
    fake_composio.connect("T1", "github")
    fake_composio.connect("T1", "notion")
    toolset = WorkspaceToolset(registry, schemas, selector=ToolSelector(k=5), connectable=fake_composio.toolkits)
    # A follow-up with no tool words of its own: without the pin the label tool would be gone.
    follow_up = "thanks! do the same for #378 please"
    plain = names(await toolset.tools_for_turn("T1", follow_up))
    pinned = names(await toolset.tools_for_turn("T1", follow_up, pinned=["GITHUB_ADD_LABELS_TO_AN_ISSUE"]))
    assert "GITHUB_ADD_LABELS_TO_AN_ISSUE" not in plain
    assert pinned[0] == "GITHUB_ADD_LABELS_TO_AN_ISSUE"
    assert len([n for n in pinned if n not in (SEARCH_TOOLS, CONNECT_APP)]) <= 5


# --- a phrasebook for an app Lucy ships none for, written in the background -------------------

TIDY = "sweep away everything I've ticked off"  # none of these words is in Google Tasks' definitions


def _asks_writer(request: Any) -> Any:
    """The model: four asks a tool; for clearing completed tasks, the words people use for it."""
    from tests.fakes.fake_llm import text

    briefs = [json.loads(line) for line in str(request.messages[-1]["content"]).splitlines()]
    asks = {b["slug"]: [f"{b['name']} please", f"{b['name']} now", f"can you {b['name']}?", f"{b['name']} for work"]
            for b in briefs}
    if "GOOGLETASKS_CLEAR_TASKS" in asks:
        asks["GOOGLETASKS_CLEAR_TASKS"][0] = TIDY
    return text(json.dumps(asks))


@pytest.fixture
async def llm(fake_llm: Any) -> AsyncIterator[Any]:
    from lucy.config import Settings
    from lucy.core.llm import LiteLLM, LLMConfig

    settings = Settings(_env_file=None, LLM_MODEL="openai/fake", LLM_API_BASE=fake_llm.base_url,  # type: ignore[call-arg]
                        LLM_API_KEY="sk-test")
    model = LiteLLM(dataclasses.replace(LLMConfig.from_settings(settings), max_retries=0))
    yield model
    await model.aclose()


def _writer(llm: Any, directory: Path) -> Any:
    from lucy.integrations.phrasebook_writer import PhrasebookWriter

    return PhrasebookWriter(llm, directory, "openai/fake")


async def _first_app_tool(toolset: WorkspaceToolset, workspace: str) -> str:
    return next(n for n in names(await toolset.tools_for_turn(workspace, TIDY)) if n not in (SEARCH_TOOLS, CONNECT_APP))


async def test_an_app_without_a_phrasebook_gets_one_written_once_and_ranks_with_it(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio, fake_llm: Any, llm: Any,
    tmp_path: Path,
) -> None:
    registry, schemas = parts
    fake_llm.responder = _asks_writer
    fake_composio.connect("T1", "googletasks")
    fake_composio.connect("T2", "googletasks")
    toolset = WorkspaceToolset(registry, schemas, selector=ToolSelector(k=5), phrasebook_writer=_writer(
        llm, tmp_path / "phrasebooks"))

    before = await _first_app_tool(toolset, "T1")  # ranked on the definitions while the model writes
    for _ in range(200):
        if await _first_app_tool(toolset, "T1") == "GOOGLETASKS_CLEAR_TASKS":
            break
        await asyncio.sleep(0.05)

    assert before != "GOOGLETASKS_CLEAR_TASKS"
    assert await _first_app_tool(toolset, "T1") == "GOOGLETASKS_CLEAR_TASKS"
    assert await _first_app_tool(toolset, "T2") == "GOOGLETASKS_CLEAR_TASKS"  # another workspace, same index
    written = phrasebook.load([tmp_path / "phrasebooks"])
    assert len(written) == 14 and written["GOOGLETASKS_CLEAR_TASKS"][0] == TIDY  # kept for the next start
    assert len(fake_llm.requests) == 1  # 14 tools, one batch, written once for both workspaces
    await toolset.aclose()


async def test_a_failing_model_leaves_selection_on_the_definitions(
    parts: tuple[IntegrationRegistry, ToolSchemaCache], fake_composio: FakeComposio, fake_llm: Any, llm: Any,
    tmp_path: Path,
) -> None:
    registry, schemas = parts
    fake_llm.down("fake", 503)
    fake_composio.connect("T1", "googletasks")
    toolset = WorkspaceToolset(registry, schemas, selector=ToolSelector(k=5), phrasebook_writer=_writer(
        llm, tmp_path / "phrasebooks"))

    first = names(await toolset.tools_for_turn("T1", "clear my completed tasks"))
    for _ in range(100):  # until the one attempt has been made
        if fake_llm.requests:
            break
        await asyncio.sleep(0.05)
    await toolset.aclose()
    again = names(await toolset.tools_for_turn("T1", "clear my completed tasks"))

    assert first == again and "GOOGLETASKS_CLEAR_TASKS" in first  # the turn never depended on it
    assert len(fake_llm.requests) == 1 and phrasebook.load([tmp_path / "phrasebooks"]) == {}
