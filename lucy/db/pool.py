"""The asyncpg pool. jsonb columns come back as Python objects."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lucy.errors import DatabaseError

if TYPE_CHECKING:
    import asyncpg


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """Release hook: asyncpg still rolls back an open transaction first; nothing else is needed.

    The default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on
    every release: one more round trip per query, on the ack path too. Lucy keeps no session
    state on pooled connections (no LISTEN, SET, cursors or advisory locks; migrations use a
    connection of their own), so that work would always be for nothing.
    """


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool[Any]:
    """Open a pool, turning connection failures into a sentence a person can act on."""
    import asyncpg

    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=30,
            max_inactive_connection_lifetime=300,
            init=_init_connection,
            reset=_keep_session,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool
