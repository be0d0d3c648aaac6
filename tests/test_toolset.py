"""Which tool definitions a workspace's model gets for a turn, and mid-turn search."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lucy.cache import memory_cache
from lucy.core.types import CONNECT_APP, SEARCH_TOOLS
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
