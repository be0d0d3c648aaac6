"""Schema sanitising over the real catalog, and the process-wide schema cache."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from structlog.testing import capture_logs

from lucy.cache import memory_cache, redis_cache
from lucy.errors import IntegrationError
from lucy.integrations.composio_client import ComposioClient, RetryPolicy
from lucy.integrations.schemas import (
    InvalidToolSchema,
    ToolSchemaCache,
    build_toolkit,
    sanitize_tool,
    to_openai_tool,
    tool_name,
)
from tests.fakes.fake_composio import DEFAULT_TOOLS_DIR, FakeComposio, load_catalog

CATALOG = load_catalog(str(DEFAULT_TOOLS_DIR))
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")  # OpenAI, Gemini, Bedrock, Anthropic all accept it
PROPERTY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # Anthropic's rule for argument names
LONG = [t["slug"] for t in CATALOG if len(t["slug"]) > 64]


def _property_names(schema: Any) -> list[str]:
    if isinstance(schema, list):
        return [n for s in schema for n in _property_names(s)]
    if not isinstance(schema, dict):
        return []
    names = list(schema.get("properties", {}) or {})
    for value in schema.values():
        names += _property_names(value) if isinstance(value, dict | list) else []
    return names


def _required_lists(schema: Any) -> list[tuple[list[str], dict[str, Any]]]:
    found: list[tuple[list[str], dict[str, Any]]] = []
    if isinstance(schema, dict):
        if isinstance(schema.get("required"), list):
            found.append((schema["required"], schema.get("properties") or {}))
        for value in schema.values():
            found += _required_lists(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _required_lists(value)
    return found


def test_all_1357_catalog_tools_become_definitions_every_provider_accepts() -> None:
    tools = [sanitize_tool(raw) for raw in CATALOG]  # raises if any tool cannot be repaired

    assert len(tools) == 1357
    names = [t.definition["function"]["name"] for t in tools]
    assert all(NAME.match(n) for n in names)
    assert len(set(names)) == 1357  # shortened names collide with nothing
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)  # what Anthropic enforces
    for tool in tools:
        definition = tool.definition
        assert set(definition) == {"type", "function"}  # no "strict": null
        params = definition["function"]["parameters"]
        assert params["type"] == "object" and isinstance(params["properties"], dict)
        assert meta.is_valid(params), tool.slug
        assert all(PROPERTY.match(p) for p in _property_names(params)), tool.slug
        for required, props in _required_lists(params):
            assert len(required) == len(set(required)) and set(required) <= set(props), tool.slug
        assert 0 < len(definition["function"]["description"]) <= 1024
        json.dumps(definition)


def test_litellm_converts_every_tool_for_anthropic_and_gemini() -> None:
    import litellm

    definitions = [sanitize_tool(raw).definition for raw in CATALOG]
    anthropic = litellm.AnthropicConfig().map_openai_params(
        non_default_params={"tools": definitions}, optional_params={}, model="claude-sonnet-4-5", drop_params=False
    )
    assert len(anthropic["tools"]) == 1357
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    for tool in anthropic["tools"]:
        assert re.match(r"^[a-zA-Z0-9_-]{1,64}$", tool["name"]) and meta.is_valid(tool["input_schema"]), tool["name"]
    gemini = litellm.VertexGeminiConfig().map_openai_params(
        non_default_params={"tools": definitions}, optional_params={}, model="gemini-2.5-flash", drop_params=False
    )
    declarations = [d for t in gemini["tools"] for d in t.get("function_declarations", [])]
    assert len(declarations) == 1357 and all(NAME.match(d["name"]) for d in declarations)


def test_long_slugs_get_stable_short_names_that_map_back() -> None:
    assert len(LONG) == 4
    by_slug = {raw["slug"]: raw for raw in CATALOG}
    for slug in LONG:
        tool = sanitize_tool(by_slug[slug])
        assert tool.slug == slug and len(tool.name) <= 64 and tool.name == tool_name(slug)
        assert tool.name.startswith(slug[:50])  # still readable for the model
    kit = build_toolkit("github", [r for r in CATALOG if r["toolkit"]["slug"] == "github"])
    names = {t.name: t.slug for t in kit.tools}
    assert all(names[tool_name(s)] == s for s in LONG)


def test_duplicate_required_entries_are_removed() -> None:
    raw = next(r for r in CATALOG if r["slug"] == "GITHUB_UPDATE_A_REPOSITORY_VARIABLE")
    assert len(raw["input_parameters"]["required"]) > len(set(raw["input_parameters"]["required"]))
    params = sanitize_tool(raw).parameters
    assert params["required"] == list(dict.fromkeys(raw["input_parameters"]["required"]))


def test_long_argument_names_are_renamed_and_mapped_back() -> None:
    raw = next(r for r in CATALOG if r["slug"] == "GITHUB_UPDATE_BRANCH_PROTECTION")
    tool = sanitize_tool(raw)
    original = "required__pull__request__reviews__bypass__pull__request__allowances__users"
    short = next(new for new, old in tool.arg_names.items() if old == original)
    assert len(short) <= 64 and short in tool.parameters["properties"]
    back = tool.to_composio_arguments({short: ["octocat"], "branch": "main"})
    assert back == {original: ["octocat"], "branch": "main"}


def _raw(slug: str, params: Any, **extra: Any) -> dict[str, Any]:
    return {"slug": slug, "description": "Does a thing.", "toolkit": {"slug": "demo"}, "input_parameters": params,
            **extra}


def test_broken_schemas_are_repaired() -> None:
    params = {
        "type": "object",
        "properties": {
            "user": {"$ref": "#/$defs/User"},
            "old_style": {"type": "string", "required": True},
            "color": {"type": "string", "enum": []},
            "when": {"type": "datetime", "examples": "tomorrow"},
        },
        "required": ["user", "user", "ghost"],
        "$defs": {"User": {"type": "object", "properties": {"login": {"type": "string"}}}},
    }
    tool = sanitize_tool(_raw("DEMO_TOOL", params, description="x" * 3000))

    fixed = tool.parameters
    assert fixed["properties"]["user"] == {"type": "object", "properties": {"login": {"type": "string"}}}
    assert fixed["required"] == ["user", "old_style"]
    assert "enum" not in fixed["properties"]["color"]
    assert fixed["properties"]["when"] == {"examples": ["tomorrow"]}
    assert "$defs" not in fixed
    assert len(tool.definition["function"]["description"]) <= 1024
    Draft202012Validator.check_schema(fixed)
    assert to_openai_tool(_raw("DEMO_EMPTY", None))["function"]["parameters"] == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ("not a schema", "input_parameters is not an object"),
        ({"type": "array", "items": {}}, "not object"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"$ref": "#/$defs/A"}}},
         "cyclic"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "not local"),
        ({"type": "object", "properties": {"a": {"type": "string", "minLength": "three"}}}, "not valid JSON Schema"),
    ],
)
def test_unrepairable_schemas_are_dropped_with_a_log_line(params: Any, reason: str) -> None:
    with pytest.raises(InvalidToolSchema, match=reason):
        sanitize_tool(_raw("DEMO_BAD", params))
    assert to_openai_tool(_raw("DEMO_BAD", params)) is None
    with capture_logs() as logs:
        kit = build_toolkit("demo", [_raw("DEMO_BAD", params), _raw("DEMO_GOOD", {"type": "object", "properties": {}})])
    assert [t.slug for t in kit.tools] == ["DEMO_GOOD"] and kit.dropped == ("DEMO_BAD",)
    assert any(e["event"] == "tool_schema_dropped" and reason in e["reason"] for e in logs)


def _client(fake: FakeComposio) -> ComposioClient:
    return ComposioClient(api_key=fake.api_key, base_url=fake.base_url,
                          retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01))


async def test_concurrent_first_loads_fetch_a_toolkit_once(fake_composio: FakeComposio) -> None:
    client = _client(fake_composio)
    schemas = ToolSchemaCache(client, memory_cache())
    try:
        results = await asyncio.gather(*(schemas.toolkit("github") for _ in range(20)))
    finally:
        await client.aclose()
    assert all(r is results[0] for r in results)
    assert len(results[0].tools) == 831
    assert fake_composio.count("GET", "/tools") == 4  # one fetch: its four pages


async def test_schemas_are_shared_through_redis(fake_composio: FakeComposio, redis_url: str, cache_prefix: str) -> None:
    client = _client(fake_composio)
    first, second = redis_cache(redis_url, cache_prefix), redis_cache(redis_url, cache_prefix)
    try:
        await ToolSchemaCache(client, first).toolkit("gmail")
        other_instance = ToolSchemaCache(client, second)
        gmail = await other_instance.toolkit("gmail")
        await first.delete("tool-schemas", "gmail", "latest")
    finally:
        await client.aclose()
        await first.close()
        await second.close()
    assert len(gmail.tools) == 27
    assert fake_composio.count("GET", "/tools") == 1  # the second instance asked Redis, not Composio


async def test_expired_schemas_keep_serving_while_composio_is_down(fake_composio: FakeComposio) -> None:
    now = [0.0]
    client = _client(fake_composio)
    schemas = ToolSchemaCache(client, None, ttl=60, clock=lambda: now[0])
    try:
        loaded = await schemas.toolkit("notion")
        now[0] = 120.0
        fake_composio.down = True
        with capture_logs() as logs:
            again = await schemas.toolkit("notion")
        with pytest.raises(IntegrationError):
            await schemas.toolkit("gmail")  # never loaded: nothing to fall back on
        fake_composio.down = False
        assert await schemas.resolve("GMAIL_SEND_EMAIL", ["gmail"]) is not None
        assert await schemas.resolve("GITHUB_NOT_A_REAL_TOOL", ["github"]) is None
    finally:
        await client.aclose()
    assert again is loaded
    assert any(e["event"] == "tool_schemas_stale" for e in logs)


async def test_resolve_finds_a_tool_by_its_short_name_or_asks_composio(fake_composio: FakeComposio) -> None:
    client = _client(fake_composio)
    schemas = ToolSchemaCache(client, None)
    long_slug = LONG[0]
    try:
        by_prefix = await schemas.resolve(tool_name(long_slug), ["gmail", "github"])
        by_lookup = await schemas.resolve("NOTION_FETCH_DATA")  # no hint: Composio says it is notion's
    finally:
        await client.aclose()
    assert by_prefix is not None and by_prefix.slug == long_slug
    assert by_lookup is not None and by_lookup.toolkit == "notion"
    assert fake_composio.count("GET", "/tools/NOTION_FETCH_DATA") == 1
