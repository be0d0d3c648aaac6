"""`lucy audit --workspace T… --since 1d`: print a workspace's audit log as a table."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from lucy.config import Settings
from lucy.errors import DatabaseError


def run_audit(settings: Settings, *, workspace: str, since: str) -> int:
    from lucy.audit import parse_since

    try:
        delta = parse_since(since)
    except ValueError as exc:
        print(f"lucy audit: {exc}", file=sys.stderr)
        return 2
    if not workspace.strip():
        print("lucy audit: --workspace needs a workspace id such as T0123ABCD.", file=sys.stderr)
        return 2
    text = asyncio.run(_read(settings, workspace.strip(), delta))
    print(text)
    return 0


async def _read(settings: Settings, workspace: str, since: timedelta) -> str:
    import asyncpg

    from lucy.audit import format_table, query
    from lucy.db.pool import create_pool
    from lucy.serve import database

    async with database(settings) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            if not await pool.fetchval("SELECT to_regclass('audit_log') IS NOT NULL"):
                raise DatabaseError(
                    "audit_log does not exist",
                    user_message="This database has no audit log yet. Run `lucy migrate` (or `lucy serve`) first.",
                )
            rows = await query(pool, workspace=workspace, since=since)
        except asyncpg.PostgresError as exc:
            raise DatabaseError(f"reading the audit log failed: {exc}") from exc
        finally:
            await pool.close()
    return format_table(rows, workspace=workspace, since=since)
