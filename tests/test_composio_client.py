"""The Composio client against the fake Composio server: paging, retries, timeouts, errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from lucy.errors import (
    ConfigError,
    ConnectionMissingError,
    IntegrationAuthError,
    IntegrationRateLimitedError,
    IntegrationTimeoutError,
    IntegrationUnavailableError,
    ToolNotFoundError,
)
from lucy.integrations.composio_client import ComposioClient, RetryPolicy
from tests.fakes.fake_composio import DEFAULT_TOOLS_DIR, FakeComposio

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture
async def client(fake_composio: FakeComposio) -> AsyncIterator[ComposioClient]:
    c = ComposioClient(api_key=fake_composio.api_key, base_url=fake_composio.base_url, timeout=5, retry=FAST)
    yield c
    await c.aclose()


def catalog_slugs(toolkit: str) -> list[str]:
    return [t["slug"] for t in json.loads((DEFAULT_TOOLS_DIR / f"{toolkit}.json").read_text())]


async def test_a_toolkit_is_fetched_whole_across_pages(client: ComposioClient, fake_composio: FakeComposio) -> None:
    tools = await client.list_tools(toolkit="github")

    assert [t["slug"] for t in tools] == catalog_slugs("github")  # all 831, in order, no duplicates
    assert fake_composio.count("GET", "/tools") == 4  # 250 per page on the fake
    assert all(r.query.get("limit") == "1000" for r in fake_composio.requests)


async def test_tools_by_slug(client: ComposioClient) -> None:
    tools = await client.list_tools(slugs=["GITHUB_CREATE_AN_ISSUE", "GMAIL_SEND_EMAIL"])
    assert sorted(t["slug"] for t in tools) == ["GITHUB_CREATE_AN_ISSUE", "GMAIL_SEND_EMAIL"]
    assert (await client.get_tool("NOTION_FETCH_DATA"))["toolkit"]["slug"] == "notion"
    with pytest.raises(ToolNotFoundError):
        await client.get_tool("GITHUB_NO_SUCH_TOOL")


async def test_reads_retry_429_and_honour_retry_after(client: ComposioClient, fake_composio: FakeComposio) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.fail_next("GET /connected_accounts", 429, retry_after=0.05, times=2)

    accounts = await client.list_connected_accounts("T1")

    assert [a.toolkit for a in accounts] == ["github"]
    assert [r.status for r in fake_composio.requests] == [429, 429, 200]


async def test_a_retry_after_beyond_the_deadline_fails_at_once_with_the_wait(fake_composio: FakeComposio) -> None:
    client = ComposioClient(api_key=fake_composio.api_key, base_url=fake_composio.base_url, timeout=1)
    fake_composio.fail_next("GET /tools", 429, retry_after=120)
    try:
        with pytest.raises(IntegrationRateLimitedError) as caught:
            await client.list_tools(toolkit="gmail")
    finally:
        await client.aclose()

    assert caught.value.retry_after == 120
    assert "try again in 120 seconds" in caught.value.user_message
    assert fake_composio.count("GET", "/tools") == 1  # no pointless waiting or hammering


async def test_reads_retry_server_errors_then_give_up(client: ComposioClient, fake_composio: FakeComposio) -> None:
    fake_composio.fail_next("GET /toolkits", 502, times=1)
    assert len(await client.list_toolkits()) == 21

    fake_composio.fail_next("GET /toolkits", 500, times=10)
    with pytest.raises(IntegrationUnavailableError) as caught:
        await client.list_toolkits()
    assert "isn't answering" in caught.value.user_message
    assert fake_composio.count("GET", "/toolkits") == 2 + 3  # 3 attempts, then the clear error


async def test_a_malformed_answer_is_an_error_with_a_sentence(
    client: ComposioClient, fake_composio: FakeComposio
) -> None:
    fake_composio.fail_next("GET /tools", malformed=True, times=3)
    with pytest.raises(IntegrationUnavailableError) as caught:
        await client.list_tools(toolkit="gmail")
    assert "unreadable" in str(caught.value)
    assert caught.value.user_message.endswith("Please try again in a minute.")


async def test_a_slow_read_times_out(fake_composio: FakeComposio) -> None:
    client = ComposioClient(
        api_key=fake_composio.api_key, base_url=fake_composio.base_url, timeout=0.2, read_deadline=0.3, retry=FAST
    )
    fake_composio.slow("GET /connected_accounts", 0.8, times=5)
    try:
        with pytest.raises(IntegrationTimeoutError) as caught:
            await client.list_connected_accounts("T1")
    finally:
        await client.aclose()
    assert "took too long" in caught.value.user_message


async def test_executes_are_never_retried(client: ComposioClient, fake_composio: FakeComposio) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.fail_next("POST /tools/execute/*", 503)

    with pytest.raises(IntegrationUnavailableError):
        await client.execute("GITHUB_GET_THE_AUTHENTICATED_USER", {}, user_id="T1")

    assert fake_composio.count("POST", "/tools/execute/*") == 1
    assert fake_composio.executes == []


async def test_an_execute_timeout_is_reported_and_the_action_may_have_happened(
    client: ComposioClient, fake_composio: FakeComposio
) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.slow("POST /tools/execute/*", 0.6)

    with pytest.raises(IntegrationTimeoutError):
        await client.execute("GITHUB_GET_THE_AUTHENTICATED_USER", {}, user_id="T1", time_limit=0.2)

    # This is why executes are not retried: the fake ran it before it answered late.
    assert [e.user_id for e in fake_composio.executes] == ["T1"]
    assert fake_composio.count("POST", "/tools/execute/*") == 1


async def test_execute_carries_the_workspace_and_maps_no_account(
    client: ComposioClient, fake_composio: FakeComposio
) -> None:
    ca = fake_composio.connect("T1", "github")
    done = await client.execute(
        "GITHUB_CREATE_AN_ISSUE", {"owner": "acme", "repo": "web", "title": "Hi"},
        user_id="T1", version="20251201_00", connected_account_id=ca,
    )
    assert done.successful and done.data["arguments"]["title"] == "Hi"
    [record] = fake_composio.executes
    assert (record.user_id, record.version, record.connected_account_id) == ("T1", "20251201_00", ca)

    with pytest.raises(ConnectionMissingError) as caught:
        await client.execute("GITHUB_CREATE_AN_ISSUE", {"owner": "a", "repo": "b", "title": "c"}, user_id="T10")
    assert caught.value.user_message == "That app isn't connected for this workspace yet."


async def test_a_rejected_key_says_what_to_fix(fake_composio: FakeComposio) -> None:
    client = ComposioClient(api_key="ak_wrong_key_123", base_url=fake_composio.base_url, retry=FAST)
    try:
        with pytest.raises(IntegrationAuthError) as caught:
            await client.list_connected_accounts("T1")
    finally:
        await client.aclose()
    assert "COMPOSIO_API_KEY" in caught.value.user_message
    assert fake_composio.count() == 1  # not retried


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError) as caught:
        ComposioClient(api_key="ak_test_key_123", base_url="http://composio-fake:8080")
    assert "COMPOSIO_BASE_URL" in str(caught.value)


async def test_an_unreachable_composio_is_an_integration_error(fake_composio: FakeComposio) -> None:
    client = ComposioClient(api_key=fake_composio.api_key, base_url=fake_composio.base_url, retry=FAST)
    await fake_composio.stop()
    try:
        with pytest.raises(IntegrationUnavailableError) as caught:
            await client.list_connected_accounts("T1")
    finally:
        await client.aclose()
    assert "Composio" in caught.value.user_message


async def test_connect_links_find_or_create_one_managed_auth_config(
    client: ComposioClient, fake_composio: FakeComposio
) -> None:
    links = await asyncio.gather(*(
        client.create_connect_link(f"T{i}", "gmail", callback_url=f"https://lucy.example.com/cb?w=T{i}")
        for i in range(5)
    ))

    assert fake_composio.count("POST", "/auth_configs") == 1  # created once, then reused
    assert len({link.connected_account_id for link in links}) == 5
    assert all(link.url.startswith(fake_composio.base_url + "/link/lk_") for link in links)
    account = await client.get_connected_account(links[0].connected_account_id)
    assert account is not None and (account.status, account.toolkit, account.user_id) == ("INITIATED", "gmail", "T0")


async def test_an_existing_managed_auth_config_is_reused_and_configured_ids_win(fake_composio: FakeComposio) -> None:
    existing = fake_composio.add_auth_config("notion")
    client = ComposioClient(
        api_key=fake_composio.api_key, base_url=fake_composio.base_url, auth_configs={"github": "ac_configured1"}
    )
    try:
        assert await client.auth_config_id("notion") == existing
        assert await client.auth_config_id("github") == "ac_configured1"
    finally:
        await client.aclose()
    assert fake_composio.count("POST", "/auth_configs") == 0
    assert fake_composio.count("GET", "/auth_configs") == 1  # only for notion


async def test_unknown_account_ids_are_none(client: ComposioClient) -> None:
    assert await client.get_connected_account("ca_doesnotexist") is None
    assert await client.get_connected_account("../etc/passwd") is None


async def test_toolkit_versions_are_sent_as_pinned(fake_composio: FakeComposio) -> None:
    client = ComposioClient(
        api_key=fake_composio.api_key, base_url=fake_composio.base_url, toolkit_versions={"GitHub": "20251201_00"}
    )
    try:
        await client.list_tools(toolkit="github")
        await client.list_tools(toolkit="gmail")
    finally:
        await client.aclose()
    pinned = [r.query for r in fake_composio.requests if r.query.get("toolkit_slug") == "github"]
    unpinned = [r.query for r in fake_composio.requests if r.query.get("toolkit_slug") == "gmail"]
    assert all(q["toolkit_versions[github]"] == "20251201_00" for q in pinned)
    assert unpinned[0]["toolkit_versions"] == "latest"
    assert client.version_for("github") == "20251201_00"


def test_telemetry_is_off_and_lucy_does_not_import_the_sdk_until_asked() -> None:
    """Our client never loads the high-level SDK (home of the telemetry thread); importing the
    integrations modules loads no SDK at all."""
    code = (
        "import sys, threading\n"
        "import lucy.integrations.worker, lucy.integrations.toolset, lucy.integrations.connections\n"
        "assert 'composio_client' not in sys.modules and 'composio' not in sys.modules, 'SDK imported early'\n"
        "from lucy.integrations.composio_client import ComposioClient\n"
        "ComposioClient(api_key='ak_test_key_123', base_url='http://127.0.0.1:9')\n"
        "print('composio' in sys.modules, 'composio.core.models._telemetry' in sys.modules,"
        " sorted(t.name for t in threading.enumerate()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False False ['MainThread']"
