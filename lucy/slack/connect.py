"""``/lucy-connect [app]`` and ``GET /integrations/callback`` (where Composio sends people after OAuth).

The callback never trusts its query parameters: it asks Composio (through ``Connections``) whether
the account is ACTIVE and belongs to the workspace, and only then tells the waiting threads and
carries on with their requests. The browser gets a small page saying it can close the tab.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lucy.core.inflight import InFlight
from lucy.core.types import Connections, ToolkitConnection
from lucy.errors import LucyError
from lucy.log import get_logger
from lucy.slack.apps import POPULAR, display_name, match_app
from lucy.slack.blocks import Block, connect_blocks, connections_blocks, no_match_blocks, section
from lucy.slack.conversation import Conversations
from lucy.slack.pending import PendingConnections

log = get_logger("lucy.slack.connect")

OFFER_COUNT = 4  # Connect buttons under the overview (each is a Composio link request)
Respond = Callable[..., Awaitable[Any]]


class ConnectCommand:
    """What ``/lucy-connect`` answers, always ephemeral."""

    def __init__(self, connections: Connections, pending: PendingConnections) -> None:
        self._connections = connections
        self._pending = pending

    async def run(self, respond: Respond, *, workspace: str, user: str, channel: str, text: str) -> None:
        try:
            blocks, fallback = await self._answer(workspace, user, channel, text.strip())
        except LucyError as exc:
            log.warning("/lucy-connect failed", error=str(exc))
            await respond(text=exc.user_message, response_type="ephemeral")
            return
        await respond(text=fallback, blocks=blocks, response_type="ephemeral")

    async def _answer(self, workspace: str, user: str, channel: str, query: str) -> tuple[list[Block], str]:
        if not query:
            return await self._overview(workspace, user, channel)
        match = match_app(query, await self._known())
        if match.slug is None:
            offers = await self._links(workspace, user, channel, match.candidates)
            names = ", ".join(display_name(s) for s in match.candidates) or "nothing close"
            return no_match_blocks(query, [(s, offers.get(s)) for s in match.candidates]), (
                f"I don't know an app called {query}. Closest: {names}."
            )
        app = display_name(match.slug)
        connected = {c.toolkit: c.status for c in await self._connections.list_connections(workspace)}
        if connected.get(match.slug) == "active":
            text = f":white_check_mark: *{app}* is already connected to this workspace."
            return [section(text)], f"{app} is already connected."
        url = await self._connections.connect_link(workspace, match.slug)
        await self._pending.park_link(workspace, match.slug, channel, user)
        verb = "Reconnect" if match.slug in connected else "Connect"
        text = f"{verb} *{app}* so I can act in it for this workspace."
        return connect_blocks(match.slug, url, text), f"{verb} {app}: {url}"

    async def _overview(self, workspace: str, user: str, channel: str) -> tuple[list[Block], str]:
        connections = await self._connections.list_connections(workspace)
        active = {c.toolkit for c in connections if c.status == "active"}
        known = set(await self._known())
        popular = [s for s in POPULAR if s in known and s not in active][:OFFER_COUNT]
        links = await self._links(workspace, user, channel, popular)
        offers = [(slug, links[slug]) for slug in popular if slug in links]
        summary = ", ".join(_summary(c) for c in connections) or "no apps connected yet"
        return connections_blocks(connections, offers), f"Connected apps: {summary}."

    async def _known(self) -> list[str]:
        known = self._connections.known_toolkits()
        refresh = getattr(self._connections, "refresh_known_toolkits", None)
        if not known and refresh is not None:  # the list failed to load at start-up: try again now
            known = list(await refresh())
        return known

    async def _links(self, workspace: str, user: str, channel: str, slugs: list[str]) -> dict[str, str]:
        """Connect links for several apps at once; an app whose link fails is simply left out."""

        async def one(slug: str) -> tuple[str, str | None]:
            try:
                url = await self._connections.connect_link(workspace, slug)
            except LucyError as exc:
                log.info("no connect link", toolkit=slug, error=str(exc))
                return slug, None
            await self._pending.park_link(workspace, slug, channel, user)
            return slug, url

        results = await asyncio.gather(*(one(s) for s in slugs))
        return {slug: url for slug, url in results if url}


def _summary(conn: ToolkitConnection) -> str:
    return display_name(conn.toolkit) + ("" if conn.status == "active" else " (not working)")


# --- /integrations/callback ------------------------------------------------------------------------

ClientFor = Callable[[str], Awaitable[Any]]  # workspace → (AsyncWebClient, recipient team id) or None

_WORKSPACE_PARAMS = ("workspace", "workspace_id", "lucy_workspace", "user_id")
_ACCOUNT_PARAMS = ("connected_account_id", "connectedAccountId", "connected_account", "id")


class IntegrationCallback:
    """The aiohttp handler for ``GET /integrations/callback``."""

    def __init__(self, connections: Connections, pending: PendingConnections, conversations: Conversations,
                 client_for: ClientFor, tasks: InFlight) -> None:
        self._connections = connections
        self._pending = pending
        self._conversations = conversations
        self._client_for = client_for
        self._tasks = tasks

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query
        workspace = next((query[k] for k in _WORKSPACE_PARAMS if query.get(k)), None)
        account = next((query[k] for k in _ACCOUNT_PARAMS if query.get(k)), None)
        if not workspace or not account:
            return _page(400, "This link is incomplete", "Go back to Slack and use the Connect button again.")
        try:
            conn = await self._connections.confirm_connection(workspace, account)
        except LucyError as exc:
            log.warning("could not check a connection with Composio", error=str(exc))
            return _page(502, "Couldn't check the connection",
                         "I couldn't reach the integration service. Reload this page in a minute.")
        if conn is None:
            log.info("callback for an account that is not active or not this workspace's", workspace=workspace)
            return _page(400, "Not connected",
                         "The connection didn't go through. Go back to Slack and try the Connect button again.")
        await self._carry_on(workspace, conn.toolkit)
        app = display_name(conn.toolkit)
        return _page(200, f"{app} is connected", "You can close this tab and go back to Slack.")

    async def _carry_on(self, workspace: str, toolkit: str) -> None:
        waiting = await self._pending.take(workspace, toolkit)
        if not waiting:
            return
        found = await self._client_for(workspace)
        if found is None:
            log.warning("no Slack installation for a workspace that connected an app", workspace=workspace)
            return
        client, team_id = found
        for item in waiting:
            self._tasks.spawn(self._conversations.resume(client, item, team_id), name=f"resume-{item.id}")


def _page(status: int, title: str, message: str) -> web.Response:
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{html.escape(title)} · Lucy</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;padding:0 1rem;color:#1d1c1d}}
h1{{font-size:1.5rem}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>
"""
    return web.Response(status=status, text=body, content_type="text/html")
