"""The fake Composio server answers as Composio's official OpenAPI spec says, so it cannot drift
from the real API: every response body below (both /api/v3 and /api/v3.1) is validated against
the spec's schema for that route and status, and the requests Lucy's client sends are validated
against the spec's request bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft4Validator

from lucy.integrations.composio_client import ComposioClient
from tests.fakes.fake_composio import DEFAULT_TOOLS_DIR, FakeComposio, load_catalog

SPEC_PATH = Path(DEFAULT_TOOLS_DIR).parent / "openapi.json"


def _to_json_schema(node: Any, components: dict[str, Any], depth: int = 0) -> Any:
    """OpenAPI 3.0 schema → JSON Schema: inline component $refs, make ``nullable`` admit null."""
    if isinstance(node, list):
        return [_to_json_schema(n, components, depth) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        assert depth < 20, node["$ref"]
        name = node["$ref"].rsplit("/", 1)[1]
        return _to_json_schema(components[name], components, depth + 1)
    out = {k: _to_json_schema(v, components, depth) for k, v in node.items() if k not in ("example", "examples")}
    if out.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list):
            out["enum"] = [*out["enum"], None]
    return out


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def response_schema(method: str, path: str, status: int) -> dict[str, Any]:
    op = spec()["paths"][f"/api/v3{path}"][method.lower()]
    assert str(status) in op["responses"], f"{method} {path} answered {status}, which the spec does not declare"
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    return _to_json_schema(schema, spec()["components"]["schemas"])


def request_schema(method: str, path: str) -> dict[str, Any]:
    op = spec()["paths"][f"/api/v3{path}"][method.lower()]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    return _to_json_schema(schema, spec()["components"]["schemas"])


def assert_valid(schema: dict[str, Any], body: Any, what: str) -> None:
    errors = sorted(Draft4Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{what}: " + "; ".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])


@pytest.fixture
async def http(fake_composio: FakeComposio) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"x-api-key": fake_composio.api_key}) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, fake: FakeComposio, version: str, method: str, path: str, template: str,
    *, params: dict[str, str] | None = None, body: Any = None, expect: int = 200,
) -> Any:
    async with http.request(method, f"{fake.base_url}/api/{version}{path}", params=params, json=body) as resp:
        payload = await resp.json()
        assert resp.status == expect, payload
    assert_valid(response_schema(method, template, resp.status), payload, f"{method} {version}{path} {resp.status}")
    return payload


@pytest.mark.parametrize("version", ["v3", "v3.1"])
async def test_every_route_answers_as_the_spec_says(
    http: aiohttp.ClientSession, fake_composio: FakeComposio, version: str
) -> None:
    fake = fake_composio
    page = await call(http, fake, version, "GET", "/tools", "/tools",
                      params={"toolkit_slug": "github", "limit": "1000"})
    assert page["next_cursor"] and len(page["items"]) == fake.max_page_size
    await call(http, fake, version, "GET", "/tools", "/tools",
               params={"toolkit_slug": "github", "limit": "1000", "cursor": page["next_cursor"]})
    found = await call(http, fake, version, "GET", "/tools", "/tools",
                       params={"search": "issue", "toolkit_slug": "github"})
    assert found["items"] and len(found["items"]) <= 20  # the API's default page
    await call(http, fake, version, "GET", "/tools", "/tools",
               params={"tool_slugs": "GMAIL_SEND_EMAIL,NOTION_FETCH_DATA"})
    await call(http, fake, version, "GET", "/tools/GMAIL_SEND_EMAIL", "/tools/{tool_slug}")
    await call(http, fake, version, "GET", "/tools/NOPE_NOPE", "/tools/{tool_slug}", expect=404)

    ca = fake.connect("T1", "github")
    await call(http, fake, version, "POST", "/tools/execute/GITHUB_GET_THE_AUTHENTICATED_USER",
               "/tools/execute/{tool_slug}", body={"user_id": "T1", "arguments": {}, "version": "latest"})
    missing = await call(http, fake, version, "POST", "/tools/execute/GITHUB_CREATE_AN_ISSUE",
                         "/tools/execute/{tool_slug}", body={"user_id": "T1", "arguments": {}})
    assert missing["successful"] is False and "owner" in missing["error"]
    none = await call(http, fake, version, "POST", "/tools/execute/GMAIL_FETCH_EMAILS", "/tools/execute/{tool_slug}",
                      body={"user_id": "T1", "arguments": {}}, expect=400)
    assert none["error"]["code"] == 1803

    listed = await call(http, fake, version, "GET", "/connected_accounts", "/connected_accounts",
                        params={"user_ids": "T1", "statuses": "ACTIVE"})
    assert [i["id"] for i in listed["items"]] == [ca]
    await call(http, fake, version, "GET", f"/connected_accounts/{ca}", "/connected_accounts/{nanoid}")
    await call(http, fake, version, "GET", "/connected_accounts/ca_missing", "/connected_accounts/{nanoid}", expect=404)

    created = await call(http, fake, version, "POST", "/auth_configs", "/auth_configs",
                         body={"toolkit": {"slug": "gmail"}, "auth_config": {"type": "use_composio_managed_auth"}},
                         expect=201)
    await call(http, fake, version, "GET", "/auth_configs", "/auth_configs", params={"toolkit_slug": "gmail"})
    link = await call(http, fake, version, "POST", "/connected_accounts/link", "/connected_accounts/link",
                      body={"auth_config_id": created["auth_config"]["id"], "user_id": "T2",
                            "callback_url": "https://lucy.example.com/integrations/callback"}, expect=201)
    await call(http, fake, version, "DELETE", f"/connected_accounts/{link['connected_account_id']}",
               "/connected_accounts/{nanoid}")

    await call(http, fake, version, "GET", "/toolkits", "/toolkits")
    await call(http, fake, version, "GET", "/toolkits/github", "/toolkits/{slug}")


async def test_errors_and_faults_have_the_spec_error_shape(
    http: aiohttp.ClientSession, fake_composio: FakeComposio
) -> None:
    fake_composio.fail_next("GET /tools", 429, retry_after=3)
    async with http.get(f"{fake_composio.base_url}/api/v3/tools", params={"toolkit_slug": "gmail"}) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "3"
        assert_valid(response_schema("GET", "/tools", 429), await resp.json(), "429")
    fake_composio.fail_next("GET /tools", 500)
    async with http.get(f"{fake_composio.base_url}/api/v3/tools", params={"toolkit_slug": "gmail"}) as resp:
        assert_valid(response_schema("GET", "/tools", 500), await resp.json(), "500")
    async with aiohttp.ClientSession(headers={"x-api-key": "ak_wrong"}) as other, \
            other.get(f"{fake_composio.base_url}/api/v3/tools", params={"toolkit_slug": "gmail"}) as resp:
        assert resp.status == 401
        assert_valid(response_schema("GET", "/tools", 401), await resp.json(), "401")


def test_every_catalog_tool_is_a_spec_tool() -> None:
    schema = _to_json_schema(spec()["components"]["schemas"]["Tool"], spec()["components"]["schemas"])
    validator = Draft4Validator(schema)
    bad = [t["slug"] for t in load_catalog(str(DEFAULT_TOOLS_DIR)) if not validator.is_valid(t)]
    assert bad == []
    assert len(load_catalog(str(DEFAULT_TOOLS_DIR))) == 1357


async def test_what_lucys_client_sends_matches_the_spec(fake_composio: FakeComposio) -> None:
    client = ComposioClient(api_key=fake_composio.api_key, base_url=fake_composio.base_url)
    try:
        fake_composio.connect("T1", "github")
        await client.execute("GITHUB_CREATE_AN_ISSUE", {"owner": "a", "repo": "b", "title": "c"}, user_id="T1")
        await client.create_connect_link("T1", "notion", callback_url="https://lucy.example.com/integrations/callback")
    finally:
        await client.aclose()
    sent = {(r.method, r.path.split("/")[1]): r for r in fake_composio.requests if r.method == "POST"}
    checks = [
        (("POST", "tools"), "/tools/execute/{tool_slug}"),
        (("POST", "auth_configs"), "/auth_configs"),
        (("POST", "connected_accounts"), "/connected_accounts/link"),
    ]
    for key, template in checks:
        assert_valid(request_schema("POST", template), sent[key].body, f"request to {template}")
    assert {r.api_version for r in fake_composio.requests} == {"v3.1"}
