"""Async access to Composio through its official SDK.

We drive ``composio_client.AsyncComposio`` — the generated v3.1 client that the high-level
``composio`` 0.30 SDK itself sits on — rather than the sync ``composio.Composio`` in a thread:

* it is natively async, so nothing blocks the event loop and a cancelled call really stops;
* it has no telemetry thread (the high-level SDK's is on by default and has no off switch that
  survives ``run_in_executor``), no "latest needs dangerously_skip_version_check" trap, and
  ``tools.list`` exposes ``cursor`` so a toolkit can be fetched whole;
* it keeps the SDK's request encoding, auth headers and the https-or-loopback credential check.

We turn the client's own retries off and retry here instead, because only we know which calls
are safe to repeat: reads retry with backoff and honour ``Retry-After`` within a deadline;
executes, connect links and auth-config creation run exactly once (they are not idempotent).
Every call has a timeout, and every failure leaves as a :class:`~lucy.errors.LucyError` whose
``user_message`` a person can read.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lucy.config import Settings, describe, require
from lucy.errors import (
    ConfigError,
    ConnectionMissingError,
    IntegrationAuthError,
    IntegrationError,
    IntegrationRateLimitedError,
    IntegrationTimeoutError,
    IntegrationUnavailableError,
    LucyError,
    ToolExecutionError,
    ToolNotFoundError,
)
from lucy.log import get_logger, redact_text

log = get_logger("lucy.integrations.composio")

JSON = dict[str, Any]
DEFAULT_BASE_URL = "https://backend.composio.dev"
TOOLS_PAGE_LIMIT = 1000  # the API's maximum page size
ACCOUNTS_PAGE_LIMIT = 100
MAX_PAGES = 100  # a server that keeps handing out cursors must not keep us looping forever
NO_CONNECTED_ACCOUNT = 1803  # Composio's error code for "No connected account found"


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectedAccount:
    id: str
    toolkit: str
    status: str  # INITIALIZING | INITIATED | ACTIVE | FAILED | EXPIRED | INACTIVE | REVOKED
    user_id: str | None = None  # deprecated in responses; we filter with user_ids= instead
    auth_config_id: str | None = None
    status_reason: str | None = None
    is_disabled: bool = False
    created_at: str = ""
    updated_at: str = ""

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE" and not self.is_disabled

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> ConnectedAccount:
        toolkit = item.get("toolkit") or {}
        auth_config = item.get("auth_config") or {}
        return cls(
            id=str(item["id"]),
            toolkit=str(toolkit.get("slug", "")).lower(),
            status=str(item.get("status", "")).upper(),
            user_id=item.get("user_id"),
            auth_config_id=auth_config.get("id"),
            status_reason=item.get("status_reason"),
            is_disabled=bool(item.get("is_disabled", False)),
            created_at=str(item.get("created_at") or ""),
            updated_at=str(item.get("updated_at") or ""),
        )


@dataclass(frozen=True)
class ConnectLink:
    url: str
    connected_account_id: str
    expires_at: str | None = None


@dataclass(frozen=True)
class Execution:
    """What Composio answered for one tool execution (HTTP 200)."""

    successful: bool
    data: Any
    error: str | None = None
    log_id: str | None = None


class ComposioAPI(Protocol):
    """The Composio operations Lucy uses. :class:`ComposioClient` is the real adapter; tests run it
    against ``tests/fakes/fake_composio.py`` on 127.0.0.1."""

    def version_for(self, toolkit: str) -> str | None: ...

    async def list_tools(self, *, toolkit: str | None = None, slugs: Sequence[str] = ()) -> list[JSON]: ...

    async def get_tool(self, slug: str) -> JSON: ...

    async def execute(
        self,
        slug: str,
        arguments: JSON,
        *,
        user_id: str,
        version: str | None = None,
        connected_account_id: str | None = None,
        time_limit: float | None = None,
    ) -> Execution: ...

    async def list_connected_accounts(
        self,
        user_id: str,
        *,
        toolkits: Sequence[str] = (),
        statuses: Sequence[str] = ("ACTIVE",),
        account_ids: Sequence[str] = (),
    ) -> list[ConnectedAccount]: ...

    async def get_connected_account(self, account_id: str) -> ConnectedAccount | None: ...

    async def delete_connected_account(self, account_id: str) -> None: ...

    async def auth_config_id(self, toolkit: str) -> str: ...

    async def create_connect_link(self, user_id: str, toolkit: str, *, callback_url: str | None) -> ConnectLink: ...

    async def list_toolkits(self) -> list[JSON]: ...

    async def aclose(self) -> None: ...


# --- failures ----------------------------------------------------------------------------------


@dataclass
class _Transient(Exception):
    """A failure worth retrying (for reads): carries the error to raise if we give up."""

    error: LucyError
    retry_after: float | None = None


class _NotFound(IntegrationError):
    """404 for something that is not a tool (callers usually turn it into ``None``)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def backoff(self, attempt: int) -> float:
        # Same shape as the SDK's: exponential, capped, up to 25% downward jitter.
        delay = min(self.base_delay * (2.0 ** (attempt - 1)), self.max_delay)
        return delay * (1 - random.random() * 0.25)


def _error_body(body: Any) -> JSON:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
    return {}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue  # an HTTP-date; rare from Composio, fall back to our backoff
        if seconds >= 0:
            return seconds
    return None


def _status_failure(op: str, status: int, body: Any, headers: Mapping[str, str]) -> LucyError | _Transient:
    """Map an HTTP error answer to a Lucy error (or a retryable wrapper of one)."""
    err = _error_body(body)
    message = str(err.get("message") or f"HTTP {status}")
    detail = redact_text(f"composio {op}: HTTP {status}: {message}")
    if status in (401, 403):
        return IntegrationAuthError(detail)
    if status in (408, 409, 429) or status >= 500:
        return _server_failure(status, detail, headers)
    return _request_failure(op, status, err, message, detail)


def _server_failure(status: int, detail: str, headers: Mapping[str, str]) -> LucyError | _Transient:
    wait = _retry_after(headers)
    error: LucyError
    if status == 429:
        hint = f" Please try again in {int(wait + 0.999)} seconds." if wait else " Please try again in a minute."
        error = IntegrationRateLimitedError(
            detail,
            retry_after=wait,
            user_message="The app integration service (Composio) is rate-limiting me." + hint,
        )
    else:
        error = IntegrationUnavailableError(detail)
    # The server may say a retry is pointless (x-should-retry: false), as the SDK honours too.
    return error if headers.get("x-should-retry") == "false" else _Transient(error, wait)


def _request_failure(op: str, status: int, err: JSON, message: str, detail: str) -> LucyError:
    if err.get("code") == NO_CONNECTED_ACCOUNT:
        return ConnectionMissingError(detail)
    if status == 404 and op in ("get_tool", "execute"):
        return ToolNotFoundError(detail)
    if status == 404 or (status == 400 and op == "get_connected_account"):
        # 400 here means a malformed id: the callback's query parameters are untrusted input.
        return _NotFound(detail)
    if op == "execute":
        return ToolExecutionError(detail, user_message=f"The app didn't accept that action: {message}")
    return IntegrationError(detail)


# --- the adapter -------------------------------------------------------------------------------


@dataclass
class _Config:
    api_key: str
    base_url: str
    timeout: float  # one read attempt
    read_deadline: float  # all attempts of one read, backoff included
    execute_timeout: float
    toolkit_versions: dict[str, str] = field(default_factory=dict)
    auth_configs: dict[str, str] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class ComposioClient:
    """The real :class:`ComposioAPI` adapter.

    ``user_id`` is always the Lucy workspace id: that is what keeps one workspace's connected
    accounts away from another's.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 20.0,
        read_deadline: float | None = None,
        execute_timeout: float = 60.0,
        toolkit_versions: Mapping[str, str] | None = None,
        auth_configs: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        http_client: Any = None,
    ) -> None:
        import composio_client  # heavy (~4 s): imported only by whoever builds a client

        self._cfg = _Config(
            api_key=api_key,
            base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
            timeout=timeout,
            read_deadline=read_deadline if read_deadline is not None else 2 * timeout,
            execute_timeout=execute_timeout,
            toolkit_versions={k.lower(): v for k, v in (toolkit_versions or {}).items()},
            auth_configs={k.lower(): v for k, v in (auth_configs or {}).items()},
            retry=retry or RetryPolicy(),
        )
        self._sdk = composio_client
        try:
            # max_retries=0: retries happen in _read, never for executes (see module docstring).
            self._api = composio_client.AsyncComposio(
                auth=composio_client.ProjectAuth(api_key),
                base_url=self._cfg.base_url,
                timeout=timeout,
                max_retries=0,
                http_client=http_client,
            )
        except composio_client.ComposioError as exc:
            # The SDK refuses to send the key over plain http to anything but loopback.
            raise ConfigError(describe("COMPOSIO_BASE_URL", f"is not usable ({exc})")) from exc
        self._auth_locks: dict[str, asyncio.Lock] = {}

    @property
    def base_url(self) -> str:
        return self._cfg.base_url

    def version_for(self, toolkit: str) -> str | None:
        """The pinned version of ``toolkit``, if any (schemas and executes must use the same one)."""
        return self._cfg.toolkit_versions.get(toolkit.lower())

    async def aclose(self) -> None:
        await self._api.close()

    # --- plumbing ----------------------------------------------------------------------------

    async def _attempt(self, op: str, call: Callable[[float], Awaitable[Any]], seconds: float) -> Any:
        """One HTTP exchange → parsed JSON body, or raise a Lucy error / _Transient."""
        sdk = self._sdk
        try:
            async with asyncio.timeout(seconds):
                raw = await call(seconds)
                text = await raw.read()
        except (TimeoutError, sdk.APITimeoutError) as exc:
            raise _Transient(IntegrationTimeoutError(f"composio {op}: no answer within {seconds:g}s")) from exc
        except sdk.APIConnectionError as exc:
            raise _Transient(IntegrationUnavailableError(f"composio {op}: cannot connect: {exc}")) from exc
        except sdk.ComposioError as exc:
            raise IntegrationError(redact_text(f"composio {op}: {exc}")) from exc
        try:
            body = json.loads(text) if text else None
        except ValueError as exc:
            snippet = text[:80].decode("utf-8", "replace")
            failure = IntegrationUnavailableError(f"composio {op}: unreadable answer {snippet!r}")
            if 200 <= raw.status_code < 300:
                raise _Transient(failure) from exc
            body = None
        if 200 <= raw.status_code < 300:
            if body is None:
                raise _Transient(IntegrationUnavailableError(f"composio {op}: empty answer"))
            return body
        failure_or_retry = _status_failure(op, raw.status_code, body, raw.headers)
        raise failure_or_retry

    async def _read(self, op: str, call: Callable[[float], Awaitable[Any]]) -> Any:
        """A safe-to-repeat call: retried with backoff, honouring Retry-After, within the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.read_deadline
        policy = self._cfg.retry
        for attempt in range(1, policy.attempts + 1):
            remaining = deadline - loop.time()
            try:
                return await self._attempt(op, call, min(self._cfg.timeout, max(remaining, 0.05)))
            except _Transient as transient:
                delay = transient.retry_after if transient.retry_after is not None else policy.backoff(attempt)
                remaining = deadline - loop.time()
                if attempt == policy.attempts or delay >= remaining:
                    log.warning("composio_gave_up", op=op, attempts=attempt, error=str(transient.error))
                    raise transient.error from None
                log.info("composio_retry", op=op, attempt=attempt, delay_s=round(delay, 3),
                         error=str(transient.error))
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, op: str, call: Callable[[float], Awaitable[Any]], seconds: float) -> Any:
        """A call that must not be repeated blindly (it may have had its effect)."""
        try:
            return await self._attempt(op, call, seconds)
        except _Transient as transient:
            raise transient.error from None

    def _versions_query(self, toolkit: str | None) -> str | dict[str, str]:
        if toolkit is not None:
            pin = self.version_for(toolkit)
            return {toolkit.lower(): pin} if pin else "latest"
        return dict(self._cfg.toolkit_versions) or "latest"

    # --- tools -------------------------------------------------------------------------------

    async def list_tools(self, *, toolkit: str | None = None, slugs: Sequence[str] = ()) -> list[JSON]:
        """Every tool of ``toolkit`` (or the named ``slugs``), following ``next_cursor`` to the end."""
        if toolkit is None and not slugs:
            raise ValueError("list_tools needs a toolkit or slugs")
        params: dict[str, Any] = {"limit": TOOLS_PAGE_LIMIT, "toolkit_versions": self._versions_query(toolkit)}
        if toolkit is not None:
            params["toolkit_slug"] = toolkit.lower()
        if slugs:
            params["tool_slugs"] = ",".join(slugs)
        return await self._paginate("list_tools", self._api.tools.with_raw_response.list, params)

    async def _paginate(self, op: str, method: Callable[..., Awaitable[Any]], params: dict[str, Any]) -> list[JSON]:
        items: list[JSON] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page_params = dict(params, cursor=cursor) if cursor else params

            async def call(seconds: float, kw: dict[str, Any] = page_params) -> Any:
                return await method(**kw, timeout=seconds)

            page = await self._read(op, call)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise IntegrationUnavailableError(f"composio {op}: answer without an items list")
            items.extend(i for i in page["items"] if isinstance(i, dict))
            cursor = page.get("next_cursor") or None
            if cursor is None or cursor in seen:
                return items
            seen.add(cursor)
        log.warning("composio_pagination_cut", op=op, pages=MAX_PAGES, items=len(items))
        return items

    async def get_tool(self, slug: str) -> JSON:
        async def call(seconds: float) -> Any:
            return await self._api.tools.with_raw_response.retrieve(
                slug, toolkit_versions=self._versions_query(None), timeout=seconds
            )

        tool = await self._read("get_tool", call)
        if not isinstance(tool, dict) or "slug" not in tool:
            raise IntegrationUnavailableError(f"composio get_tool: unreadable tool {slug}")
        return tool

    async def execute(
        self,
        slug: str,
        arguments: JSON,
        *,
        user_id: str,
        version: str | None = None,
        connected_account_id: str | None = None,
        time_limit: float | None = None,
    ) -> Execution:
        """Run one tool for one workspace, exactly once."""
        kwargs: dict[str, Any] = {"arguments": arguments, "user_id": user_id, "version": version or "latest"}
        if connected_account_id:
            kwargs["connected_account_id"] = connected_account_id

        async def call(seconds: float) -> Any:
            return await self._api.tools.with_raw_response.execute(slug, **kwargs, timeout=seconds)

        body = await self._once("execute", call, time_limit or self._cfg.execute_timeout)
        if not isinstance(body, dict) or "successful" not in body:
            raise IntegrationUnavailableError(f"composio execute {slug}: answer without 'successful'")
        error = body.get("error")
        return Execution(
            successful=bool(body["successful"]),
            data=body.get("data"),
            error=str(error) if error else None,
            log_id=body.get("log_id"),
        )

    # --- connected accounts ------------------------------------------------------------------

    async def list_connected_accounts(
        self,
        user_id: str,
        *,
        toolkits: Sequence[str] = (),
        statuses: Sequence[str] = ("ACTIVE",),
        account_ids: Sequence[str] = (),
    ) -> list[ConnectedAccount]:
        params: dict[str, Any] = {"user_ids": [user_id], "limit": ACCOUNTS_PAGE_LIMIT}
        if toolkits:
            params["toolkit_slugs"] = [t.lower() for t in toolkits]
        if statuses:
            params["statuses"] = list(statuses)
        if account_ids:
            params["connected_account_ids"] = list(account_ids)
        items = await self._paginate(
            "list_connected_accounts", self._api.connected_accounts.with_raw_response.list, params
        )
        accounts = [ConnectedAccount.from_api(i) for i in items if "id" in i]
        # Defence in depth: the server filtered by user_ids; anything else must never leak through.
        foreign = [a for a in accounts if a.user_id not in (None, "", user_id)]
        if foreign:
            log.error("composio_foreign_accounts_dropped", workspace=user_id, count=len(foreign))
        return [a for a in accounts if a not in foreign]

    async def get_connected_account(self, account_id: str) -> ConnectedAccount | None:
        async def call(seconds: float) -> Any:
            return await self._api.connected_accounts.with_raw_response.retrieve(account_id, timeout=seconds)

        try:
            item = await self._read("get_connected_account", call)
        except _NotFound:
            return None
        return ConnectedAccount.from_api(item) if isinstance(item, dict) and "id" in item else None

    async def delete_connected_account(self, account_id: str) -> None:
        async def call(seconds: float) -> Any:
            return await self._api.connected_accounts.with_raw_response.delete(account_id, timeout=seconds)

        await self._once("delete_connected_account", call, self._cfg.timeout)

    # --- connecting ----------------------------------------------------------------------------

    async def auth_config_id(self, toolkit: str) -> str:
        """The auth config to connect ``toolkit`` with: configured, else the oldest enabled
        Composio-managed one, else a new Composio-managed one (created once per process)."""
        toolkit = toolkit.lower()
        if toolkit in self._cfg.auth_configs:
            return self._cfg.auth_configs[toolkit]
        lock = self._auth_locks.setdefault(toolkit, asyncio.Lock())
        async with lock:
            if toolkit in self._cfg.auth_configs:
                return self._cfg.auth_configs[toolkit]
            found = await self._find_managed_auth_config(toolkit)
            config_id = found or await self._create_managed_auth_config(toolkit)
            self._cfg.auth_configs[toolkit] = config_id
            return config_id

    async def _find_managed_auth_config(self, toolkit: str) -> str | None:
        params = {"toolkit_slug": toolkit, "is_composio_managed": True, "limit": ACCOUNTS_PAGE_LIMIT}
        items = await self._paginate("list_auth_configs", self._api.auth_configs.with_raw_response.list, params)
        usable = [
            i for i in items
            if str((i.get("toolkit") or {}).get("slug", "")).lower() == toolkit
            and i.get("status", "ENABLED") == "ENABLED"
            and i.get("is_composio_managed", True)
            and "id" in i
        ]
        # The oldest wins, so instances that raced to create one converge on the same config.
        usable.sort(key=lambda i: (str(i.get("created_at") or ""), str(i["id"])))
        return str(usable[0]["id"]) if usable else None

    async def _create_managed_auth_config(self, toolkit: str) -> str:
        async def call(seconds: float) -> Any:
            return await self._api.auth_configs.with_raw_response.create(
                toolkit={"slug": toolkit}, auth_config={"type": "use_composio_managed_auth"}, timeout=seconds
            )

        try:
            body = await self._once("create_auth_config", call, self._cfg.timeout)
        except (IntegrationAuthError, IntegrationUnavailableError):
            raise
        except IntegrationError as exc:
            raise IntegrationError(
                str(exc),
                user_message=(
                    f"{toolkit} can't be connected automatically. An admin needs to create an auth config for it "
                    "in the Composio dashboard and add it to COMPOSIO_AUTH_CONFIGS."
                ),
            ) from exc
        config_id = (body.get("auth_config") or {}).get("id") if isinstance(body, dict) else None
        if not config_id:
            raise IntegrationUnavailableError("composio create_auth_config: answer without auth_config.id")
        log.info("composio_auth_config_created", toolkit=toolkit, auth_config_id=config_id)
        return str(config_id)

    async def create_connect_link(self, user_id: str, toolkit: str, *, callback_url: str | None) -> ConnectLink:
        """A Composio Connect Link: the person opens it, authorises, and lands on ``callback_url``."""
        auth_config_id = await self.auth_config_id(toolkit)
        kwargs: dict[str, Any] = {"auth_config_id": auth_config_id, "user_id": user_id}
        if callback_url:
            kwargs["callback_url"] = callback_url

        async def call(seconds: float) -> Any:
            return await self._api.link.with_raw_response.create(**kwargs, timeout=seconds)

        body = await self._once("create_connect_link", call, self._cfg.timeout)
        url = body.get("redirect_url") if isinstance(body, dict) else None
        account = body.get("connected_account_id") if isinstance(body, dict) else None
        if not url or not account:
            raise IntegrationUnavailableError("composio create_connect_link: answer without redirect_url")
        return ConnectLink(url=str(url), connected_account_id=str(account), expires_at=body.get("expires_at"))

    async def list_toolkits(self) -> list[JSON]:
        params: dict[str, Any] = {"limit": TOOLS_PAGE_LIMIT}
        return await self._paginate("list_toolkits", self._api.toolkits.with_raw_response.list, params)


def client_from_settings(settings: Settings, *, http_client: Any = None) -> ComposioClient:
    """Build the real client from configuration (``COMPOSIO_API_KEY`` must be set).

    Importing the SDK takes seconds of CPU: call this at start-up, or through
    ``await asyncio.to_thread(client_from_settings, settings)`` from a running loop.
    """
    require(settings, "COMPOSIO_API_KEY")
    assert settings.composio_api_key is not None
    return ComposioClient(
        api_key=settings.composio_api_key,
        base_url=settings.composio_base_url,
        timeout=settings.composio_timeout_seconds,
        execute_timeout=settings.tool_timeout_seconds,
        toolkit_versions=settings.toolkit_versions,
        auth_configs=settings.auth_config_ids,
        http_client=http_client,
    )
