"""The worker: every call validated, executed once under the right workspace, audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lucy.cache import memory_cache
from lucy.core.types import CONNECT_APP, NeedsApproval, NeedsConnection, ToolCall, ToolResult, Turn
from lucy.integrations.composio_client import ComposioClient, RetryPolicy
from lucy.integrations.connections import ComposioConnections
from lucy.integrations.registry import IntegrationRegistry
from lucy.integrations.schemas import ToolSchemaCache, tool_name
from lucy.integrations.worker import (
    Allow,
    AuditLog,
    Decision,
    Deny,
    IntegrationWorker,
    PreparedCall,
    fit_output,
)
from tests.fakes.fake_composio import FakeComposio, integrations_for

ISSUE = {"owner": "acme", "repo": "web", "title": "Login fails on Safari"}
TURN = Turn(workspace="T1", user="U42", channel="C1", thread_ts="1.0", text="file it", turn_id="turn-1")


@pytest.fixture
async def stack(fake_composio: FakeComposio, pool: Any) -> AsyncIterator[Any]:
    integrations = integrations_for(fake_composio, pool, LUCY_PUBLIC_URL="https://lucy.example.com",
                                    LUCY_TOOL_TIMEOUT_SECONDS="0.5", LUCY_TOOL_OUTPUT_MAX_CHARS="4000")
    yield integrations
    await integrations.aclose()


async def audit_rows(pool: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM audit_log ORDER BY id")]


async def test_a_call_runs_once_for_its_workspace_and_is_audited(
    stack: Any, fake_composio: FakeComposio, pool: Any
) -> None:
    ca = fake_composio.connect("T1", "github")
    fake_composio.connect("T10", "github")
    fake_composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 7, "html_url": "https://github.com/acme/web/issues/7"})
    args = {**ISSUE, "body": "Steps: log in. My token is xoxb-1234-abcdef, oops"}

    result = await stack.worker.execute(TURN, ToolCall("call_1", "GITHUB_CREATE_AN_ISSUE", args))

    assert result == ToolResult("call_1", "GITHUB_CREATE_AN_ISSUE", {"number": 7, "html_url":
                                "https://github.com/acme/web/issues/7"})
    [record] = fake_composio.executes
    assert (record.user_id, record.connected_account_id, record.arguments) == ("T1", ca, args)
    [row] = await audit_rows(pool)
    assert (row["workspace_id"], row["slack_user"], row["tool"], row["status"], row["decision"], row["turn_id"]) == (
        "T1", "U42", "GITHUB_CREATE_AN_ISSUE", "executed", "auto", "turn-1")
    assert "xoxb-1234" not in json.dumps(row["arguments"]) and row["arguments"]["title"] == ISSUE["title"]
    assert row["duration_ms"] > 0 and row["error"] is None


async def test_an_unknown_tool_is_an_error_the_model_can_read(
    stack: Any, fake_composio: FakeComposio, pool: Any
) -> None:
    fake_composio.connect("T1", "github")
    result = await stack.worker.execute(TURN, ToolCall("c", "GITHUB_MAKE_COFFEE", {}))
    assert isinstance(result, ToolResult) and not result.ok
    assert "no tool called GITHUB_MAKE_COFFEE" in result.content["error"]
    assert fake_composio.executes == []
    assert [r["status"] for r in await audit_rows(pool)] == ["invalid"]


async def test_a_tool_of_an_unconnected_app_needs_a_connection(
    stack: Any, fake_composio: FakeComposio, pool: Any
) -> None:
    fake_composio.connect("T10", "gmail")  # another workspace has Gmail; T1 does not
    result = await stack.worker.execute(TURN, ToolCall("c2", "GMAIL_SEND_EMAIL", {"recipient_email": "a@b.c"}))

    assert isinstance(result, NeedsConnection)
    assert (result.toolkit, result.call_id, result.tool) == ("gmail", "c2", "GMAIL_SEND_EMAIL")
    assert result.connect_url and fake_composio.link_owner(result.connect_url) == "T1"
    assert fake_composio.executes == [] and fake_composio.count("POST", "/tools/execute/*") == 0
    assert [(r["tool"], r["status"]) for r in await audit_rows(pool)] == [("GMAIL_SEND_EMAIL", "needs_connection")]


async def test_arguments_are_checked_before_any_network_call(
    stack: Any, fake_composio: FakeComposio, pool: Any
) -> None:
    fake_composio.connect("T1", "github")
    result = await stack.worker.execute(TURN, ToolCall("c", "GITHUB_CREATE_AN_ISSUE", {"owner": "acme", "title": 5}))

    assert isinstance(result, ToolResult) and not result.ok
    assert "did not run" in result.content["error"]
    assert "arguments: 'repo' is a required property" in result.content["problems"]
    assert "title: 5 is not of type 'string'" in result.content["problems"]
    assert "repo" in result.content["required"]
    assert fake_composio.count("POST", "/tools/execute/*") == 0
    [row] = await audit_rows(pool)
    assert row["status"] == "invalid" and "'repo' is a required property" in row["error"]


async def test_null_for_an_optional_nullable_argument_is_accepted(stack: Any, fake_composio: FakeComposio) -> None:
    fake_composio.connect("T1", "gmail")
    result = await stack.worker.execute(TURN, ToolCall("c", "GMAIL_FETCH_EMAILS", {"query": "is:unread",
                                                                                 "page_token": None}))
    assert isinstance(result, ToolResult) and result.ok


async def test_a_slow_tool_times_out_with_a_careful_message(stack: Any, fake_composio: FakeComposio, pool: Any) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.slow("POST /tools/execute/*", 1.5)

    result = await stack.worker.execute(TURN, ToolCall("c", "GITHUB_CREATE_AN_ISSUE", ISSUE))

    assert isinstance(result, ToolResult) and not result.ok
    assert "did not answer within 0.5 seconds" in result.content["error"]
    assert "check before trying again" in result.content["error"]
    assert len(fake_composio.executes) == 1  # it ran; we just stopped waiting, and did not retry
    assert [r["status"] for r in await audit_rows(pool)] == ["timeout"]


async def test_large_outputs_are_cut_to_the_budget_as_valid_json(stack: Any, fake_composio: FakeComposio) -> None:
    fake_composio.connect("T1", "github")
    issues = [{"number": i, "title": f"Issue {i}", "body": "x" * 500} for i in range(300)]
    fake_composio.set_result("GITHUB_LIST_REPOSITORY_ISSUES", {"issues": issues})

    call = ToolCall("c", "GITHUB_LIST_REPOSITORY_ISSUES", {"owner": "a", "repo": "b"})
    result = await stack.worker.execute(TURN, call)

    assert isinstance(result, ToolResult) and result.ok
    text = json.dumps(result.content)
    assert len(text) <= 4000
    assert result.content["truncated"] is True and "Output cut from" in result.content["note"]
    kept = json.loads(text)["data"]["issues"]
    assert 0 < len(kept) < 300 and kept[0]["number"] == 0


def test_fit_output_leaves_small_data_alone_and_always_returns_json() -> None:
    assert fit_output({"a": 1}, 100) == {"a": 1}
    huge = {str(i): "y" * 50 for i in range(5000)}
    cut = fit_output(huge, 1000)
    assert len(json.dumps(cut, ensure_ascii=False)) <= 1000 and cut["truncated"] is True


async def test_composio_down_gives_a_clear_error_for_executes(
    stack: Any, fake_composio: FakeComposio, pool: Any
) -> None:
    fake_composio.connect("T1", "github")
    await stack.registry.active("T1")  # known before the outage
    await stack.schemas.toolkit("github")
    fake_composio.down = True

    result = await stack.worker.execute(TURN, ToolCall("c", "GITHUB_CREATE_AN_ISSUE", ISSUE))

    assert isinstance(result, ToolResult) and not result.ok
    assert "Composio" in result.content["error"] and "may not have run" in result.content["error"]
    assert [r["status"] for r in await audit_rows(pool)] == ["failed"]


async def test_an_app_refusal_is_passed_to_the_model(stack: Any, fake_composio: FakeComposio) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.set_result("GITHUB_CREATE_AN_ISSUE", {}, successful=False, error="Repository acme/web not found")
    result = await stack.worker.execute(TURN, ToolCall("c", "GITHUB_CREATE_AN_ISSUE", ISSUE))
    assert isinstance(result, ToolResult) and not result.ok
    assert result.content == {"error": "GITHUB_CREATE_AN_ISSUE failed: Repository acme/web not found"}


async def test_an_app_error_quoting_a_secret_is_redacted_in_the_audit_log(
    stack: Any, fake_composio: FakeComposio, pool: Any
) -> None:
    fake_composio.connect("T1", "github")
    fake_composio.set_result("GITHUB_CREATE_AN_ISSUE", {}, successful=False,
                             error="401 for Authorization: Bearer ghp_abcdefghijklmnopqrstuvwxyz0123456789")
    await stack.worker.execute(TURN, ToolCall("c", "GITHUB_CREATE_AN_ISSUE", ISSUE))
    [row] = await audit_rows(pool)
    assert row["status"] == "failed" and row["error"] and "ghp_abcdefghijklmnopqrstuvwxyz" not in row["error"]


async def test_a_revoked_account_asks_to_reconnect(stack: Any, fake_composio: FakeComposio) -> None:
    ca = fake_composio.connect("T1", "github")
    await stack.registry.active("T1")  # cached as connected
    fake_composio.set_status(ca, "REVOKED")

    result = await stack.worker.execute(TURN, ToolCall("c", "GITHUB_CREATE_AN_ISSUE", ISSUE))

    assert isinstance(result, NeedsConnection) and result.toolkit == "github"
    assert await stack.registry.active_toolkits("T1") == frozenset()  # the registry resynced


async def test_connect_app_answers_with_a_connect_link(stack: Any, fake_composio: FakeComposio, pool: Any) -> None:
    fake_composio.connect("T1", "github")
    needs = await stack.worker.execute(TURN, ToolCall("m1", CONNECT_APP, {"app": "Google Calendar"}))
    already = await stack.worker.execute(TURN, ToolCall("m2", CONNECT_APP, {"app": "gh"}))
    unknown = await stack.worker.execute(TURN, ToolCall("m3", CONNECT_APP, {"app": "myspace"}))

    assert isinstance(needs, NeedsConnection) and (needs.toolkit, needs.call_id) == ("googlecalendar", "m1")
    assert needs.connect_url and fake_composio.link_owner(needs.connect_url) == "T1"
    assert isinstance(already, ToolResult) and already.ok and already.content["connected"] is True
    assert isinstance(unknown, ToolResult) and not unknown.ok and "no app called 'myspace'" in unknown.content["error"]
    assert [r["status"] for r in await audit_rows(pool)] == ["needs_connection", "executed", "invalid"]


async def test_long_names_and_arguments_map_back_to_composio(stack: Any, fake_composio: FakeComposio) -> None:
    fake_composio.connect("T1", "github")
    long_slug = "GITHUB_REMOVE_INTERACTION_RESTRICTIONS_FROM_YOUR_PUBLIC_REPOSITORIES"
    result = await stack.worker.execute(TURN, ToolCall("c", tool_name(long_slug), {}))
    assert isinstance(result, ToolResult) and result.ok

    protection = (await stack.schemas.toolkit("github")).by_slug["GITHUB_UPDATE_BRANCH_PROTECTION"]
    original = "required__pull__request__reviews__bypass__pull__request__allowances__users"
    short = next(new for new, old in protection.arg_names.items() if old == original)
    args = {"owner": "acme", "repo": "web", "branch": "main", short: ["octocat"]}
    result = await stack.worker.execute(TURN, ToolCall("c", "GITHUB_UPDATE_BRANCH_PROTECTION", args))
    assert isinstance(result, ToolResult) and result.ok, result

    assert [e.slug for e in fake_composio.executes] == [long_slug, "GITHUB_UPDATE_BRANCH_PROTECTION"]
    assert fake_composio.executes[1].arguments == {"owner": "acme", "repo": "web", "branch": "main",
                                                   original: ["octocat"]}


class Scripted:
    """A policy double: answers what the test scripts and remembers what it saw."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.seen: list[PreparedCall] = []
        self.results: list[ToolResult] = []

    async def before_execute(self, prepared: PreparedCall) -> Decision:
        self.seen.append(prepared)
        return self.decision

    async def after_execute(self, prepared: PreparedCall, result: ToolResult) -> None:
        self.results.append(result)


async def test_the_policy_can_hold_deny_or_allow_a_call(stack: Any, fake_composio: FakeComposio, pool: Any) -> None:
    fake_composio.connect("T1", "github")
    call = ToolCall("c9", "GITHUB_CREATE_AN_ISSUE", ISSUE)
    hold = Scripted(NeedsApproval("appr_1", call.name, ISSUE, "This creates an issue.", call_id="c9"))
    stack.worker.policy = hold

    held = await stack.worker.execute(TURN, call)
    assert held == hold.decision and hold.seen[0].tool.slug == call.name and hold.seen[0].arguments == ISSUE
    assert fake_composio.executes == []

    stack.worker.policy = Scripted(Deny("A workspace admin has turned this tool off."))
    denied = await stack.worker.execute(TURN, call)
    assert isinstance(denied, ToolResult) and denied.content == {"error": "A workspace admin has turned this tool off."}

    approved = await stack.worker.execute_approved(TURN, call, decided_by="U7")
    assert isinstance(approved, ToolResult) and approved.ok
    allowed = Scripted(Allow())
    stack.worker.policy = allowed
    await stack.worker.execute(TURN, call)
    assert [r.ok for r in allowed.results] == [True]

    assert len(fake_composio.executes) == 2
    rows = [(r["status"], r["decision"], r["decided_by"]) for r in await audit_rows(pool)]
    assert rows == [("needs_approval", None, None), ("denied", "denied", None), ("executed", "approved", "U7"),
                    ("executed", "auto", None)]


async def test_run_offers_the_issue_shape(fake_composio: FakeComposio, pool: Any) -> None:
    client = ComposioClient(api_key=fake_composio.api_key, base_url=fake_composio.base_url,
                            retry=RetryPolicy(attempts=1))
    registry = IntegrationRegistry(client, pool, memory_cache())
    worker = IntegrationWorker(client, registry, ToolSchemaCache(client), ComposioConnections(
        client, registry, public_url=None), AuditLog(pool))
    fake_composio.connect("E1:T1", "notion")
    try:
        result = await worker.run("E1:T1", "U1", "NOTION_SEARCH_NOTION_PAGE", {"query": "roadmap"})
    finally:
        await client.aclose()
    assert isinstance(result, ToolResult) and result.ok
    assert fake_composio.executes[0].user_id == "E1:T1"
