"""Exactly once: claim an event id, and a person's message, in PostgreSQL before acting on it.

Slack redelivers events it thinks timed out (``X-Slack-Retry-Num``; in Socket Mode ``retry_attempt``),
possibly to another Lucy instance, and delivers one channel message that mentions Lucy twice
(``app_mention`` and ``message.channels``, with different event ids). The first ``INSERT … ON
CONFLICT DO NOTHING`` wins on every instance; everyone else drops the delivery. A claim is made
before any side effect, so a crash after claiming loses that one message rather than answering
it twice (Slack's own retries would otherwise double every slow answer).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from lucy.log import get_logger
from lucy.slack.ids import workspace_of_body
from lucy.web.metrics import Metrics

log = get_logger("lucy.slack.dedupe")


class Claims:
    """Claim-once on the ``processed_events`` and ``processed_messages`` tables."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def claim_event(self, event_id: str, workspace: str) -> bool:
        """True for the first delivery of ``event_id`` anywhere; False for every redelivery."""
        row = await self._insert(
            "INSERT INTO processed_events (event_id, workspace_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            event_id, workspace,
        )
        return row is not None

    async def claim_message(self, workspace: str, channel: str, ts: str) -> bool:
        """True the first time this person's message is taken on, whichever event carried it."""
        row = await self._insert(
            "INSERT INTO processed_messages (workspace_id, channel, ts) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            workspace, channel, ts,
        )
        return row is not None

    async def _insert(self, sql: str, *args: str) -> Any:
        """One claim; a pooled connection found broken on the client side (its backend was killed,
        say) is retried once on a fresh one. Those errors come before the query is sent, so the
        retry cannot see its own first claim and drop the message."""
        import asyncpg
        from asyncpg.exceptions import InternalClientError

        try:
            return await self._pool.fetchval(sql, *args)
        except (asyncpg.InterfaceError, InternalClientError) as exc:
            log.warning("a database connection was broken; retrying the claim", error=str(exc))
            return await self._pool.fetchval(sql, *args)

    async def prune(self, older_than: timedelta = timedelta(days=2)) -> int:
        """Forget claims older than Slack's retry window (3 retries within ~6 minutes) with margin."""
        async with self._pool.acquire() as conn:
            events = await conn.execute("DELETE FROM processed_events WHERE received_at < now() - $1::interval",
                                        older_than)
            messages = await conn.execute(
                "DELETE FROM processed_messages WHERE received_at < now() - $1::interval", older_than)
            # Requests that waited for a connection nobody made.
            await conn.execute("UPDATE pending_actions SET status = 'expired' WHERE kind = 'connection' "
                               "AND status = 'pending' AND expires_at < now()")
        return int(events.split()[-1]) + int(messages.split()[-1])


class ClaimEvents(AsyncMiddleware):
    """Bolt ``before_authorize`` middleware: runs after the signature check, before any token lookup,
    so a redelivery costs one INSERT and nothing else. Works the same for HTTP and Socket Mode."""

    def __init__(self, claims: Claims, metrics: Metrics) -> None:
        self._claims = claims
        self._metrics = metrics

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        body = req.body
        event_id = body.get("event_id")
        if body.get("type") != "event_callback" or not event_id:
            return await next()
        workspace = workspace_of_body(body) or "unknown"
        started = time.perf_counter()
        first = await self._claims.claim_event(str(event_id), workspace)
        self._metrics.claim_seconds.observe(time.perf_counter() - started)
        if first:
            return await next()
        kind = str((body.get("event") or {}).get("type", "unknown"))
        retry = req.headers.get("x-slack-retry-num", [""])[0]
        log.info("dropped a redelivered event", event_id=event_id, event_type=kind, retry_num=retry,
                 workspace=workspace)
        self._metrics.events.labels(kind=kind, outcome="duplicate").inc()
        return BoltResponse(status=200, body="")

    @property
    def name(self) -> str:
        return "ClaimEvents"
