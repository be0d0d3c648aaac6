"""The audit log: a row for every executed, failed, denied or expired action with secrets
redacted, pruned by retention, and printed by `lucy audit --workspace T… --since 1d`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lucy import audit
from lucy.approvals import ApprovalStore
from lucy.core.types import Turn


async def age(pool: Any, row_id: int, days: float) -> None:
    """Make a row look ``days`` old (the database's clock writes created_at)."""
    await pool.execute("UPDATE audit_log SET created_at = now() - make_interval(secs => $2) WHERE id = $1",
                       row_id, days * 86400)


async def test_arguments_are_stored_with_secrets_redacted_and_long_values_cut(pool: Any) -> None:
    row_id = await audit.record(
        pool, workspace="T1", tool="GITHUB_CREATE_OR_UPDATE_A_REPOSITORY_SECRET", status="executed", user="U1",
        arguments={"repo": "hello", "password": "s3cr3t-pass", "api_key": "sk-abcdefghijklmnop",
                   "note": "token xoxb-1234-5678-abcdefgh", "content": "a" * 5000},
        decision="auto", duration_ms=12.5, error="failed with Bearer abcdefghijklmnopqrstu", turn_id="t1",
    )
    row = await pool.fetchrow("SELECT * FROM audit_log WHERE id = $1", row_id)
    args = row["arguments"]
    assert args["repo"] == "hello"
    assert args["password"] == args["api_key"] == "[redacted]" and "xoxb-" not in args["note"]
    assert len(args["content"]) < 2100 and args["content"].endswith("[3000 more characters]")
    assert "abcdefghijklmnopqrstu" not in row["error"]
    assert (row["workspace_id"], row["slack_user"], row["status"], row["decision"], row["duration_ms"]) == (
        "T1", "U1", "executed", "auto", 12.5)


async def test_a_row_from_the_records_pool_is_visible_at_once_and_decisions_stay_durable(
        pool: Any, db_dsn: str) -> None:
    from lucy.db.pool import create_pool

    # serve writes audit rows and thread messages on a pool that does not wait for the WAL flush;
    # `lucy audit` (another connection) must see the row the moment the write returns.
    records = await create_pool(db_dsn, min_size=1, max_size=2, synchronous_commit=False)
    try:
        assert await records.fetchval("SHOW synchronous_commit") == "off"
        row_id = await audit.record(records, workspace="T1", tool="GMAIL_SEND_EMAIL", status="executed",
                                    arguments={"to": "ada@example.com"})
        rows = await audit.query(pool, workspace="T1", since=timedelta(minutes=5))
        assert [r.id for r in rows] == [row_id]
    finally:
        await records.close()
    assert await pool.fetchval("SHOW synchronous_commit") == "on"  # approvals, policy, installs


async def test_query_is_per_workspace_and_window(pool: Any) -> None:
    recent = await audit.record(pool, workspace="T1", tool="GITHUB_STAR_A_REPOSITORY", status="executed")
    old = await audit.record(pool, workspace="T1", tool="GITHUB_DELETE_A_REPOSITORY", status="executed")
    await age(pool, old, 2)
    await audit.record(pool, workspace="T10", tool="GMAIL_SEND_EMAIL", status="executed")
    day = await audit.query(pool, workspace="T1", since=timedelta(days=1))
    assert [r.id for r in day] == [recent]
    week = await audit.query(pool, workspace="T1", since=timedelta(days=7))
    assert [r.id for r in week] == [old, recent]  # oldest first, like a log


async def test_prune_removes_rows_past_retention(pool: Any) -> None:
    keep = await audit.record(pool, workspace="T1", tool="A_B", status="executed")
    edge = await audit.record(pool, workspace="T1", tool="A_B", status="executed")
    gone = await audit.record(pool, workspace="T2", tool="A_B", status="denied")
    await age(pool, edge, 89)
    await age(pool, gone, 91)
    assert await audit.prune(pool, retention_days=0) == 0  # 0 keeps everything
    assert await audit.prune(pool, retention_days=90) == 1
    left = {r["id"] for r in await pool.fetch("SELECT id FROM audit_log")}
    assert left == {keep, edge}


@pytest.mark.parametrize(("text", "delta"), [("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)),
                                             ("1d", timedelta(days=1)), ("7d", timedelta(days=7)),
                                             ("2w", timedelta(weeks=2)), (" 1D ", timedelta(days=1))])
def test_since_accepts_minutes_hours_days_weeks(text: str, delta: timedelta) -> None:
    assert audit.parse_since(text) == delta


@pytest.mark.parametrize("text", ["", "1", "yesterday", "0d", "-1d", "1.5h", "1y"])
def test_a_bad_since_is_one_clear_sentence(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        audit.parse_since(text)
    assert str(caught.value).startswith("--since must be a number followed by m, h, d or w (for example 30m")


def run_cli(db_dsn: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "COMPOSIO_", "LLM_", "REDIS"))}
    env |= {"DATABASE_URL": db_dsn, "LOG_FORMAT": "console", "LOG_LEVEL": "warning"}
    return subprocess.run([sys.executable, "-m", "lucy", "audit", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path, check=False)


async def test_lucy_audit_prints_every_case_as_a_table(pool: Any, db_dsn: str, tmp_path: Path) -> None:
    store = ApprovalStore(pool)
    turn = Turn(workspace="T1", user="U_ASKER", channel="C1", thread_ts="1.1", text="…", turn_id="turn-9")
    await audit.record(pool, workspace="T1", tool="GITHUB_CREATE_AN_ISSUE", status="executed", user="U_ASKER",
                       arguments={"owner": "octo", "repo": "hello", "title": "Flaky test"}, decision="auto",
                       duration_ms=231.0)
    await audit.record(pool, workspace="T1", tool="GITHUB_STAR_A_REPOSITORY", status="failed", user="U_ASKER",
                       arguments={"owner": "octo"}, decision="auto", error="404 Not Found", duration_ms=88.0)
    denied = await store.create(turn, "GITHUB_DELETE_A_REPOSITORY", {"owner": "octo", "repo": "hello"}, "…", {})
    await store.decide(denied, "U_ADMIN", False, True, workspace="T1")
    expired = await store.create(turn, "GMAIL_SEND_EMAIL", {"recipient_email": "c@example.com",
                                                            "api_token": "ghp_abcdefghijkl"}, "…", {})
    await pool.execute("UPDATE pending_actions SET expires_at = now() - interval '1 second' WHERE id = $1", expired)
    await store.expire_due()
    await audit.record(pool, workspace="T2", tool="NOTION_DELETE_BLOCK", status="executed", user="U_OTHER")

    result = run_cli(db_dsn, tmp_path, "--workspace", "T1", "--since", "1d")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Audit log for T1, last 1 day: 4 actions"
    assert lines[1].split() == ["WHEN", "(UTC)", "USER", "TOOL", "STATUS", "DECISION", "BY", "MS", "ARGUMENTS"]
    body = "\n".join(lines[3:])
    assert "GITHUB_CREATE_AN_ISSUE" in body and "owner=octo, repo=hello, title=Flaky test" in body
    assert "error: 404 Not Found" in body
    denied_line = next(line for line in lines if "GITHUB_DELETE_A_REPOSITORY" in line)
    assert denied_line.split()[2:7] == ["U_ASKER", "GITHUB_DELETE_A_REPOSITORY", "denied", "denied", "U_ADMIN"]
    expired_line = next(line for line in lines if "GMAIL_SEND_EMAIL" in line)
    assert " expired " in expired_line and "ghp_abcdefghijkl" not in expired_line
    assert "NOTION_DELETE_BLOCK" not in result.stdout  # another workspace

    empty = run_cli(db_dsn, tmp_path, "--workspace", "T9", "--since", "30m")
    assert empty.returncode == 0 and empty.stdout.strip() == "No actions recorded for T9 in the last 30 minutes."


def test_lucy_audit_with_a_bad_since_says_so_in_one_sentence(tmp_path: Path) -> None:
    result = run_cli("postgresql://nobody@127.0.0.1:1/none", tmp_path, "--workspace", "T1", "--since", "yesterday")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "lucy audit: --since must be a number followed by m, h, d or w (for example 30m, 12h, 1d or 7d), "
        "not 'yesterday'."
    )


async def test_lucy_audit_on_an_unmigrated_database_says_what_to_do(empty_db_dsn: str, tmp_path: Path) -> None:
    result = run_cli(empty_db_dsn, tmp_path, "--workspace", "T1", "--since", "1d")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "This database has no audit log yet. Run `lucy migrate` (or `lucy serve`) first.")
