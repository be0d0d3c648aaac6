"""Connecting apps: Composio connect links, the OAuth callback's confirmation, and app names.

:class:`ComposioConnections` implements :class:`lucy.core.types.Connections` for the Slack layer
(``/lucy-connect``, ``GET /integrations/callback``) and the worker's ``connect_app`` meta-tool.

The callback URL Composio sends the person back to is
``{LUCY_PUBLIC_URL}/integrations/callback?workspace=<id>&toolkit=<slug>`` and Composio appends
``status`` and ``connected_account_id``. None of these are trusted: :meth:`confirm_connection`
asks Composio for that account *filtered by the workspace's user_id*, so an account id from
another workspace (or a made-up one) confirms nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from urllib.parse import urlencode

from lucy.core.types import ToolkitConnection
from lucy.errors import IntegrationError
from lucy.integrations.composio_client import ComposioAPI, ConnectedAccount
from lucy.integrations.registry import IntegrationRegistry
from lucy.log import get_logger

log = get_logger("lucy.integrations.connections")

CALLBACK_PATH = "/integrations/callback"
_ACCOUNT_ID = re.compile(r"^ca_[A-Za-z0-9_-]{1,64}$")
_PENDING = frozenset({"INITIALIZING", "INITIATED"})

# How people name apps that their slugs do not spell (matched after lower-casing and dropping
# spaces, dashes and underscores).
ALIASES: dict[str, str] = {
    "gh": "github",
    "gcal": "googlecalendar",
    "calendar": "googlecalendar",
    "gdrive": "googledrive",
    "drive": "googledrive",
    "gdocs": "googledocs",
    "docs": "googledocs",
    "gtasks": "googletasks",
    "tasks": "googletasks",
    "googlemail": "gmail",
    "yt": "youtube",
    "fb": "facebook",
    "ig": "instagram",
    "insta": "instagram",
    "perplexity": "perplexityai",
}


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-.]+", "", text.strip().lower())


def match_toolkit(text: str, known: Iterable[str]) -> str | None:
    """The toolkit slug ``text`` names ('GitHub', 'gh', 'google calendar', 'gmail'), or None.

    Exact (ignoring case, spaces, dashes and underscores), then an alias, then a unique prefix.
    With no known list, a well-formed slug is taken as is.
    """
    slugs = sorted({k.lower() for k in known})
    wanted = _norm(text)
    if not wanted:
        return None
    by_norm = {_norm(s): s for s in slugs}
    if wanted in by_norm:
        return by_norm[wanted]
    alias = ALIASES.get(wanted)
    if alias is not None and (alias in slugs or not slugs):
        return alias
    starts = [s for n, s in by_norm.items() if n.startswith(wanted)]
    if len(starts) == 1 and len(wanted) >= 3:
        return starts[0]
    if not slugs and re.fullmatch(r"[a-z0-9_]{2,64}", text.strip().lower()):
        return text.strip().lower()
    return None


class ComposioConnections:
    """The :class:`~lucy.core.types.Connections` port over Composio and the registry.

    Args:
        client: Composio.
        registry: the workspace → toolkits registry (invalidated on connect and disconnect).
        public_url: ``LUCY_PUBLIC_URL``; without it Composio shows its own "connected" page and
            the registry notices the new account on its next sync.
        toolkits: toolkit slugs known before :meth:`refresh_known_toolkits` has run.
        confirm_attempts: how often to look again when the account is still INITIATED (the
            callback can arrive a moment before Composio marks the account ACTIVE).
    """

    def __init__(
        self,
        client: ComposioAPI,
        registry: IntegrationRegistry,
        *,
        public_url: str | None,
        toolkits: Iterable[str] = (),
        confirm_attempts: int = 3,
        confirm_interval: float = 0.5,
    ) -> None:
        self._client = client
        self._registry = registry
        self._public_url = public_url.rstrip("/") if public_url else None
        self._toolkits: set[str] = {t.lower() for t in toolkits}
        self._toolkits_loaded = False
        self._confirm_attempts = confirm_attempts
        self._confirm_interval = confirm_interval
        self._refresh_lock = asyncio.Lock()

    # --- app names ---------------------------------------------------------------------------

    def known_toolkits(self) -> list[str]:
        return sorted(self._toolkits)

    async def refresh_known_toolkits(self) -> list[str]:
        """Load Composio's toolkit list once (a failure keeps what we had, and is logged)."""
        async with self._refresh_lock:
            if not self._toolkits_loaded:
                try:
                    items = await self._client.list_toolkits()
                except IntegrationError as exc:
                    log.warning("toolkits_unavailable", error=str(exc))
                    return self.known_toolkits()
                self._toolkits |= {str(i["slug"]).lower() for i in items if i.get("slug")}
                self._toolkits_loaded = True
        return self.known_toolkits()

    async def resolve_toolkit(self, text: str) -> str | None:
        """The toolkit ``text`` names, loading Composio's list first if needed."""
        found = match_toolkit(text, self._toolkits)
        if found is None and not self._toolkits_loaded:
            await self.refresh_known_toolkits()
            found = match_toolkit(text, self._toolkits)
        return found

    # --- the Connections port --------------------------------------------------------------

    async def list_connections(self, workspace: str) -> list[ToolkitConnection]:
        """Active connections (from Composio, cached) and the ones that lapsed (from the record)."""
        active = await self._registry.active(workspace)
        lapsed = [
            row for row in await self._registry.known_rows(workspace)
            if row.status == "inactive" and row.toolkit not in active.toolkits
        ]
        return sorted([*active.connections, *lapsed], key=lambda c: c.toolkit)

    def callback_url(self, workspace: str, toolkit: str) -> str | None:
        if self._public_url is None:
            return None
        return f"{self._public_url}{CALLBACK_PATH}?" + urlencode({"workspace": workspace, "toolkit": toolkit})

    async def connect_link(self, workspace: str, toolkit: str) -> str:
        """A Composio Connect Link for ``toolkit`` (raises IntegrationError with a user sentence)."""
        slug = await self.resolve_toolkit(toolkit)
        if slug is None:
            raise IntegrationError(
                f"unknown toolkit {toolkit!r}",
                user_message=(
                    f"I don't know an app called {toolkit!r}. Try its name as Composio spells it, like github."
                ),
            )
        callback = self.callback_url(workspace, slug)
        if callback is None:
            log.warning("connect_without_callback", hint="set LUCY_PUBLIC_URL so people land back in Lucy")
        link = await self._client.create_connect_link(workspace, slug, callback_url=callback)
        log.info("connect_link_created", workspace=workspace, toolkit=slug,
                 connected_account_id=link.connected_account_id)
        return link.url

    async def confirm_connection(self, workspace: str, connected_account_id: str) -> ToolkitConnection | None:
        """Ask Composio whether ``connected_account_id`` is ACTIVE *and* belongs to ``workspace``."""
        if not _ACCOUNT_ID.match(connected_account_id or ""):
            log.warning("connection_confirm_rejected", workspace=workspace, reason="malformed account id")
            return None
        account = await self._account_of(workspace, connected_account_id)
        for _ in range(self._confirm_attempts - 1):
            if account is None or account.status not in _PENDING:
                break
            await asyncio.sleep(self._confirm_interval)
            account = await self._account_of(workspace, connected_account_id)
        if account is None or not account.active:
            log.warning(
                "connection_confirm_rejected", workspace=workspace, connected_account_id=connected_account_id,
                reason="not this workspace's account" if account is None else f"status {account.status}",
            )
            return None
        connection = await self._registry.record_connection(workspace, account)
        log.info("connection_confirmed", workspace=workspace, toolkit=account.toolkit,
                 connected_account_id=account.id)
        return connection

    async def _account_of(self, workspace: str, account_id: str) -> ConnectedAccount | None:
        # user_ids=[workspace] is applied by Composio: another workspace's account is not returned.
        accounts = await self._client.list_connected_accounts(workspace, statuses=(), account_ids=[account_id])
        return next((a for a in accounts if a.id == account_id), None)

    async def forget_workspace(self, workspace: str) -> None:
        """After an uninstall: drop the cached list of the workspace's apps (its rows are deleted
        with the rest of the workspace), so a reinstall starts from what Composio says."""
        await self._registry.invalidate(workspace)

    async def disconnect(self, workspace: str, toolkit: str) -> bool:
        """Delete the workspace's accounts on ``toolkit`` at Composio; False if there were none."""
        slug = match_toolkit(toolkit, self._toolkits) or toolkit.lower()
        accounts = await self._client.list_connected_accounts(workspace, toolkits=[slug], statuses=())
        for account in accounts:
            await self._client.delete_connected_account(account.id)
        await self._registry.record_disconnection(workspace, slug)
        log.info("toolkit_disconnected", workspace=workspace, toolkit=slug, accounts=len(accounts))
        return bool(accounts)
