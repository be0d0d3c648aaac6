"""Migrations against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from lucy.db.migrate import Migration, apply_migrations, bundled_migrations, migrate_dsn
from lucy.errors import MigrationError

ROOT = Path(__file__).resolve().parents[1]
TABLES = {
    "workspaces", "slack_installations", "slack_oauth_states", "integrations", "processed_events",
    "processed_messages", "thread_messages", "pending_actions", "audit_log", "schema_migrations",
}


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_empty_database_gets_the_whole_schema(empty_db_dsn: str) -> None:
    applied = await migrate_dsn(empty_db_dsn)
    assert applied == [m.name for m in bundled_migrations()]
    assert TABLES <= await _tables(empty_db_dsn)


async def test_second_run_is_a_no_op(empty_db_dsn: str) -> None:
    await migrate_dsn(empty_db_dsn)
    assert await migrate_dsn(empty_db_dsn) == []


async def test_four_concurrent_lucy_migrate_processes_apply_each_file_once(empty_db_dsn: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db_dsn, "LOG_FORMAT": "json"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lucy", "migrate", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        rows = await conn.fetch("SELECT version, count(*) AS n FROM schema_migrations GROUP BY version")
    finally:
        await conn.close()
    assert {r["version"]: r["n"] for r in rows} == {m.version: 1 for m in bundled_migrations()}
    stdout = b"".join(o[0] for o in outputs).decode()
    assert stdout.count("applied 0 migration(s)") == 3


async def test_an_edited_applied_migration_is_refused(empty_db_dsn: str) -> None:
    await migrate_dsn(empty_db_dsn)
    first = bundled_migrations()[0]
    edited = Migration(first.version, first.name, first.sql + "\n-- sneaky edit\n")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        with pytest.raises(MigrationError) as info:
            await apply_migrations(conn, [edited])
        # The lock was released: another run on the same connection proceeds.
        assert await apply_migrations(conn) == []
    finally:
        await conn.close()
    assert "was changed after it was applied" in info.value.user_message


async def test_a_failing_migration_rolls_back_completely(empty_db_dsn: str) -> None:
    bad = Migration(9001, "9001_bad.sql", "CREATE TABLE half_done (id int); SELECT no_such_function();")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        with pytest.raises(MigrationError):
            await apply_migrations(conn, [bad])
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()
