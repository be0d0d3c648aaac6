"""The aiohttp web application: health, metrics, and (later) Slack and integration routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lucy.web.metrics import Metrics

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


def build_app(metrics: Metrics, pool: Any | None = None, extra_routes: list[Route] | None = None) -> web.Application:
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_request: web.Request) -> web.Response:
        if pool is None:
            return web.json_response({"ok": False, "database": "not configured"}, status=503)
        from lucy.db.migrate import pending

        try:
            async with pool.acquire() as conn:
                waiting = await pending(conn)
        except Exception as exc:  # any database failure means "not ready", with the reason
            return web.json_response({"ok": False, "database": str(exc)}, status=503)
        if waiting:
            return web.json_response({"ok": False, "pending_migrations": waiting}, status=503)
        return web.json_response({"ok": True})

    async def metrics_route(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_route)
    for method, path, handler in extra_routes or []:
        app.router.add_route(method, path, handler)
    return app
