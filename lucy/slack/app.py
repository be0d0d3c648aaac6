"""Build Lucy's Slack side: the Bolt ``AsyncApp``, its web routes, and Socket Mode.

``serve`` calls :func:`build_slack` once and gets a :class:`SlackRuntime`: ``routes`` go on the one
aiohttp server (``POST /slack/events``, ``GET /slack/install``, ``GET /slack/oauth_redirect``,
``GET /integrations/callback``), and ``start()``/``stop()`` run Socket Mode when ``SLACK_APP_TOKEN``
is set (then ``/slack/events`` is not served: events come over the socket).

Installs: ``SLACK_CLIENT_ID`` + ``SLACK_CLIENT_SECRET`` → multi-workspace OAuth with PostgreSQL
stores; otherwise ``SLACK_BOT_TOKEN`` → one workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from lucy.config import Settings, require
from lucy.core.inflight import InFlight
from lucy.core.types import Agent, Connections
from lucy.deps import Deps
from lucy.errors import ConfigError
from lucy.integrations.approval_runner import Guards
from lucy.log import get_logger
from lucy.slack.approval_flow import ApprovalFlow
from lucy.slack.connect import ConnectCommand, IntegrationCallback
from lucy.slack.conversation import Conversations, ThreadMemory
from lucy.slack.dedupe import ClaimEvents, Claims
from lucy.slack.greeting import Greeter
from lucy.slack.ids import split_workspace_id, workspace_id
from lucy.slack.installation_store import PgAuthorize, PgInstallationStore, PgOAuthStateStore, forget_workspace
from lucy.slack.listeners import Handlers, register_listeners
from lucy.slack.pending import PendingConnections
from lucy.web.server import Route

log = get_logger("lucy.slack")

SLACK_API_URL = "https://slack.com/api/"
# Keep in step with manifest.yml's oauth_config.scopes.bot (tests/test_slack_app.py checks it).
BOT_SCOPES = [
    "app_mentions:read", "assistant:write", "chat:write", "commands", "im:history", "im:read", "im:write",
    "channels:history", "groups:history", "reactions:write", "users:read",
]
RATE_LIMIT_RETRIES = 6  # 429s are waited out (Retry-After), not dropped
CLIENT_TIMEOUT = 30  # seconds per Web API call
PRUNE_EVERY = 3600.0
DRAIN_SECONDS = 30.0


def api_url(settings: Settings) -> str:
    url = settings.slack_api_url or SLACK_API_URL
    return url if url.endswith("/") else url + "/"


def make_client(settings: Settings, token: str | None = None,
                session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """A Web API client on ``SLACK_API_URL`` that waits out rate limits and retries lost connections.

    Without ``session`` slack_sdk opens a new HTTP session, and so a new TCP (and TLS) connection,
    for every call; :meth:`SlackRuntime.start` gives the app one shared session instead.
    """
    return AsyncWebClient(
        token=token, base_url=api_url(settings), timeout=CLIENT_TIMEOUT, session=session,
        retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=2),
                        AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES)],
    )


def _authorization_url(settings: Settings) -> str:
    parts = urlsplit(api_url(settings))
    return f"{parts.scheme}://{parts.netloc}/oauth/v2/authorize"


@dataclass
class SlackRuntime:
    """What ``serve`` runs: web routes, plus the Socket Mode connection when configured."""

    app: AsyncApp
    routes: list[Route]
    conversations: Conversations
    tasks: InFlight
    claims: Claims
    app_token: str | None = None
    _socket: Any = None
    _pruner: asyncio.Task[None] | None = field(default=None, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    # Approvals' periodic work (expiry, orphaned approvals, audit retention); runs next to the pruner.
    sweeper: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    async def start(self) -> None:
        # One keep-alive session for every Web API call of this process: Bolt's per-request
        # clients copy ``app.client.session``, and a connection per call cost ~1 ms of CPU each
        # (4-6 calls a turn) plus a TLS handshake with slack.com. Its timeout is the per-call
        # bound: slack_sdk applies ``timeout`` only to sessions it opens itself.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT))
        self.app.client.session = self._session
        if self.app_token is not None:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            # Built here, not earlier: the client opens its aiohttp session in the running loop.
            self._socket = AsyncSocketModeHandler(self.app, app_token=self.app_token)
            await self._socket.connect_async()
            log.info("connected to Slack over Socket Mode")
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever(), name="slack-prune")
        await self.conversations.gate.start()

    async def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Stop taking events, let answers in progress finish within ``drain_seconds``, cut the rest short.

        Socket Mode disconnects first (Slack then sends to the other connections); over HTTP,
        ``/slack/events`` answers 503 from now on (``InFlight.closing``). A turn still running
        after the grace period is cancelled and tells its thread to ask again.
        """
        self.tasks.closing = True
        if self._socket is not None:
            try:
                await self._socket.close_async()
            except (OSError, RuntimeError) as exc:  # a dead connection must not stop the drain
                log.warning("closing Socket Mode failed", error=str(exc))
            self._socket = None
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        running = len(self.tasks)
        if running:
            log.info("finishing answers in progress", count=running, grace_seconds=drain_seconds)
        unfinished = await self.tasks.drain(drain_seconds)
        await self.conversations.gate.close()
        if self._session is not None:
            self.app.client.session = None
            await self._session.close()
            self._session = None
        if unfinished:
            log.warning("cancelled unfinished answers at shutdown; their threads were told", count=len(unfinished))

    async def idle(self) -> None:
        """Wait until every answer in progress is written (for tests and benchmarks)."""
        # InFlight exposes a count, not a completion event; this is for tests and benchmarks only.
        while len(self.tasks):  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    async def _prune_forever(self) -> None:
        # One task, so stop() cancelling the pruner stops the approval sweeper too.
        if self.sweeper is not None:
            await asyncio.gather(self._prune_claims_forever(), self.sweeper())
        else:
            await self._prune_claims_forever()

    async def _prune_claims_forever(self) -> None:
        while True:
            try:
                await self.claims.prune()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # e.g. the pool is closing
                log.warning("could not prune processed events", error=str(exc))
            await asyncio.sleep(PRUNE_EVERY)


def _check(settings: Settings) -> None:
    if not settings.slack_configured:
        raise ConfigError("Slack is not configured: set SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID "
                          "and SLACK_CLIENT_SECRET (several workspaces).")
    if not settings.socket_mode:
        require(settings, "SLACK_SIGNING_SECRET")


async def build_slack(deps: Deps, *, agent: Agent, connections: Connections, memory: ThreadMemory,
                      streaming: bool = True, guards: Guards | None = None) -> SlackRuntime:
    """Build the Bolt app and everything around it. Makes no network call.

    ``guards`` (:func:`lucy.integrations.approval_runner.install_guards`) wires approvals: the
    request messages, Approve / Deny, the expiry sweeper and ``/lucy-policy``.
    """
    settings = deps.settings
    _check(settings)
    claims = Claims(deps.ack_pool or deps.pool)
    pending = PendingConnections(deps.pool)
    tasks = deps.inflight
    store = PgInstallationStore(deps.pool, settings.slack_client_id) if settings.multi_workspace else None
    app = _bolt_app(settings, deps, claims, store)
    conversations = Conversations(deps, agent=agent, connections=connections, memory=memory, claims=claims,
                                  pending=pending, tasks=tasks, streaming=streaming)

    async def uninstall(context: AsyncBoltContext) -> None:
        ws = workspace_id(context.enterprise_id, context.team_id)
        if store is not None:
            await store.async_delete_all(enterprise_id=context.enterprise_id, team_id=context.team_id)
        await forget_workspace(deps.pool, ws)
        await connections.forget_workspace(ws)

    async def revoke(event: dict[str, Any], context: AsyncBoltContext) -> None:
        tokens = event.get("tokens") or {}
        if store is None:
            if tokens.get("bot"):
                log.error("SLACK_BOT_TOKEN was revoked: reinstall the app and set the new token")
            return
        for user in tokens.get("oauth") or []:
            await store.async_delete_installation(enterprise_id=context.enterprise_id, team_id=context.team_id,
                                                  user_id=user)
        if tokens.get("bot"):
            await store.async_delete_bot(enterprise_id=context.enterprise_id, team_id=context.team_id)

    async def client_for(workspace: str) -> tuple[AsyncWebClient, str | None] | None:
        enterprise, team = split_workspace_id(workspace)
        if store is None:
            return app.client, team or enterprise
        bot = await store.async_find_bot(enterprise_id=enterprise, team_id=team)
        return (make_client(settings, bot.bot_token, app.client.session), team or enterprise) if bot else None

    approvals = None if guards is None else ApprovalFlow(
        guards, conversations=conversations, agent=agent, client_for=client_for, tasks=tasks, pool=deps.pool,
        known_toolkits=connections.known_toolkits)
    conversations.approvals = approvals
    handlers = Handlers(conversations=conversations, connect=ConnectCommand(connections, pending),
                        greeter=Greeter(deps.pool), tasks=tasks, uninstall=uninstall, revoke=revoke,
                        approvals=approvals)
    register_listeners(app, handlers)

    callback = IntegrationCallback(connections, pending, conversations, client_for, tasks)
    routes = _routes(app, callback, events=not settings.socket_mode, closing=lambda: tasks.closing,
                     ack_seconds=deps.metrics.ack_seconds)
    return SlackRuntime(app=app, routes=routes, conversations=conversations, tasks=tasks, claims=claims,
                        app_token=settings.slack_app_token,
                        sweeper=approvals.sweep_forever if approvals is not None else None)


class _QuietTokenWarning(logging.Filter):
    """Drops Bolt's start-up warning that ``SLACK_BOT_TOKEN`` "will be unused".

    AsyncApp reads the variable itself even when given a client, and warns that the client wins.
    Lucy passes everything explicitly (the client already holds the token), so in every
    deployment with the variable set the warning says nothing but looks like a misconfiguration.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_BOLT_APP_LOG = logging.getLogger("slack_bolt.AsyncApp")
if not any(isinstance(f, _QuietTokenWarning) for f in _BOLT_APP_LOG.filters):
    _BOLT_APP_LOG.addFilter(_QuietTokenWarning())


def _bolt_app(settings: Settings, deps: Deps, claims: Claims, store: PgInstallationStore | None) -> AsyncApp:
    # Everything is passed explicitly: AsyncApp would otherwise read SLACK_* variables itself.
    common: dict[str, Any] = {
        "name": "lucy",
        "signing_secret": settings.slack_signing_secret or "",
        "before_authorize": ClaimEvents(claims, deps.metrics),
        "request_verification_enabled": not settings.socket_mode or bool(settings.slack_signing_secret),
        # Listeners only parse, claim and hand the turn to Deps.inflight (milliseconds), so Slack's
        # response can wait for them: then no work is left in tasks that nobody keeps or drains.
        "process_before_response": True,
    }
    if store is None:
        return AsyncApp(client=make_client(settings, settings.slack_bot_token), **common)
    assert settings.slack_client_id is not None and settings.slack_client_secret is not None
    oauth = AsyncOAuthSettings(
        client_id=settings.slack_client_id, client_secret=settings.slack_client_secret, scopes=BOT_SCOPES,
        redirect_uri=f"{settings.public_url.rstrip('/')}/slack/oauth_redirect" if settings.public_url else None,
        install_path="/slack/install", redirect_uri_path="/slack/oauth_redirect",
        install_page_rendering_enabled=False, authorization_url=_authorization_url(settings),
        installation_store=store, state_store=PgOAuthStateStore(deps.pool),
    )
    # An AsyncAuthorize instance (unlike a plain function) may be combined with oauth_settings.
    authorize: Any = PgAuthorize(store)
    return AsyncApp(client=make_client(settings), oauth_settings=oauth, authorize=authorize, **common)


def _routes(app: AsyncApp, callback: IntegrationCallback, *, events: bool,
            closing: Callable[[], bool] = lambda: False, ack_seconds: Any = None) -> list[Route]:
    async def slack_events(request: web.Request) -> web.StreamResponse:
        if closing():
            # Shutting down: take nothing new. Slack retries an event that got an error, and a load
            # balancer (which sees /readyz fail now) sends the retry to another instance.
            return web.Response(status=503, text="Lucy is restarting; please retry.", headers={"Retry-After": "1"})
        started = time.perf_counter()
        response = await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))
        if ack_seconds is not None:
            ack_seconds.observe(time.perf_counter() - started)
        return response

    async def install(request: web.Request) -> web.StreamResponse:
        if app.oauth_flow is None:
            return web.Response(status=404, text="Lucy runs for one workspace (SLACK_BOT_TOKEN): nothing to install.")
        return await to_aiohttp_response(await app.oauth_flow.handle_installation(await to_bolt_request(request)))

    async def oauth_redirect(request: web.Request) -> web.StreamResponse:
        if app.oauth_flow is None:
            return web.Response(status=404, text="Lucy runs for one workspace (SLACK_BOT_TOKEN).")
        return await to_aiohttp_response(await app.oauth_flow.handle_callback(await to_bolt_request(request)))

    routes: list[Route] = [
        ("GET", "/slack/install", install),
        ("GET", "/slack/oauth_redirect", oauth_redirect),
        ("GET", "/integrations/callback", callback.handle),
    ]
    if events:
        routes.insert(0, ("POST", "/slack/events", slack_events))
    return routes
