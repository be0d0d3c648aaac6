"""The aiohttp web application: health, readiness, metrics, and the Slack and integration routes.

``/healthz`` is liveness (the process answers); ``/readyz`` is readiness (the database answers,
migrations are current, and the instance is not shutting down), which is what a load balancer
should route on; ``/metrics`` is the Prometheus text format.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lucy.log import get_logger
from lucy.web.metrics import Metrics

log = get_logger("lucy.web")

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]

READY_TIMEOUT_SECONDS = 2.0  # a database that takes longer than this is "not ready"
PENDING_APPROVALS_SQL = (
    "SELECT count(*) FROM pending_actions WHERE kind = 'approval' AND status = 'pending' AND expires_at > now()"
)


def build_app(
    metrics: Metrics,
    pool: Any | None = None,
    extra_routes: list[Route] | None = None,
    *,
    closing: Callable[[], bool] | None = None,
) -> web.Application:
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_request: web.Request) -> web.Response:
        if closing is not None and closing():
            return web.json_response({"ok": False, "shutting_down": True}, status=503)
        if pool is None:
            return web.json_response({"ok": False, "database": "not configured"}, status=503)
        from lucy.db.migrate import pending

        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS), pool.acquire() as conn:
                waiting = await pending(conn)
        except Exception as exc:  # any database failure means "not ready", with the reason
            return web.json_response({"ok": False, "database": str(exc) or type(exc).__name__}, status=503)
        if waiting:
            return web.json_response({"ok": False, "pending_migrations": waiting}, status=503)
        return web.json_response({"ok": True})

    async def metrics_route(_request: web.Request) -> web.Response:
        if pool is not None:
            await _refresh_pending_approvals(metrics, pool)
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    for method, path, handler in extra_routes or []:
        app.router.add_route(method, path, handler)
    return app


async def _refresh_pending_approvals(metrics: Metrics, pool: Any) -> None:
    """Approvals waiting for a person, counted in PostgreSQL at scrape time.

    Counted there rather than kept in the process, so every instance reports the same truth
    (an approval asked on one instance may be decided on another). On a database error the
    last value stays, and the scrape still succeeds.
    """
    import asyncpg

    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            count = await pool.fetchval(PENDING_APPROVALS_SQL)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.info("could not count pending approvals", error=str(exc) or type(exc).__name__)
        return
    metrics.approvals_pending.set(int(count or 0))
