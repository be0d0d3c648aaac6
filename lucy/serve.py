"""`lucy serve` and `lucy migrate`: resolve the database, migrate, run the web server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from lucy.cache import make_cache
from lucy.config import Settings
from lucy.db.embedded import EmbeddedPostgres
from lucy.db.migrate import migrate_dsn
from lucy.deps import Deps
from lucy.log import get_logger
from lucy.ratelimit import RateLimiter
from lucy.web.metrics import Metrics

log = get_logger("lucy.serve")

ACK_POOL_SIZE = 8  # connections for event claims alone (two short INSERTs per event)


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[str]:
    """The DSN to use: ``DATABASE_URL``, else an embedded PostgreSQL in ``LUCY_DATA_DIR``."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    dsn = await asyncio.to_thread(embedded.start)
    log.warning(
        "DATABASE_URL is not set: running on an embedded PostgreSQL (development only)",
        data_dir=str(embedded.pgdata),
    )
    try:
        yield dsn
    finally:
        await asyncio.to_thread(embedded.stop)


def run_migrate(settings: Settings) -> int:
    async def main() -> None:
        async with database(settings) as dsn:
            applied = await migrate_dsn(dsn)
            print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))

    asyncio.run(main())
    return 0


def run_serve(settings: Settings) -> int:
    asyncio.run(serve(settings))
    return 0


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set)."""
    stop = stop or _stop_on_signals()
    # The heavy SDKs cost seconds of CPU to import: start now, in a thread, while the database is
    # prepared (migrations and pools wait on I/O); _build_slack then finds them imported.
    sdks = asyncio.ensure_future(asyncio.to_thread(_import_sdks)) if settings.slack_configured else None
    try:
        async with database(settings) as dsn:
            await _serve_on(settings, dsn, stop, sdks)
    finally:
        if sdks is not None and not sdks.done():
            await asyncio.wait([sdks])  # a thread cannot be cancelled: let the import end before returning


def _import_sdks() -> None:
    from lucy.core.llm import load_litellm

    load_litellm()
    importlib.import_module("composio_client")
    importlib.import_module("lucy.slack.app")  # slack_bolt and slack_sdk


async def _serve_on(settings: Settings, dsn: str, stop: asyncio.Event, sdks: asyncio.Future[None] | None) -> None:
    from lucy.db.pool import create_pool

    applied = await migrate_dsn(dsn)
    if applied:
        log.info("migrations applied", count=len(applied))
    pool = await create_pool(dsn, max_size=settings.db_pool_size)
    ack_pool: Any = None
    records_pool: Any = None
    cache = make_cache(settings.redis_url, settings.redis_prefix)
    limiter = RateLimiter.from_settings(settings)
    try:
        # Event claims, thread messages and audit rows commit without waiting for the WAL flush
        # (see create_pool); a PostgreSQL crash can lose the last fraction of a second of them.
        # A lost claim matters only if Slack redelivered an event it already got a 200 for.
        ack_pool = await create_pool(dsn, min_size=2, max_size=ACK_POOL_SIZE, synchronous_commit=False,
                                     reset_on_release=False)
        records_pool = await create_pool(dsn, min_size=2, max_size=max(2, settings.db_pool_size // 2),
                                         synchronous_commit=False)
        deps = Deps(settings=settings, pool=pool, cache=cache, metrics=Metrics(), limiter=limiter, ack_pool=ack_pool,
                    records_pool=records_pool)
        deps.metrics.turns_in_flight.set_function(lambda: len(deps.inflight))
        deps.metrics.cache_degraded.set_function(lambda: 1.0 if cache.degraded else 0.0)
        if sdks is not None:
            await sdks
        await _run_web(deps, stop)
    finally:
        # Last, after every answer in progress has finished or been cut short.
        await limiter.close()
        await cache.close()
        for extra in (ack_pool, records_pool):
            if extra is not None:
                await extra.close()
        await pool.close()
        log.info("stopped")


async def _run_web(deps: Deps, stop: asyncio.Event) -> None:
    from aiohttp import web

    from lucy.web.server import build_app

    slack: Any = None
    close_integrations: Callable[[], Awaitable[None]] | None = None
    if not deps.settings.slack_configured:
        log.warning(
            "Slack is not configured: set SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
            "SLACK_CLIENT_SECRET (several); serving health and metrics only"
        )
    else:
        slack, close_integrations = await _build_slack(deps)
        gate = slack.conversations.gate
        deps.metrics.turns_queued.set_function(lambda: gate.waiting)
        deps.metrics.event_loop_lag.set_function(lambda: gate.lag)
        deps.metrics.turn_limit.set_function(lambda: gate.limit)
    # Start-up leaves ~600,000 long-lived objects (litellm's model tables, the SDKs' modules); every
    # full garbage collection would walk them all and stall the event loop for ~0.5 s under load.
    gc.collect()
    gc.freeze()
    app = build_app(deps.metrics, deps.pool, extra_routes=slack.routes if slack is not None else None,
                    closing=lambda: deps.inflight.closing)
    # Handlers only ack (turns run in Deps.inflight), so the server needs little time to close.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=deps.settings.port)
    await site.start()
    if slack is not None:
        await slack.start()  # Socket Mode connects here (when SLACK_APP_TOKEN is set)
    log.info("lucy is listening", port=deps.settings.port)
    try:
        await stop.wait()
    finally:
        await _shut_down(deps, runner, slack, close_integrations)


async def _shut_down(deps: Deps, runner: Any, slack: Any,
                     close_integrations: Callable[[], Awaitable[None]] | None) -> None:
    """SIGTERM: refuse new events (503, /readyz fails), finish answers in progress within
    ``LUCY_SHUTDOWN_GRACE_SECONDS`` (the rest tell their threads), then close the server and clients."""
    grace = deps.settings.shutdown_grace_seconds
    log.info("shutting down", grace_seconds=grace, in_flight=len(deps.inflight))
    deps.inflight.closing = True  # /slack/events answers 503 and /readyz fails from now on
    try:
        if slack is not None:
            await slack.stop(drain_seconds=grace)  # Socket Mode disconnects first
        else:
            await deps.inflight.drain(grace)
    finally:
        await runner.cleanup()
        if close_integrations is not None:
            await close_integrations()


async def _build_slack(deps: Deps) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The agent, the integrations layer and the Slack runtime around them."""
    from lucy.core.agent import AgentDeps, AgentLimits, LucyAgent
    from lucy.core.llm import LiteLLM, LLMConfig
    from lucy.core.memory import ThreadMemory
    from lucy.integrations.approval_runner import history_of, install_guards
    from lucy.integrations.composio_client import client_from_settings
    from lucy.integrations.worker import build_integrations
    from lucy.slack.app import build_slack

    settings = deps.settings
    # Importing the Composio SDK and litellm takes seconds of CPU: keep it off the event loop.
    client = await asyncio.to_thread(client_from_settings, settings)
    llm = await asyncio.to_thread(LiteLLM, LLMConfig.from_settings(settings))
    # metrics: tool executions by status and the connected-apps cache hit ratio on /metrics.
    records = deps.records_pool or deps.pool
    integrations = build_integrations(settings, deps.pool, deps.cache, client=client, metrics=deps.metrics,
                                      audit_pool=records, llm=llm)
    await integrations.connections.refresh_known_toolkits()  # for /lucy-connect's loose matching
    memory = ThreadMemory(records)
    # Approval policy, injection containment and the tool rate limit in front of the worker; the
    # turn rate limit is deps.limiter's too (lucy.slack.conversation), so both share one budget store.
    guards = install_guards(settings, deps.pool, integrations, history=history_of(memory.load), limiter=deps.limiter)
    if deps.limiter is None:
        deps.limiter = guards.limiter
    agent = LucyAgent(AgentDeps(
        llm=llm, toolset=integrations.toolset, executor=integrations.worker, memory=memory,
        apps=_ConnectedApps(integrations.registry), catalog=integrations.toolset,
        limits=AgentLimits.from_settings(settings), metrics=deps.metrics,
    ))
    runtime = await build_slack(deps, agent=agent, connections=integrations.connections, memory=memory,
                                guards=guards)

    async def close() -> None:
        await integrations.aclose()
        await guards.aclose()  # closes the rate limiter only if it made it
        await llm.aclose()

    return runtime, close


class _ConnectedApps:
    """The agent's ConnectedApps port over the registry (which answers with a frozenset)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    async def active_toolkits(self, workspace: str) -> list[str]:
        return sorted(await self._registry.active_toolkits(workspace))


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
