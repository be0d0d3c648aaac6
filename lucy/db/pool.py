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


async def _keep(_conn: Any) -> None:
    """No reset on release (see ``reset_on_release``)."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      synchronous_commit: bool = True, reset_on_release: bool = True) -> asyncpg.Pool[Any]:
    """Open a pool, turning connection failures into a sentence a person can act on.

    ``synchronous_commit=False`` is for records whose last fraction of a second may be lost if
    PostgreSQL itself crashes (never corrupted, and visible to every session at once): a commit
    then returns without waiting for the WAL flush, which on the machines measured was ~4 ms of
    fsync per commit, and at 100 events a second the queue of flushes that delayed Slack acks by
    0.1-0.7 s. Decisions (approvals, policy, installations) stay on a durable pool.

    ``reset_on_release=False`` skips asyncpg's reset query, a second round trip after every
    query, for a pool that only runs single statements (the ack path's claims). The reset also
    finds a connection whose backend died; without it the next query on that connection fails
    with a client-side error, which :class:`lucy.slack.dedupe.Claims` retries once.
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
            # By default asyncpg's reset on release stays: it also finds a connection whose backend
            # died, which is then replaced instead of being handed to the next query.
            reset=None if reset_on_release else _keep,  # None: asyncpg's own reset
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool
