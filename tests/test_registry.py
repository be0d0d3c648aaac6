"""The workspace → connected toolkits registry, the connect flow, and tenant isolation."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from lucy.cache import Cache, memory_cache, redis_cache
from lucy.core.types import NeedsConnection, ToolkitConnection, ToolResult
from lucy.integrations.composio_client import ComposioClient, RetryPolicy
from lucy.integrations.connections import ComposioConnections, match_toolkit
from lucy.integrations.registry import IntegrationRegistry
from lucy.integrations.schemas import ToolSchemaCache
from lucy.integrations.worker import AuditLog, IntegrationWorker
from tests.fakes.fake_composio import FakeComposio

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01)
PUBLIC = "https://lucy.example.com"


@pytest.fixture
async def client(fake_composio: FakeComposio) -> AsyncIterator[ComposioClient]:
    c = ComposioClient(api_key=fake_composio.api_key, base_url=fake_composio.base_url, timeout=5, retry=FAST)
    yield c
    await c.aclose()


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, redis_url: str, cache_prefix: str) -> AsyncIterator[Cache]:
    c = memory_cache(cache_prefix) if request.param == "memory" else redis_cache(redis_url, cache_prefix)
    yield c
    await c.close()


def registry_for(client: ComposioClient, pool: Any, cache: Cache, **kw: Any) -> IntegrationRegistry:
    return IntegrationRegistry(client, pool, cache, **kw)


async def rows(pool: Any, workspace: str) -> dict[str, tuple[str, str | None]]:
    found = await pool.fetch(
        "SELECT toolkit, status, connected_account_id FROM integrations WHERE workspace_id = $1", workspace
    )
    return {r["toolkit"]: (r["status"], r["connected_account_id"]) for r in found}


async def test_active_toolkits_come_from_composio_and_are_written_down(
    client: ComposioClient, pool: Any, cache: Cache, fake_composio: FakeComposio
) -> None:
    github = fake_composio.connect("T1", "github")
    fake_composio.connect("T1", "gmail", status="EXPIRED")
    registry = registry_for(client, pool, cache)

    assert await registry.active_toolkits("T1") == {"github"}
    assert await rows(pool, "T1") == {"github": ("active", github)}
    assert [r.query["user_ids"] for r in fake_composio.requests] == ["T1"]


async def test_cached_lookups_do_not_ask_composio_until_invalidated(
    client: ComposioClient, pool: Any, cache: Cache, fake_composio: FakeComposio
) -> None:
    fake_composio.connect("T1", "github")
    registry = registry_for(client, pool, cache)
    await registry.active("T1")
    for _ in range(5):
        assert (await registry.active("T1")).source == "cache"
    assert fake_composio.count("GET", "/connected_accounts") == 1

    fake_composio.connect("T1", "notion")
    assert await registry.active_toolkits("T1") == {"github"}  # cached for the TTL
    await registry.invalidate("T1")
    assert await registry.active_toolkits("T1") == {"github", "notion"}
    assert fake_composio.count("GET", "/connected_accounts") == 2


async def test_100_concurrent_misses_make_one_composio_call(
    client: ComposioClient, pool: Any, cache: Cache, fake_composio: FakeComposio
) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.slow("GET /connected_accounts", 0.05)  # keep the first call open while the others arrive
    registry = registry_for(client, pool, cache)

    results = await asyncio.gather(*(registry.active_toolkits("T1") for _ in range(100)))

    assert all(r == {"github"} for r in results)
    assert fake_composio.count("GET", "/connected_accounts") == 1


async def test_keys_never_collide_across_workspaces(
    client: ComposioClient, pool: Any, cache: Cache, fake_composio: FakeComposio
) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.connect("T10", "gmail")
    fake_composio.connect("E1:T1", "notion")
    registry = registry_for(client, pool, cache)
    for _ in range(2):  # the second round is served from the cache
        assert await registry.active_toolkits("T1") == {"github"}
        assert await registry.active_toolkits("T10") == {"gmail"}
        assert await registry.active_toolkits("E1:T1") == {"notion"}
        assert await registry.active_toolkits("E1") == frozenset()
    await registry.invalidate("T1")  # must not touch T10's entry
    assert (await registry.active("T10")).source == "cache"


async def test_composio_down_serves_the_last_known_list_then_the_database(
    client: ComposioClient, pool: Any, cache: Cache, fake_composio: FakeComposio
) -> None:
    fake_composio.connect("T1", "github")
    registry = registry_for(client, pool, cache, ttl=300)
    await registry.active("T1")
    await registry.invalidate("T1")  # the fresh entry is gone; the last known one stays
    fake_composio.down = True

    with capture_logs() as logs:
        stale = await registry.active("T1")
    assert (stale.toolkits, stale.source) == ({"github"}, "last-known")
    assert any(e["event"] == "composio_unavailable_serving_stale" and e["source"] == "last-known" for e in logs)
    asked = fake_composio.count("GET", "/connected_accounts")
    await registry.active("T1")  # the stale answer is reused briefly, not re-asked at once
    assert fake_composio.count("GET", "/connected_accounts") == asked

    other_instance = registry_for(client, pool, memory_cache())  # no cache at all: the record serves
    with capture_logs() as logs:
        from_db = await other_instance.active("T1")
    assert (from_db.toolkits, from_db.source) == ({"github"}, "database")
    assert any(e["event"] == "composio_unavailable_serving_stale" and e["source"] == "database" for e in logs)


async def test_a_sync_marks_toolkits_that_went_away_inactive(
    client: ComposioClient, pool: Any, fake_composio: FakeComposio
) -> None:
    ca = fake_composio.connect("T1", "github")
    fake_composio.connect("T1", "gmail")
    registry = registry_for(client, pool, memory_cache())
    await registry.active("T1")
    before = await pool.fetchval("SELECT updated_at FROM integrations WHERE workspace_id='T1' AND toolkit='github'")

    fake_composio.set_status(ca, "REVOKED")
    assert await (registry.refresh("T1")) and await registry.active_toolkits("T1") == {"gmail"}

    assert await rows(pool, "T1") == {"github": ("inactive", ca), "gmail": ("active", fake_composio.active_account(
        "T1", "gmail")["id"])}
    after = await pool.fetchval("SELECT updated_at FROM integrations WHERE workspace_id='T1' AND toolkit='github'")
    assert after > before


async def test_an_invalidation_during_a_sync_wins(
    client: ComposioClient, pool: Any, fake_composio: FakeComposio
) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.slow("GET /connected_accounts", 0.3)
    registry = registry_for(client, pool, memory_cache())
    early = asyncio.create_task(registry.active_toolkits("T1"))
    await asyncio.sleep(0.1)  # the slow sync is under way
    fake_composio.connect("T1", "notion")
    await registry.invalidate("T1")

    assert await registry.active_toolkits("T1") == {"github", "notion"}
    assert await early == {"github"}  # the early caller gets the answer it asked for...
    assert await registry.active_toolkits("T1") == {"github", "notion"}  # ...which did not overwrite the cache


async def test_a_newer_reconnect_wins(client: ComposioClient, pool: Any, fake_composio: FakeComposio) -> None:
    fake_composio.connect("T1", "github")
    await asyncio.sleep(0.002)
    newer = fake_composio.connect("T1", "github")
    registry = registry_for(client, pool, memory_cache())
    assert await registry.connection("T1", "github") == ToolkitConnection("github", "active", newer)


async def test_a_broken_redis_does_not_break_lookups(
    client: ComposioClient, pool: Any, fake_composio: FakeComposio
) -> None:
    fake_composio.connect("T1", "github")
    broken = redis_cache("redis://127.0.0.1:1/0", "lucytest-broken")  # nothing listens on port 1
    registry = registry_for(client, pool, broken)
    try:
        assert await registry.active_toolkits("T1") == {"github"}
        await registry.invalidate("T1")
        fake_composio.connect("T1", "gmail")
        assert await registry.active_toolkits("T1") == {"github", "gmail"}
    finally:
        await broken.close()


# --- connecting ------------------------------------------------------------------------------


async def open_link(url: str) -> dict[str, list[str]]:
    """Play the person's browser: open the connect link, read where Composio sends them back."""
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    assert location.startswith(f"{PUBLIC}/integrations/callback?")
    return parse_qs(urlsplit(location).query)


async def test_connect_link_then_callback_then_the_toolkit_is_active(
    client: ComposioClient, pool: Any, cache: Cache, fake_composio: FakeComposio
) -> None:
    registry = registry_for(client, pool, cache)
    connections = ComposioConnections(client, registry, public_url=PUBLIC)
    assert await registry.active_toolkits("T1") == frozenset()  # cached: nothing connected

    url = await connections.connect_link("T1", "GitHub")
    callback = await open_link(url)
    assert callback["workspace"] == ["T1"] and callback["toolkit"] == ["github"] and callback["status"] == ["success"]
    confirmed = await connections.confirm_connection(callback["workspace"][0], callback["connected_account_id"][0])

    assert confirmed == ToolkitConnection("github", "active", callback["connected_account_id"][0])
    assert await registry.active_toolkits("T1") == {"github"}
    assert (await rows(pool, "T1"))["github"][0] == "active"
    assert [c.toolkit for c in await connections.list_connections("T1")] == ["github"]


async def test_the_callback_is_not_trusted(client: ComposioClient, pool: Any, fake_composio: FakeComposio) -> None:
    registry = registry_for(client, pool, memory_cache())
    connections = ComposioConnections(client, registry, public_url=PUBLIC)
    someone_elses = fake_composio.connect("T2", "github")
    pending = await connections.connect_link("T1", "gmail")  # opened but never finished
    pending_id = fake_composio.link_account(pending)["id"]
    quick = ComposioConnections(client, registry, public_url=PUBLIC, confirm_attempts=2, confirm_interval=0.01)

    assert await connections.confirm_connection("T1", someone_elses) is None  # another workspace's account
    assert await quick.confirm_connection("T1", pending_id) is None  # not ACTIVE
    assert await connections.confirm_connection("T1", "ca_made_up") is None
    assert await connections.confirm_connection("T1", "'; DROP TABLE integrations; --") is None
    assert await registry.active_toolkits("T1") == frozenset()
    assert await rows(pool, "T1") == {}


async def test_disconnect_deletes_at_composio_and_marks_inactive(
    client: ComposioClient, pool: Any, fake_composio: FakeComposio
) -> None:
    ca = fake_composio.connect("T1", "notion")
    registry = registry_for(client, pool, memory_cache())
    connections = ComposioConnections(client, registry, public_url=PUBLIC)
    assert await registry.active_toolkits("T1") == {"notion"}

    assert await connections.disconnect("T1", "notion") is True

    assert ca not in fake_composio.accounts
    assert await registry.active_toolkits("T1") == frozenset()
    assert await connections.list_connections("T1") == [ToolkitConnection("notion", "inactive", ca)]


async def test_an_uninstalled_workspace_is_not_served_from_the_cache(
    client: ComposioClient, pool: Any, cache: Cache, fake_composio: FakeComposio
) -> None:
    ca = fake_composio.connect("T1", "notion")
    registry = registry_for(client, pool, cache)
    connections = ComposioConnections(client, registry, public_url=PUBLIC)
    assert await registry.active_toolkits("T1") == {"notion"}  # cached now
    fake_composio.disconnect(ca)  # the workspace's accounts went away with the uninstall

    await connections.forget_workspace("T1")

    assert await registry.active_toolkits("T1") == frozenset()


async def test_app_names_are_matched_loosely(client: ComposioClient, pool: Any) -> None:
    connections = ComposioConnections(client, registry_for(client, pool, memory_cache()), public_url=None)
    known = await connections.refresh_known_toolkits()
    assert len(known) == 21
    assert [match_toolkit(t, known) for t in ("GitHub", "gh", "Google Calendar", "gcal", "drive", "mem", "zzz")] == [
        "github", "github", "googlecalendar", "googlecalendar", "googledrive", "mem0", None]
    assert connections.callback_url("E1:T1", "github") is None


# --- tenant isolation, as a property ----------------------------------------------------------

WORKSPACES = ["T1", "T10", "E1:T1", "E1:T10"]
TOOLKITS = ["github", "gmail", "notion"]
PROBE = {"github": ("GITHUB_SEARCH_REPOSITORIES", "q"), "gmail": ("GMAIL_FETCH_EMAILS", "query"),
         "notion": ("NOTION_SEARCH_NOTION_PAGE", "query")}
OPS = st.tuples(
    st.sampled_from(["lookup", "execute", "connect", "disconnect", "invalidate"]),
    st.sampled_from(WORKSPACES),
    st.sampled_from(TOOLKITS),
)


class World:
    """Everything one property run touches (a plain class: hypothesis pretty-prints dataclasses)."""

    def __init__(self, fake: FakeComposio, pool: Any, client: ComposioClient, schemas: ToolSchemaCache,
                 cache: Cache) -> None:
        self.fake, self.pool, self.client, self.schemas, self.cache = fake, pool, client, schemas, cache
        self.truth: dict[str, set[str]] = {}
        self.ever: dict[str, set[str]] = {}  # toolkits a workspace connected at some point
        self.owner: dict[str, str] = {}  # connected account → workspace
        self.marks: dict[str, str] = {}  # execute marker → workspace
        self.counter = itertools.count()

    def __repr__(self) -> str:
        return f"World(truth={self.truth})"

    async def reset(self) -> tuple[IntegrationRegistry, ComposioConnections, IntegrationWorker]:
        self.fake.accounts.clear()
        self.fake.executes.clear()
        await self.pool.execute("TRUNCATE integrations, audit_log")
        self.truth = {w: set() for w in WORKSPACES}
        self.ever = {w: set() for w in WORKSPACES}
        self.owner.clear()
        self.marks.clear()
        registry = IntegrationRegistry(self.client, self.pool, self.cache, ttl=300)
        for w in WORKSPACES:
            await registry.invalidate(w)
            await self.cache.delete("integrations-last", w)
        connections = ComposioConnections(self.client, registry, public_url=PUBLIC, toolkits=TOOLKITS)
        worker = IntegrationWorker(self.client, registry, self.schemas, connections, AuditLog(self.pool), timeout=10)
        return registry, connections, worker


async def apply(world: World, parts: tuple[Any, ...], op: tuple[str, str, str]) -> None:
    registry, connections, worker = parts
    kind, ws, toolkit = op
    if kind == "lookup":
        seen = await registry.active(ws)
        assert seen.toolkits <= world.ever[ws], (ws, seen)  # never another workspace's apps
        assert all(world.owner.get(c.connected_account_id) == ws for c in seen.connections)
    elif kind == "connect":
        url = await connections.connect_link(ws, toolkit)
        account = world.fake.link_account(url)
        assert account["user_id"] == ws
        world.owner[account["id"]] = ws
        world.ever[ws].add(toolkit)  # before the link is opened: from then on a lookup may see it
        callback = await open_link(url)
        assert await connections.confirm_connection(ws, callback["connected_account_id"][0]) is not None
        world.truth[ws].add(toolkit)
    elif kind == "disconnect":
        world.truth[ws].discard(toolkit)
        await connections.disconnect(ws, toolkit)
    elif kind == "invalidate":
        await registry.invalidate(ws)
    else:
        slug, arg = PROBE[toolkit]
        mark = f"m{next(world.counter)}"
        world.marks[mark] = ws
        result = await worker.run(ws, "U1", slug, {arg: mark})
        if isinstance(result, NeedsConnection):
            assert result.toolkit == toolkit and world.fake.link_owner(result.connect_url) == ws
        else:
            assert isinstance(result, ToolResult) and result.ok, result


async def check_isolation(world: World, batches: list[list[tuple[str, str, str]]]) -> None:
    parts = await world.reset()
    registry = parts[0]
    for batch in batches:
        # Ops that touch the same (workspace, toolkit) in one batch would race each other's truth.
        keys = [(ws, tk) for kind, ws, tk in batch if kind in ("connect", "disconnect")]
        runnable = [op for op in batch if op[0] not in ("connect", "disconnect") or keys.count(op[1:]) == 1]
        await asyncio.gather(*(apply(world, parts, op) for op in runnable))
        for ws in WORKSPACES:  # at every quiet point the registry says exactly what Composio says
            assert await registry.active_toolkits(ws) == world.truth[ws], ws
    for record in world.fake.executes:
        ws = world.marks[next(v for v in record.arguments.values())]
        assert record.user_id == ws
        assert world.owner[record.connected_account_id] == ws
    for ws in WORKSPACES:
        active = {t for t, (status, _) in (await rows(world.pool, ws)).items() if status == "active"}
        assert active == world.truth[ws]
    audited = await world.pool.fetch("SELECT workspace_id, arguments FROM audit_log WHERE status = 'executed'")
    assert all(world.marks[next(iter(r["arguments"].values()))] == r["workspace_id"] for r in audited)


@pytest.fixture
async def world(fake_composio: FakeComposio, pool: Any, client: ComposioClient, cache: Cache) -> World:
    schemas = ToolSchemaCache(client, None)
    await schemas.toolkits(TOOLKITS)
    return World(fake_composio, pool, client, schemas, cache)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(batches=st.lists(st.lists(OPS, min_size=1, max_size=6), min_size=1, max_size=6))
async def test_tenant_isolation_under_random_interleavings(
    world: World, batches: list[list[tuple[str, str, str]]]
) -> None:
    await check_isolation(world, batches)
