"""Requests waiting for an app connection (``pending_actions`` rows of kind ``connection``).

When the agent needs an app that is not connected, the turn is parked here with the thread it came
from; the OAuth callback takes every waiting row of that workspace and app exactly once (an
``UPDATE … WHERE status = 'pending' RETURNING``), so two callbacks, or two instances, never resume
the same request twice.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from lucy.core.types import Turn

WAIT = timedelta(hours=1)  # how long a request waits for its connection


@dataclass(frozen=True)
class PendingConnection:
    id: str
    workspace: str
    toolkit: str
    channel: str
    thread_ts: str
    user: str
    turn: Turn | None  # None: nothing to resume (a /lucy-connect link); just tell the person


class PendingConnections:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def park(self, turn: Turn, toolkit: str, pending_id: str | None = None) -> str:
        """Park ``turn`` until ``toolkit`` is connected; returns the row id."""
        row_id = pending_id or f"conn_{uuid.uuid4().hex}"
        await self._pool.execute(
            """
            INSERT INTO pending_actions (id, workspace_id, kind, channel, thread_ts, slack_user, toolkit, state,
                                         expires_at)
            VALUES ($1, $2, 'connection', $3, $4, $5, $6, $7, now() + $8::interval)
            ON CONFLICT (id) DO UPDATE SET channel = EXCLUDED.channel, thread_ts = EXCLUDED.thread_ts,
                slack_user = EXCLUDED.slack_user, toolkit = EXCLUDED.toolkit,
                state = coalesce(pending_actions.state, '{}'::jsonb) || EXCLUDED.state,
                expires_at = EXCLUDED.expires_at
            """,
            row_id, turn.workspace, turn.channel, turn.thread_ts, turn.user, toolkit,
            {"turn": asdict(turn)}, WAIT,
        )
        return row_id

    async def park_link(self, workspace: str, toolkit: str, channel: str, user: str) -> str:
        """A connect link handed out by /lucy-connect: nothing to resume, but the person hears back."""
        row_id = f"conn_{uuid.uuid4().hex}"
        await self._pool.execute(
            """
            INSERT INTO pending_actions (id, workspace_id, kind, channel, thread_ts, slack_user, toolkit, state,
                                         expires_at)
            VALUES ($1, $2, 'connection', $3, '', $4, $5, '{}'::jsonb, now() + $6::interval)
            """,
            row_id, workspace, channel, user, toolkit, WAIT,
        )
        return row_id

    async def take(self, workspace: str, toolkit: str) -> list[PendingConnection]:
        """Every open request of this workspace waiting for ``toolkit``, each handed out once."""
        rows = await self._pool.fetch(
            """
            UPDATE pending_actions SET status = 'done', decided_at = now()
            WHERE workspace_id = $1 AND kind = 'connection' AND toolkit = $2 AND status = 'pending'
              AND expires_at > now()
            RETURNING id, workspace_id, toolkit, channel, thread_ts, slack_user, state, created_at
            """,
            workspace, toolkit,
        )
        found = [_pending(row) for row in sorted(rows, key=lambda r: r["created_at"])]
        # Several links for one person in one place (e.g. /lucy-connect twice) need one notice.
        seen: set[tuple[str, str, str]] = set()
        unique: list[PendingConnection] = []
        for item in found:
            key = (item.channel, item.thread_ts, item.user if item.turn is None else item.id)
            if key not in seen:
                seen.add(key)
                unique.append(item)
        return unique


def _pending(row: Any) -> PendingConnection:
    state = row["state"] or {}
    turn_data = state.get("turn")
    turn = Turn(**turn_data) if isinstance(turn_data, dict) else None
    return PendingConnection(
        id=row["id"], workspace=row["workspace_id"], toolkit=row["toolkit"], channel=row["channel"],
        thread_ts=row["thread_ts"], user=row["slack_user"], turn=turn,
    )
