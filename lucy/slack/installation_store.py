"""Multi-workspace installs on PostgreSQL: Bolt's installation and OAuth-state stores on asyncpg,
an authorize that needs no ``auth.test`` per event, and the clean-up when a workspace uninstalls.

Tables (0001_initial.sql): ``slack_installations`` (one row per install, newest wins; ``data`` keeps the
whole slack_sdk ``Installation``), ``slack_oauth_states`` (one-time, expiring) and ``workspaces``.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from lucy.log import get_logger
from lucy.slack.ids import workspace_id

log = get_logger("lucy.slack.installations")
_std_logger = logging.getLogger("lucy.slack.installations")

# Rows that belong to a workspace and go when it uninstalls. The audit log stays: it records what
# was done on the workspace's behalf and is pruned on its own schedule.
_WORKSPACE_TABLES = (
    "integrations", "pending_actions", "thread_messages", "processed_messages", "slack_greetings",
)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.timestamp() if isinstance(v, datetime) else v) for k, v in data.items()}


def _where(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None) -> tuple[str, list[Any]]:
    if is_enterprise_install or (enterprise_id and not team_id):
        return "enterprise_id = $1 AND is_enterprise_install", [enterprise_id]
    return "enterprise_id IS NOT DISTINCT FROM $1 AND team_id = $2", [enterprise_id, team_id]


class PgInstallationStore(AsyncInstallationStore):
    def __init__(self, pool: Any, client_id: str | None = None) -> None:
        self._pool = pool
        self._client_id = client_id

    @property
    def logger(self) -> logging.Logger:
        return _std_logger

    async def async_save(self, installation: Installation) -> None:
        ws = workspace_id(installation.enterprise_id, installation.team_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO slack_installations (workspace_id, client_id, enterprise_id, team_id, user_id,
                    is_enterprise_install, bot_token, bot_id, bot_user_id, data)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                """,
                ws, self._client_id, installation.enterprise_id, installation.team_id, installation.user_id,
                installation.is_enterprise_install, installation.bot_token, installation.bot_id,
                installation.bot_user_id, _jsonable(installation.to_dict_for_copying()),
            )
            await conn.execute(
                """
                INSERT INTO workspaces (id, team_id, enterprise_id, name) VALUES ($1, $2, $3, $4)
                ON CONFLICT (id) DO UPDATE SET name = coalesce(EXCLUDED.name, workspaces.name),
                    updated_at = now(), uninstalled_at = NULL
                """,
                ws, installation.team_id, installation.enterprise_id,
                installation.team_name or installation.enterprise_name,
            )
        log.info("slack app installed", workspace=ws)

    async def async_save_bot(self, bot: Bot) -> None:
        # Token rotation refreshes the bot token: update the newest installation of that workspace.
        clause, params = _where(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        n = len(params)
        await self._pool.execute(
            f"""
            UPDATE slack_installations SET bot_token = ${n + 1}, bot_id = ${n + 2}, bot_user_id = ${n + 3},
                data = data || ${n + 4}::jsonb
            WHERE id = (SELECT id FROM slack_installations WHERE {clause} ORDER BY installed_at DESC, id DESC LIMIT 1)
            """,
            *params, bot.bot_token, bot.bot_id, bot.bot_user_id,
            {"bot_token": bot.bot_token, "bot_refresh_token": bot.bot_refresh_token,
             "bot_token_expires_at": bot.bot_token_expires_at},
        )

    async def _latest(self, clause: str, params: list[Any], extra: str = "") -> Any:
        return await self._pool.fetchrow(
            f"SELECT data FROM slack_installations WHERE {clause} {extra} ORDER BY installed_at DESC, id DESC LIMIT 1",
            *params,
        )

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        clause, params = _where(enterprise_id, team_id, is_enterprise_install)
        row = await self._latest(clause, params, "AND bot_token IS NOT NULL")
        return Installation(**row["data"]).to_bot() if row else None

    async def async_find_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                      user_id: str | None = None,
                                      is_enterprise_install: bool | None = False) -> Installation | None:
        clause, params = _where(enterprise_id, team_id, is_enterprise_install)
        if user_id is not None:
            clause += f" AND user_id = ${len(params) + 1}"
            params = [*params, user_id]
        row = await self._latest(clause, params)
        return Installation(**row["data"]) if row else None

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        clause, params = _where(enterprise_id, team_id, None)
        await self._pool.execute(
            f"UPDATE slack_installations SET bot_token = NULL, bot_id = NULL, bot_user_id = NULL, "
            f"data = data - 'bot_token' - 'bot_refresh_token' WHERE {clause}", *params)

    async def async_delete_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                        user_id: str | None = None) -> None:
        clause, params = _where(enterprise_id, team_id, None)
        if user_id is not None:
            # A revoked user token: keep the bot, drop the person's token.
            await self._pool.execute(
                f"UPDATE slack_installations SET data = data - 'user_token' - 'user_refresh_token' "
                f"WHERE {clause} AND user_id = ${len(params) + 1}", *params, user_id)
            return
        await self._pool.execute(f"DELETE FROM slack_installations WHERE {clause}", *params)


class PgOAuthStateStore(AsyncOAuthStateStore):
    """One-time OAuth ``state`` values that expire (Bolt checks them against a cookie too)."""

    def __init__(self, pool: Any, expiration_seconds: int = 600) -> None:
        self._pool = pool
        self._ttl = timedelta(seconds=expiration_seconds)

    @property
    def logger(self) -> logging.Logger:
        return _std_logger

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        await self._pool.execute(
            "INSERT INTO slack_oauth_states (state, expires_at) VALUES ($1, now() + $2::interval)", state, self._ttl)
        return state

    async def async_consume(self, state: str) -> bool:
        row = await self._pool.fetchval(
            "DELETE FROM slack_oauth_states WHERE state = $1 RETURNING expires_at > now()", state)
        return bool(row)


class PgAuthorize(AsyncAuthorize):
    """Authorize from the stored bot (one indexed query, no ``auth.test``): bot ids were saved at install."""

    def __init__(self, store: PgInstallationStore) -> None:
        self._store = store

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        bot = await self._store.async_find_bot(
            enterprise_id=enterprise_id, team_id=team_id,
            is_enterprise_install=context.is_enterprise_install)
        if bot is None:
            return None
        return AuthorizeResult(
            enterprise_id=bot.enterprise_id or enterprise_id, team_id=team_id or bot.team_id,
            team=bot.team_name, bot_token=bot.bot_token, bot_id=bot.bot_id, bot_user_id=bot.bot_user_id,
            bot_scopes=bot.bot_scopes, user_id=user_id,
        )


async def forget_workspace(pool: Any, workspace: str, *, installations: bool = True) -> None:
    """Remove what belongs to a workspace that uninstalled Lucy (tokens, connections, waiting
    requests, thread memory, claims) and mark it uninstalled."""
    async with pool.acquire() as conn, conn.transaction():
        for table in _WORKSPACE_TABLES:
            await conn.execute(f"DELETE FROM {table} WHERE workspace_id = $1", workspace)
        if installations:
            await conn.execute("DELETE FROM slack_installations WHERE workspace_id = $1", workspace)
        await conn.execute(
            "UPDATE workspaces SET uninstalled_at = now(), updated_at = now() WHERE id = $1", workspace)
    log.info("workspace data removed after uninstall", workspace=workspace)
