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


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      synchronous_commit: bool = True) -> asyncpg.Pool[Any]:
    """Open a pool, turning connection failures into a sentence a person can act on.

    ``synchronous_commit=False`` is for records whose last fraction of a second may be lost if
    PostgreSQL itself crashes (never corrupted, and visible to every session at once): a commit
    then returns without waiting for the WAL flush, which on the machines measured was ~4 ms of
    fsync per commit, and at 100 events a second the queue of flushes that delayed Slack acks by
    0.1-0.7 s. Decisions (approvals, policy, installations) stay on a durable pool.
    """
    import asyncpg

    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=30,
            max_inactive_connection_lifetime=300,
            init=_init_connection,
            server_settings={} if synchronous_commit else {"synchronous_commit": "off"},
            # asyncpg's default reset on release stays: it also finds a connection whose backend
            # died, which is then replaced instead of being handed to the next query.
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool
