"""Which toolkits each workspace has connected: cache → Composio, with PostgreSQL as the record.

Composio is the truth (a person can revoke an app on Composio's side at any time); asking it on
every turn would cost a round trip, so the answer is cached per workspace for
``LUCY_CACHE_TTL_SECONDS`` (aiocache: in-process, or Redis when ``REDIS_URL`` is set). Cache
keys are built by :class:`lucy.cache.Cache`, which percent-encodes each part, so ``T1`` and
``T10`` (or ``E1:T1``) can never share an entry.

* Concurrent misses for one workspace make one Composio call (single flight, per process).
* Every sync writes what Composio said into ``integrations`` (active/inactive, connected
  account id, ``updated_at`` when something changed).
* When Composio fails, the last known list is served — the long-lived "last" cache entry, else
  the ``integrations`` rows — logged, and cached briefly so a down Composio is not hammered.
* :meth:`IntegrationRegistry.invalidate` after a connect or disconnect; a sync that was already
  running when it happened does not write its (older) answer back into the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lucy.cache import Cache
from lucy.core.types import ToolkitConnection
from lucy.errors import IntegrationError
from lucy.integrations.caching import SingleFlight, cache_errors, database_errors
from lucy.integrations.composio_client import ComposioAPI, ConnectedAccount
from lucy.log import get_logger

if TYPE_CHECKING:
    from lucy.web.metrics import Metrics

log = get_logger("lucy.integrations.registry")

FRESH = "integrations"  # parts of the cache key; the workspace id is the last part
LAST_KNOWN = "integrations-last"

Source = Literal["composio", "cache", "last-known", "database"]


@dataclass(frozen=True)
class WorkspaceIntegrations:
    """The active connections of one workspace, and where the answer came from."""

    workspace: str
    connections: tuple[ToolkitConnection, ...]
    source: Source
    fetched_at: float  # wall clock (time.time) of the Composio answer, 0 if never

    @property
    def toolkits(self) -> frozenset[str]:
        return frozenset(c.toolkit for c in self.connections)

    @property
    def stale(self) -> bool:
        return self.source in ("last-known", "database")

    def connection(self, toolkit: str) -> ToolkitConnection | None:
        return next((c for c in self.connections if c.toolkit == toolkit.lower()), None)

    def to_cache(self) -> dict[str, Any]:
        # Plain data, not pickled classes: entries in Redis outlive a deploy.
        return {
            "v": 1,
            "workspace": self.workspace,
            "connections": [[c.toolkit, c.connected_account_id] for c in self.connections],
            "fetched_at": self.fetched_at,
        }

    @classmethod
    def from_cache(cls, workspace: str, value: Any, source: Source) -> WorkspaceIntegrations | None:
        if not isinstance(value, dict) or value.get("v") != 1 or value.get("workspace") != workspace:
            return None  # unknown shape, or (never expected) another workspace's entry
        connections = tuple(ToolkitConnection(str(t), "active", ca) for t, ca in value.get("connections", []))
        return cls(workspace, connections, source, float(value.get("fetched_at") or 0.0))


def newest_per_toolkit(accounts: Iterable[ConnectedAccount]) -> tuple[ToolkitConnection, ...]:
    """One connection per toolkit: the most recently created active account wins (a reconnect)."""
    best: dict[str, ConnectedAccount] = {}
    for account in accounts:
        if not account.active or not account.toolkit:
            continue
        held = best.get(account.toolkit)
        if held is None or (account.created_at, account.id) > (held.created_at, held.id):
            best[account.toolkit] = account
    return tuple(ToolkitConnection(t, "active", best[t].id) for t in sorted(best))


class IntegrationRegistry:
    """The active toolkits of each workspace.

    Args:
        client: Composio (``user_id`` = workspace id).
        pool: asyncpg pool (``integrations`` table).
        cache: the shared cache (memory or Redis).
        ttl: seconds an answer from Composio is reused (``LUCY_CACHE_TTL_SECONDS``).
        last_known_ttl: seconds the last good answer is kept for outages.
        outage_ttl: seconds a stale answer is reused before Composio is asked again.
    """

    def __init__(
        self,
        client: ComposioAPI,
        pool: Any,
        cache: Cache,
        *,
        ttl: float = 300.0,
        last_known_ttl: float = 86400.0,
        outage_ttl: float = 15.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self._pool = pool
        self._cache = cache
        self._ttl = ttl
        self._last_known_ttl = last_known_ttl
        self._outage_ttl = min(outage_ttl, ttl)
        self._flight: SingleFlight[WorkspaceIntegrations] = SingleFlight()
        self._generation: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._metrics = metrics

    # --- lookups ---------------------------------------------------------------------------

    async def active(self, workspace: str) -> WorkspaceIntegrations:
        """The workspace's active connections (cached; see the module docstring)."""
        cached = WorkspaceIntegrations.from_cache(workspace, await self._cache_get(FRESH, workspace), "cache")
        if self._metrics is not None:
            self._metrics.cache_requests.labels(result="hit" if cached is not None else "miss").inc()
        if cached is not None:
            return cached
        return await self._flight.run(workspace, lambda: self._load(workspace))

    async def active_toolkits(self, workspace: str) -> frozenset[str]:
        return (await self.active(workspace)).toolkits

    async def connection(self, workspace: str, toolkit: str) -> ToolkitConnection | None:
        return (await self.active(workspace)).connection(toolkit)

    async def refresh(self, workspace: str) -> WorkspaceIntegrations:
        """Ask Composio now (after invalidating the cache)."""
        await self.invalidate(workspace)
        return await self.active(workspace)

    async def invalidate(self, workspace: str) -> None:
        """Forget the cached answer for ``workspace`` (call after a connect or a disconnect)."""
        self._bump(workspace)
        await self._cache_delete(FRESH, workspace)

    def _bump(self, workspace: str) -> None:
        # A sync that started before this point must not write its answer anywhere (see _load).
        self._generation[workspace] = self._generation.get(workspace, 0) + 1
        self._flight.forget(workspace)

    def _lock(self, workspace: str) -> asyncio.Lock:
        return self._locks.setdefault(workspace, asyncio.Lock())

    async def known_rows(self, workspace: str) -> list[ToolkitConnection]:
        """Every ``integrations`` row of the workspace, inactive ones included."""
        rows = await self._pool.fetch(
            "SELECT toolkit, status, connected_account_id FROM integrations WHERE workspace_id = $1 ORDER BY toolkit",
            workspace,
        )
        return [ToolkitConnection(r["toolkit"], r["status"], r["connected_account_id"]) for r in rows]

    async def record_connection(self, workspace: str, account: ConnectedAccount) -> ToolkitConnection:
        """A connection Composio confirmed as ACTIVE: write it down and drop the cached list."""
        connection = ToolkitConnection(account.toolkit, "active", account.id)
        async with self._lock(workspace):
            await self._upsert(workspace, [connection])
            self._bump(workspace)
        await self._cache_delete(FRESH, workspace)
        return connection

    async def record_disconnection(self, workspace: str, toolkit: str) -> None:
        async with self._lock(workspace):
            await self._pool.execute(
                "UPDATE integrations SET status = 'inactive', updated_at = now() "
                "WHERE workspace_id = $1 AND toolkit = $2 AND status = 'active'",
                workspace, toolkit.lower(),
            )
            self._bump(workspace)
        await self._cache_delete(FRESH, workspace)

    # --- the sync --------------------------------------------------------------------------

    async def _load(self, workspace: str) -> WorkspaceIntegrations:
        generation = self._generation.get(workspace, 0)
        try:
            accounts = await self._client.list_connected_accounts(workspace, statuses=("ACTIVE",))
        except IntegrationError as exc:
            return await self._stale(workspace, exc, generation)
        found = WorkspaceIntegrations(workspace, newest_per_toolkit(accounts), "composio", time.time())
        # Invalidated while we asked? Then this answer may predate a connect or disconnect: give it
        # to the callers who asked before, but write neither the record nor the cache with it. The
        # lock orders this write against record_connection / record_disconnection.
        async with self._lock(workspace):
            if self._generation.get(workspace, 0) != generation:
                return found
            await self._write_truth(workspace, found.connections)
        value = found.to_cache()
        await self._cache_set_if_current(FRESH, workspace, value, self._ttl, generation)
        await self._cache_set_if_current(LAST_KNOWN, workspace, value, self._last_known_ttl, generation)
        return found

    async def _stale(self, workspace: str, exc: IntegrationError, generation: int) -> WorkspaceIntegrations:
        last = WorkspaceIntegrations.from_cache(
            workspace, await self._cache_get(LAST_KNOWN, workspace), "last-known"
        )
        if last is None:
            last = await self._from_database(workspace)
        log.warning(
            "composio_unavailable_serving_stale",
            workspace=workspace, source=last.source, toolkits=sorted(last.toolkits), error=str(exc),
        )
        await self._cache_set_if_current(FRESH, workspace, last.to_cache(), self._outage_ttl, generation)
        return last

    async def _from_database(self, workspace: str) -> WorkspaceIntegrations:
        try:
            rows = await self._pool.fetch(
                "SELECT toolkit, connected_account_id FROM integrations "
                "WHERE workspace_id = $1 AND status = 'active' ORDER BY toolkit",
                workspace,
            )
        except database_errors() as exc:
            log.error("integrations_unavailable", workspace=workspace, error=str(exc))
            rows = []
        connections = tuple(ToolkitConnection(r["toolkit"], "active", r["connected_account_id"]) for r in rows)
        return WorkspaceIntegrations(workspace, connections, "database", 0.0)

    async def _write_truth(self, workspace: str, active: Sequence[ToolkitConnection]) -> None:
        """Make the ``integrations`` rows say what Composio said (a failure here is logged only:
        the answer is still right, the record catches up on the next sync)."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await self._upsert(workspace, active, conn)
                await conn.execute(
                    "UPDATE integrations SET status = 'inactive', updated_at = now() "
                    "WHERE workspace_id = $1 AND status = 'active' AND NOT (toolkit = ANY($2::text[]))",
                    workspace, [c.toolkit for c in active],
                )
        except database_errors() as exc:
            log.error("integrations_write_failed", workspace=workspace, error=str(exc))

    async def _upsert(self, workspace: str, active: Sequence[ToolkitConnection], conn: Any = None) -> None:
        if not active:
            return
        await (conn or self._pool).execute(
            "INSERT INTO integrations (workspace_id, toolkit, connected_account_id, status) "
            "SELECT $1, t.toolkit, t.account, 'active' FROM unnest($2::text[], $3::text[]) AS t(toolkit, account) "
            "ON CONFLICT (workspace_id, toolkit) DO UPDATE "
            "SET connected_account_id = EXCLUDED.connected_account_id, status = 'active', updated_at = now() "
            "WHERE integrations.status <> 'active' "
            "OR integrations.connected_account_id IS DISTINCT FROM EXCLUDED.connected_account_id",
            workspace, [c.toolkit for c in active], [c.connected_account_id for c in active],
        )

    # --- cache access (a broken Redis degrades to asking Composio, never to an error) ------

    async def _cache_get(self, kind: str, workspace: str) -> Any:
        try:
            return await self._cache.get(kind, workspace)
        except cache_errors() as exc:
            log.warning("registry_cache_unavailable", op="get", error=str(exc))
            return None

    async def _cache_set(self, kind: str, workspace: str, value: Any, ttl: float) -> None:
        try:
            await self._cache.set(kind, workspace, value=value, ttl=ttl)
        except cache_errors() as exc:
            log.warning("registry_cache_unavailable", op="set", error=str(exc))

    async def _cache_set_if_current(self, kind: str, workspace: str, value: Any, ttl: float, generation: int) -> None:
        if self._generation.get(workspace, 0) != generation:
            return
        await self._cache_set(kind, workspace, value, ttl)
        if self._generation.get(workspace, 0) != generation:
            # An invalidation landed while we were writing; its delete may have gone first.
            await self._cache_delete(kind, workspace)

    async def _cache_delete(self, kind: str, workspace: str) -> None:
        try:
            await self._cache.delete(kind, workspace)
        except cache_errors() as exc:
            log.warning("registry_cache_unavailable", op="delete", error=str(exc))

