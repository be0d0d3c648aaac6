"""`lucy serve` and `lucy migrate`: resolve the database, migrate, run the web server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from lucy.cache import make_cache
from lucy.config import Settings
from lucy.db.embedded import EmbeddedPostgres
from lucy.db.migrate import migrate_dsn
from lucy.deps import Deps
from lucy.log import get_logger
from lucy.web.metrics import Metrics

log = get_logger("lucy.serve")


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
    from lucy.db.pool import create_pool

    stop = stop or _stop_on_signals()
    async with database(settings) as dsn:
        applied = await migrate_dsn(dsn)
        if applied:
            log.info("migrations applied", count=len(applied))
        pool = await create_pool(dsn)
        cache = make_cache(settings.redis_url)
        deps = Deps(settings=settings, pool=pool, cache=cache, metrics=Metrics())
        try:
            await _run_web(deps, stop)
        finally:
            await cache.close()
            await pool.close()


async def _run_web(deps: Deps, stop: asyncio.Event) -> None:
    from aiohttp import web

    from lucy.web.server import build_app

    if not deps.settings.slack_configured:
        log.warning(
            "Slack is not configured: set SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
            "SLACK_CLIENT_SECRET (several); serving health and metrics only"
        )
    app = build_app(deps.metrics, deps.pool)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=deps.settings.port)
    await site.start()
    log.info("lucy is listening", port=deps.settings.port)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
