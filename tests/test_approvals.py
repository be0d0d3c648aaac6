"""Approval requests in PostgreSQL: only the requester or an admin decides, exactly once (double
clicks, two instances), expired requests cannot be approved, nothing is lost across a restart,
and the Slack message shows what will run in words."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from slack_sdk.models.blocks import Block

from lucy import audit
from lucy.approvals import (
    APPROVE_ACTION,
    DENY_ACTION,
    ApprovalStore,
    approval_blocks,
    approval_blocks_for,
    approval_text,
    decided_blocks,
)
from lucy.core.types import Turn
from lucy.db.pool import create_pool

ASKER, ADMIN, BOB = "U_ASKER", "U_ADMIN", "U_BOB"
DELETE = "GITHUB_DELETE_A_REPOSITORY"
ARGS = {"owner": "octo", "repo": "hello-world"}
STATE = {"messages": [{"role": "user", "content": "delete octo/hello-world"}], "call_id": "call_1"}


def turn(workspace: str = "T1") -> Turn:
    return Turn(workspace=workspace, user=ASKER, channel="C1", thread_ts="1700000000.000100", text="delete it",
                turn_id="turn-1")


async def new_request(store: ApprovalStore, workspace: str = "T1") -> str:
    return await store.create(turn(workspace), DELETE, ARGS, "This can't be undone.", STATE, toolkit="github")


async def backdate(pool: Any, approval_id: str) -> None:
    """Fifteen minutes pass (the database's clock decides expiry)."""
    await pool.execute("UPDATE pending_actions SET expires_at = now() - interval '1 second' WHERE id = $1",
                       approval_id)


async def audit_rows(pool: Any, approval_id: str) -> list[Any]:
    return await pool.fetch("SELECT * FROM audit_log WHERE approval_id = $1 ORDER BY id", approval_id)


async def test_requester_approves_once_and_a_second_click_is_told_it_is_decided(pool: Any) -> None:
    store = ApprovalStore(pool)
    approval_id = await new_request(store)
    pending = await store.list_pending("T1")
    assert [p.id for p in pending] == [approval_id] and pending[0].state == STATE

    first = await store.decide(approval_id, ASKER, True, False, workspace="T1")
    assert first.outcome == "approved" and first.executes
    assert first.message == f"Approved by <@{ASKER}>."
    assert first.approval is not None and first.approval.decided_by == ASKER and first.approval.state == STATE

    again = await store.decide(approval_id, ASKER, False, False, workspace="T1")
    assert again.outcome == "already_decided" and not again.executes
    assert again.message.startswith(f"<@{ASKER}> already approved this <!date^")
    assert (await store.get(approval_id)).status == "approved"  # type: ignore[union-attr]
    assert await store.list_pending("T1") == []

    assert await store.finish(approval_id, ok=True)
    assert not await store.finish(approval_id, ok=False)
    assert (await store.get(approval_id)).status == "done"  # type: ignore[union-attr]


async def test_someone_elses_click_is_refused_with_the_sentence(pool: Any) -> None:
    store = ApprovalStore(pool)
    approval_id = await new_request(store)
    refused = await store.decide(approval_id, BOB, True, False, workspace="T1")
    assert refused.outcome == "not_allowed" and not refused.executes
    assert refused.message == f"Only <@{ASKER}> or a workspace admin can approve this."
    denied_refused = await store.decide(approval_id, BOB, False, False, workspace="T1")
    assert denied_refused.message == f"Only <@{ASKER}> or a workspace admin can deny this."
    assert (await store.get(approval_id)).status == "pending"  # type: ignore[union-attr]
    # An admin of *another* workspace finds nothing; an admin of this one may decide.
    assert (await store.decide(approval_id, ADMIN, True, True, workspace="T2")).outcome == "not_found"
    by_admin = await store.decide(approval_id, ADMIN, True, True, workspace="T1")
    assert by_admin.executes and by_admin.approval is not None and by_admin.approval.decided_by == ADMIN


async def test_a_double_click_executes_once(pool: Any) -> None:
    store = ApprovalStore(pool)
    approval_id = await new_request(store)
    decisions = await asyncio.gather(*[store.decide(approval_id, ASKER, True, False, workspace="T1")
                                       for _ in range(8)])
    assert sum(d.executes for d in decisions) == 1
    assert sorted(d.outcome for d in decisions) == ["already_decided"] * 7 + ["approved"]


async def test_two_instances_clicking_at_once_decide_once(pool: Any, db_dsn: str) -> None:
    other_pool = await create_pool(db_dsn, min_size=1, max_size=5)
    try:
        here, there = ApprovalStore(pool), ApprovalStore(other_pool)
        approval_id = await new_request(here)
        # The requester clicks Approve while an admin clicks Deny, each click reaching another instance.
        decisions = await asyncio.gather(*[
            store.decide(approval_id, who, approve, who == ADMIN, workspace="T1")
            for store, who, approve in [(here, ASKER, True), (there, ADMIN, False)] * 4
        ])
        winners = [d for d in decisions if d.changed]
        assert len(winners) == 1
        final = await there.get(approval_id)
        assert final is not None and final.status == winners[0].outcome
        rows = await audit_rows(pool, approval_id)
        assert len(rows) == (1 if final.status == "denied" else 0)
    finally:
        await other_pool.close()


async def test_deny_is_audited_with_the_decider(pool: Any) -> None:
    store = ApprovalStore(pool)
    approval_id = await new_request(store)
    denied = await store.decide(approval_id, ADMIN, False, True, workspace="T1")
    assert denied.outcome == "denied" and not denied.executes and denied.message == f"Denied by <@{ADMIN}>."
    [row] = await audit_rows(pool, approval_id)
    assert (row["workspace_id"], row["slack_user"], row["tool"], row["status"], row["decision"],
            row["decided_by"], row["turn_id"]) == ("T1", ASKER, DELETE, "denied", "denied", ADMIN, "turn-1")
    assert row["arguments"] == ARGS


async def test_an_expired_request_cannot_be_approved(pool: Any) -> None:
    store = ApprovalStore(pool)
    approval_id = await new_request(store)
    await backdate(pool, approval_id)
    late = await store.decide(approval_id, ASKER, True, False, workspace="T1")
    assert late.outcome == "expired" and not late.executes and late.changed
    assert late.message.startswith("This request expired <!date^") and "Ask me again" in late.message
    later = await store.decide(approval_id, ASKER, True, False, workspace="T1")
    assert later.outcome == "expired" and not later.changed
    assert (await store.get(approval_id)).status == "expired"  # type: ignore[union-attr]
    rows = await audit_rows(pool, approval_id)
    assert [(r["status"], r["decision"], r["decided_by"]) for r in rows] == [("expired", "expired", None)]


async def test_expire_due_sweeps_each_request_once(pool: Any, db_dsn: str) -> None:
    store = ApprovalStore(pool)
    old_a, old_b, fresh = (await new_request(store), await new_request(store, "T2"), await new_request(store))
    await backdate(pool, old_a)
    await backdate(pool, old_b)
    other_pool = await create_pool(db_dsn, min_size=1, max_size=2)
    try:
        swept = await asyncio.gather(store.expire_due(), ApprovalStore(other_pool).expire_due())
    finally:
        await other_pool.close()
    assert sorted(a.id for batch in swept for a in batch) == sorted([old_a, old_b])
    assert await store.expire_due() == []
    assert [a.id for a in await store.list_pending("T1")] == [fresh]
    for approval_id in (old_a, old_b):
        assert [r["status"] for r in await audit_rows(pool, approval_id)] == ["expired"]


async def test_a_pending_approval_survives_a_restart(db_dsn: str) -> None:
    before = await create_pool(db_dsn, min_size=1, max_size=2)
    approval_id = await new_request(ApprovalStore(before))
    await ApprovalStore(before).attach_message(approval_id, "1700000001.000200")
    await before.close()  # the process stops

    after = await create_pool(db_dsn, min_size=1, max_size=2)  # a new process, a new store
    try:
        store = ApprovalStore(after)
        [waiting] = await store.list_pending("T1")
        assert waiting.id == approval_id and waiting.state == STATE and waiting.message_ts == "1700000001.000200"
        decision = await store.decide(approval_id, ASKER, True, False, workspace="T1")
        assert decision.executes and decision.approval is not None
        assert decision.approval.arguments == ARGS and decision.approval.state["call_id"] == "call_1"
    finally:
        await after.close()


async def test_requests_keep_their_time_to_live(pool: Any) -> None:
    store = ApprovalStore(pool, ttl=timedelta(minutes=15))
    approval_id = await new_request(store)
    approval = await store.get(approval_id)
    assert approval is not None
    assert timedelta(minutes=14) < approval.expires_at - approval.created_at <= timedelta(minutes=15)


async def test_audit_rows_of_an_approved_call_are_the_workers_to_write(pool: Any) -> None:
    store = ApprovalStore(pool)
    approval_id = await new_request(store)
    decision = await store.decide(approval_id, ASKER, True, False, workspace="T1")
    assert decision.approval is not None and await audit_rows(pool, approval_id) == []
    # What the worker writes after running the approved call:
    await audit.record(pool, workspace="T1", tool=DELETE, status="executed", user=ASKER, arguments=ARGS,
                       decision="approved", decided_by=ASKER, duration_ms=412.0, turn_id="turn-1",
                       approval_id=approval_id)
    [row] = await audit_rows(pool, approval_id)
    assert (row["status"], row["decision"], row["decided_by"]) == ("executed", "approved", ASKER)


# --- what the person reads ----------------------------------------------------------------------


def _validate(blocks: list[dict[str, Any]]) -> None:
    """slack_sdk's own Block Kit models check every limit (section ≤ 3000, button ≤ 75, …)."""
    assert len(blocks) <= 50
    for raw in blocks:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()
        for element in getattr(block, "elements", None) or []:
            element.validate_json()


def test_approval_text_reads_like_a_sentence_not_json() -> None:
    text = approval_text(DELETE, {"owner": "octo", "repo_name": "hello-world", "archiveFirst": False}, "destructive",
                         toolkit="github")
    assert text.splitlines() == [
        "*Delete a repository (GitHub)*. This can't be undone.",
        "• *Owner:* octo",
        "• *Repo name:* hello-world",
        "• *Archive first:* no",
        "`GITHUB_DELETE_A_REPOSITORY`",
    ]


def test_secrets_are_hidden_long_values_cut_and_mentions_defused() -> None:
    text = approval_text("GITHUB_CREATE_OR_UPDATE_A_REPOSITORY_SECRET",
                         {"secret_name": "DEPLOY", "api_token": "ghp_abcdefghijklmnop", "body": "x" * 5000,
                          "note": "<!channel> hi"}, "write")
    assert "ghp_abcdefghijklmnop" not in text and "[redacted]" in text
    assert "4500 more characters" in text
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert len(text) < 3000


def test_approval_blocks_are_valid_block_kit_with_two_buttons_carrying_the_id() -> None:
    from datetime import UTC, datetime

    many = {f"field_{i}": "y" * 400 for i in range(40)}
    blocks = approval_blocks("apr_123", DELETE, many, "destructive", requester=ASKER,
                             reason="This can't be undone, or it reaches other people, so I ask before I do it.",
                             expires_at=datetime(2030, 1, 1, 12, 15, tzinfo=UTC), toolkit="github")
    _validate(blocks)
    actions = blocks[-1]["elements"]
    assert [(a["action_id"], a["value"], a["text"]["text"]) for a in actions] == [
        (APPROVE_ACTION, "apr_123", "Approve"), (DENY_ACTION, "apr_123", "Deny")]
    assert "confirm" in actions[0]  # destructive: a second "are you sure"
    assert "more argument(s), not shown" in blocks[1]["text"]["text"]
    assert f"Only <@{ASKER}> or a workspace admin can decide." in blocks[2]["elements"][0]["text"]


async def test_decided_blocks_say_who_decided_and_when(pool: Any) -> None:
    store = ApprovalStore(pool)
    approval_id = await new_request(store)
    waiting = await store.get(approval_id)
    assert waiting is not None
    _validate(approval_blocks_for(waiting))
    decision = await store.decide(approval_id, ADMIN, True, True, workspace="T1")
    assert decision.approval is not None
    blocks = decided_blocks(decision.approval)
    _validate(blocks)
    assert all(b["type"] != "actions" for b in blocks)  # no buttons left to click
    line = blocks[-1]["elements"][0]["text"]
    assert line.startswith(f":white_check_mark: Approved by <@{ADMIN}> <!date^")
    assert "Delete a repository (GitHub)" in blocks[0]["text"]["text"]
