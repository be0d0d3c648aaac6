"""A fake Composio platform API on 127.0.0.1, for tests that drive the real SDK over HTTP.

It speaks the routes Composio's SDK uses, under both ``/api/v3`` (the official spec in
``../shared/composio/openapi.json``; ``tests/test_fake_composio_spec.py`` checks every answer
against it) and ``/api/v3.1`` (what SDK 0.30 calls), and serves the 1,357 real tools in
``../shared/composio/tools/``.

Usage::

    async with FakeComposio() as fake:                  # or the ``fake_composio`` pytest fixture
        client = ComposioClient(api_key=fake.api_key, base_url=fake.base_url)
        ca = fake.connect("T123", "github")              # an ACTIVE connected account for workspace T123
        fake.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 7})   # canned data (or a callable)
        fake.fail_next("POST /tools/execute/*", status=500)        # fault injection
        ...
        assert [(e.user_id, e.slug) for e in fake.executes] == [("T123", "GITHUB_CREATE_AN_ISSUE")]

API of the fake (everything a test needs; nothing else is stable):

* ``base_url``, ``api_key`` (checked in ``x-api-key``; a wrong key gets 401).
* ``executes``: :class:`ExecuteRecord` per execute that reached the tool (user_id, slug,
  arguments, version, connected_account_id, successful). Injected status faults happen *before*
  the tool runs (not recorded); an injected ``delay`` happens *after* it ran (recorded), like a
  real timeout that leaves the side effect done.
* ``requests``: :class:`RequestRecord` per API request (method, path without the version prefix,
  query, body, status); ``count("GET", "/tools")`` counts them (``fnmatch`` patterns).
* ``connect(user_id, toolkit, status="ACTIVE") -> ca_id``; ``set_status(ca_id, status)``;
  ``disconnect(ca_id)``; ``accounts`` (id → account dict); ``add_auth_config(toolkit)``.
* Connect links: ``POST /connected_accounts/link`` answers ``redirect_url = {base_url}/link/<token>``.
  A GET on it plays the person finishing OAuth: the account turns ACTIVE and the fake redirects
  (302) to the ``callback_url`` with ``status=success&connected_account_id=ca_…`` appended
  (``?outcome=failed`` → FAILED and ``status=failed``). ``complete_link(ca_id)`` does it in code;
  ``link_account(url)`` is the account a link belongs to, ``link_owner(url)`` its user_id.
* ``set_result(slug, data=None, *, successful=True, error=None)``: ``data`` is a dict, or a
  callable ``(arguments, user_id) -> dict``. Default data echoes the arguments.
* Faults: ``fail_next(route="*", status=500, *, times=1, retry_after=None, delay=0.0,
  malformed=False)``; ``route`` is ``"METHOD /path"`` with ``fnmatch`` wildcards and without
  the version prefix, e.g. ``"GET /tools"``, ``"POST /tools/execute/*"``, ``"*"``.
  ``retry_after`` sets ``Retry-After`` (seconds), ``delay`` sleeps first, ``malformed`` answers
  200 with a body that is not JSON. ``slow(route, seconds)`` answers normally but late.
  ``down = True`` makes every API route answer 503.
* ``settings_for(fake, **env)`` and ``integrations_for(fake, pool, cache=None, **env)`` build Lucy's
  real settings / integrations layer (toolset, worker, connections, registry) against the fake.
* ``max_page_size`` (default 250): the fake pages even when asked for 1000 (the real API pages
  too), so GitHub's 831 tools take 4 pages and cursor handling is always exercised.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import itertools
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TOOLS_DIR = REPO.parent / "shared" / "composio" / "tools"
PREFIXES = ("/api/v3.1", "/api/v3")
STATUSES = ("INITIALIZING", "INITIATED", "ACTIVE", "FAILED", "EXPIRED", "INACTIVE", "REVOKED")
BODY = web.RequestKey("body", object)  # the parsed JSON body, read once by the middleware
Result = dict[str, Any] | Callable[[dict[str, Any], str], dict[str, Any]]


@lru_cache(maxsize=4)
def load_catalog(tools_dir: str) -> tuple[dict[str, Any], ...]:
    """Every tool object of ``tools_dir/*.json`` (cached: the files are 8 MB)."""
    tools: list[dict[str, Any]] = []
    for path in sorted(Path(tools_dir).glob("*.json")):
        tools.extend(json.loads(path.read_text()))
    return tuple(tools)


@dataclass
class ExecuteRecord:
    user_id: str | None
    slug: str
    arguments: dict[str, Any]
    version: str | None
    connected_account_id: str | None
    successful: bool


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int = 0
    api_version: str = "v3.1"


@dataclass
class Fault:
    route: str
    status: int = 500
    times: int = 1
    retry_after: float | None = None
    delay: float = 0.0
    malformed: bool = False

    def matches(self, method: str, path: str) -> bool:
        return fnmatch.fnmatchcase(f"{method} {path}", self.route) or self.route == "*"


@dataclass
class _Canned:
    data: Result | None
    successful: bool = True
    error: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, code: int | None = None) -> web.Response:
    body = {
        "error": {
            "message": message,
            "code": code if code is not None else status,
            "status": status,
            "request_id": secrets.token_hex(8),
            "suggested_fix": "",
        }
    }
    return web.json_response(body, status=status)


def _csv(query: Any, name: str) -> list[str]:
    values: list[str] = []
    for raw in query.getall(name, []):
        values += [v for v in raw.split(",") if v]
    return values


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().split(":", 1)[1])
    except (ValueError, IndexError):
        return -1


@dataclass(repr=False)
class FakeComposio:
    tools_dir: Path = DEFAULT_TOOLS_DIR
    api_key: str = "ak_fake_composio_test_key"
    max_page_size: int = 250
    executes: list[ExecuteRecord] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    base_url: str = ""

    def __post_init__(self) -> None:
        self.tools: list[dict[str, Any]] = list(load_catalog(str(self.tools_dir)))
        self.by_slug = {t["slug"]: t for t in self.tools}
        self._faults: list[Fault] = []
        self._results: dict[str, _Canned] = {}
        self._links: dict[str, dict[str, Any]] = {}  # token → {account, callback_url}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"FakeComposio({self.base_url or 'not started'}, {len(self.accounts)} accounts)"

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeComposio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        for prefix in PREFIXES:
            self._routes(app, prefix)
        app.router.add_get("/link/{token}", self._finish_link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _routes(self, app: web.Application, prefix: str) -> None:
        r = app.router
        r.add_get(f"{prefix}/tools", self._list_tools)
        r.add_post(f"{prefix}/tools/execute/{{slug}}", self._execute)
        r.add_get(f"{prefix}/tools/{{slug}}", self._get_tool)
        r.add_get(f"{prefix}/connected_accounts", self._list_accounts)
        r.add_post(f"{prefix}/connected_accounts/link", self._create_link)
        r.add_get(f"{prefix}/connected_accounts/{{id}}", self._get_account)
        r.add_delete(f"{prefix}/connected_accounts/{{id}}", self._delete_account)
        r.add_get(f"{prefix}/auth_configs", self._list_auth_configs)
        r.add_post(f"{prefix}/auth_configs", self._create_auth_config)
        r.add_get(f"{prefix}/auth_configs/{{id}}", self._get_auth_config)
        r.add_get(f"{prefix}/toolkits", self._list_toolkits)
        r.add_get(f"{prefix}/toolkits/{{slug}}", self._get_toolkit)

    # --- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        route: str = "*",
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
        malformed: bool = False,
    ) -> None:
        self._faults.append(Fault(route, status, times, retry_after, delay, malformed))

    def slow(self, route: str, seconds: float, *, times: int = 1) -> None:
        """Answer ``route`` normally but ``seconds`` late (after the work is done)."""
        self._faults.append(Fault(route, 0, times, None, seconds, False))

    def clear_faults(self) -> None:
        self._faults.clear()

    def set_result(
        self, slug: str, data: Result | None = None, *, successful: bool = True, error: str | None = None
    ) -> None:
        self._results[slug] = _Canned(data, successful, error)

    def count(self, method: str = "*", path: str = "*") -> int:
        return sum(
            1 for r in self.requests if fnmatch.fnmatchcase(r.method, method) and fnmatch.fnmatchcase(r.path, path)
        )

    def toolkits(self) -> list[str]:
        return sorted({t["toolkit"]["slug"] for t in self.tools})

    def add_auth_config(self, toolkit: str, *, managed: bool = True, enabled: bool = True) -> str:
        config_id = f"ac_{toolkit[:6]}{next(self._ids):04d}"
        self.auth_configs[config_id] = {
            "id": config_id,
            "uuid": secrets.token_hex(8),
            "type": "default" if managed else "custom",
            "toolkit": {"slug": toolkit, "logo": f"https://logos.composio.dev/api/{toolkit}"},
            "name": f"{toolkit} auth config",
            "auth_scheme": "OAUTH2",
            "is_composio_managed": managed,
            "status": "ENABLED" if enabled else "DISABLED",
            "created_at": _now(),
            "last_updated_at": _now(),
            "no_of_connections": 0,
            "tool_access_config": {"tools_for_connected_account_creation": [], "tools_available_for_execution": []},
        }
        return config_id

    def _auth_config_for(self, toolkit: str) -> str:
        for config in self.auth_configs.values():
            if config["toolkit"]["slug"] == toolkit:
                return str(config["id"])
        return self.add_auth_config(toolkit)

    def connect(self, user_id: str, toolkit: str, status: str = "ACTIVE") -> str:
        """Give ``user_id`` a connected account on ``toolkit`` (as if they had finished OAuth)."""
        return self._new_account(user_id, toolkit, self._auth_config_for(toolkit), status)

    def _new_account(self, user_id: str, toolkit: str, auth_config_id: str, status: str) -> str:
        account_id = f"ca_{secrets.token_hex(6)}"
        now = _now()
        self.accounts[account_id] = {
            "id": account_id,
            "user_id": user_id,
            "status": status,
            "status_reason": None,
            "toolkit": {"slug": toolkit},
            "auth_config": {
                "id": auth_config_id,
                "auth_scheme": "OAUTH2",
                "is_composio_managed": True,
                "is_disabled": False,
            },
            "data": {},
            "params": {},
            "is_disabled": False,
            "created_at": now,
            "updated_at": now,
        }
        return account_id

    def _render(self, account: dict[str, Any], *, params: bool) -> dict[str, Any]:
        """An account as the API shows it; ``state`` follows the spec's shape for its status."""
        status = account["status"]
        val: dict[str, Any] = {"status": status if status != "REVOKED" else "EXPIRED"}
        if status in ("ACTIVE", "INACTIVE"):
            val["access_token"] = f"fake-access-{account['id']}"
        elif status == "INITIATED":
            val["redirectUrl"] = f"{self.base_url}/link/pending"
        shown = {k: v for k, v in account.items() if params or k != "params"}
        return {**shown, "state": {"authScheme": "OAUTH2", "val": val}}

    def set_status(self, account_id: str, status: str) -> None:
        assert status in STATUSES
        self.accounts[account_id]["status"] = status
        self.accounts[account_id]["updated_at"] = _now()

    def disconnect(self, account_id: str) -> None:
        self.accounts.pop(account_id, None)

    def active_account(self, user_id: str, toolkit: str) -> dict[str, Any] | None:
        active = [
            a for a in self.accounts.values()
            if a["user_id"] == user_id and a["toolkit"]["slug"] == toolkit and a["status"] == "ACTIVE"
        ]
        return max(active, key=lambda a: a["created_at"]) if active else None

    def link_account(self, url: str) -> dict[str, Any]:
        """The connected account a connect link (``redirect_url``) would activate."""
        token = url.rstrip("/").rsplit("/", 1)[-1]
        return self.accounts[self._links[token]["account"]]

    def link_owner(self, url: str) -> str:
        """The user_id a connect link was made for (kept even after its account is deleted)."""
        return str(self._links[url.rstrip("/").rsplit("/", 1)[-1]]["user_id"])

    def complete_link(self, account_id: str, *, ok: bool = True) -> None:
        self.set_status(account_id, "ACTIVE" if ok else "FAILED")

    # --- middleware: auth, faults, records --------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        prefix = next((p for p in PREFIXES if request.path.startswith(p + "/")), None)
        if prefix is None:
            return await handler(request)  # the browser-side /link page
        path = request.path[len(prefix):]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        record = RequestRecord(request.method, path, dict(request.query), body, api_version=prefix.rsplit("/", 1)[1])
        self.requests.append(record)
        response = await self._answer(request, handler, path, record)
        record.status = response.status
        return response

    async def _answer(self, request: web.Request, handler: Any, path: str, record: RequestRecord) -> web.StreamResponse:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "Invalid API key", 10401)
        if self.down:
            return _error(503, "Service temporarily unavailable", 503)
        fault = self._take_fault(request.method, path)
        if fault is not None and (fault.status >= 400 or fault.malformed):
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.malformed:
                return web.Response(status=200, text='{"items": [ <html>oops', content_type="application/json")
            response = _error(fault.status, f"Injected fault {fault.status}")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = f"{fault.retry_after:g}"
            return response
        request[BODY] = record.body
        response = await handler(request)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)  # the work is done; only the answer is late
        return response

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    # --- tools -----------------------------------------------------------------------------

    def _page(self, items: list[Any], request: web.Request, default_limit: int = 20) -> web.Response:
        try:
            limit = int(float(request.query.get("limit", default_limit)))
        except ValueError:
            return _error(400, "limit must be a number")
        if not 1 <= limit <= 1000:
            return _error(400, "limit must be between 1 and 1000")
        limit = min(limit, self.max_page_size)
        offset = _decode_cursor(request.query.get("cursor"))
        if offset < 0:
            return _error(400, "Invalid cursor")
        chunk = items[offset:offset + limit]
        more = offset + limit < len(items)
        total_pages = max(1, -(-len(items) // limit))
        return web.json_response({
            "items": chunk,
            "next_cursor": _encode_cursor(offset + limit) if more else None,
            "total_items": len(items),
            "total_pages": total_pages,
            "current_page": offset // limit + 1,
        })

    async def _list_tools(self, request: web.Request) -> web.Response:
        q = request.query
        toolkits = {t.lower() for t in _csv(q, "toolkit_slug")}
        slugs = set(_csv(q, "tool_slugs"))
        search = (q.get("query") or q.get("search") or "").lower()
        tags = set(_csv(q, "tags"))
        if not (toolkits or slugs or search or tags):
            return _error(400, "One of toolkit_slug, tool_slugs, tags or search is required")
        items = [
            t for t in self.tools
            if (not toolkits or t["toolkit"]["slug"] in toolkits)
            and (not slugs or t["slug"] in slugs)
            and (not search or search in f"{t['slug']} {t['name']} {t['description']}".lower())
            and (not tags or tags & set(t.get("tags") or []))
            and (q.get("important") != "true" or "important" in (t.get("tags") or []))
        ]
        return self._page(items, request)

    async def _get_tool(self, request: web.Request) -> web.Response:
        tool = self.by_slug.get(request.match_info["slug"])
        if tool is None:
            return _error(404, f"Tool {request.match_info['slug']} not found", 1404)
        return web.json_response(tool)

    async def _execute(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        body = request[BODY]
        tool = self.by_slug.get(slug)
        if tool is None:
            return _error(404, f"Tool {slug} not found", 1404)
        if not isinstance(body, dict) or not isinstance(body.get("arguments", {}), dict):
            return _error(400, "Request body must be an object with an arguments object")
        user_id = body.get("user_id")
        account = self._account_for_execute(user_id, tool["toolkit"]["slug"], body.get("connected_account_id"))
        if account is None and not tool.get("no_auth"):
            return _error(400, "No connected account found", 1803)
        arguments = body.get("arguments") or {}
        missing = [p for p in tool["input_parameters"].get("required", []) if p not in arguments]
        if missing:
            outcome = _Canned({}, False, f"Missing required parameters: {sorted(set(missing))}")
        else:
            outcome = self._results.get(slug, _Canned(None))
        data = outcome.data(arguments, user_id or "") if callable(outcome.data) else outcome.data
        if data is None:
            data = {"message": f"{slug} ran", "arguments": arguments}
        self.executes.append(
            ExecuteRecord(user_id, slug, arguments, body.get("version"), account["id"] if account else None,
                          outcome.successful)
        )
        return web.json_response({
            "data": data,
            "error": outcome.error,
            "successful": outcome.successful,
            "log_id": f"log_{secrets.token_hex(6)}",
        })

    def _account_for_execute(self, user_id: Any, toolkit: str, account_id: Any) -> dict[str, Any] | None:
        if account_id:
            account = self.accounts.get(str(account_id))
            ok = (
                account is not None
                and account["status"] == "ACTIVE"
                and account["toolkit"]["slug"] == toolkit
                and (not user_id or account["user_id"] == user_id)
            )
            return account if ok else None
        return self.active_account(str(user_id), toolkit) if user_id else None

    # --- connected accounts ----------------------------------------------------------------

    async def _list_accounts(self, request: web.Request) -> web.Response:
        q = request.query
        users = set(_csv(q, "user_ids"))
        toolkits = set(_csv(q, "toolkit_slugs"))
        statuses = set(_csv(q, "statuses"))
        configs = set(_csv(q, "auth_config_ids"))
        ids = set(_csv(q, "connected_account_ids"))
        items = [
            a for a in self.accounts.values()
            if (not users or a["user_id"] in users)
            and (not toolkits or a["toolkit"]["slug"] in toolkits)
            and (not statuses or a["status"] in statuses)
            and (not configs or a["auth_config"]["id"] in configs)
            and (not ids or a["id"] in ids)
        ]
        items.sort(key=lambda a: a["created_at"], reverse=q.get("order_direction", "desc") == "desc")
        return self._page([self._render(a, params=False) for a in items], request)

    async def _get_account(self, request: web.Request) -> web.Response:
        account_id = request.match_info["id"]
        if not account_id.startswith("ca_"):
            return _error(400, "Invalid connected account id")
        account = self.accounts.get(account_id)
        if account is None:
            return _error(404, "Connected account not found", 1404)
        return web.json_response(self._render(account, params=True))

    async def _delete_account(self, request: web.Request) -> web.Response:
        if self.accounts.pop(request.match_info["id"], None) is None:
            return web.json_response({}, status=404)
        return web.json_response({"success": True})

    async def _create_link(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if not isinstance(body, dict) or not body.get("auth_config_id") or not body.get("user_id"):
            return _error(400, "auth_config_id and user_id are required")
        config = self.auth_configs.get(body["auth_config_id"])
        if config is None:
            return _error(404, "Auth config not found", 1404)
        account_id = self._new_account(body["user_id"], config["toolkit"]["slug"], config["id"], "INITIATED")
        token = f"lk_{secrets.token_urlsafe(12)}"
        self._links[token] = {"account": account_id, "callback_url": body.get("callback_url"),
                              "user_id": body["user_id"]}
        return web.json_response(
            {
                "link_token": token,
                "redirect_url": f"{self.base_url}/link/{token}",
                "expires_at": (datetime.now(UTC) + timedelta(minutes=10)).isoformat().replace("+00:00", "Z"),
                "connected_account_id": account_id,
            },
            status=201,
        )

    async def _finish_link(self, request: web.Request) -> web.StreamResponse:
        link = self._links.get(request.match_info["token"])
        if link is None:
            return web.Response(status=404, text="This link has expired.")
        ok = request.query.get("outcome", "success") != "failed"
        self.complete_link(link["account"], ok=ok)
        if not link["callback_url"]:
            return web.Response(text="Connected. You can close this tab.")
        parts = urlsplit(link["callback_url"])
        query = [
            *parse_qsl(parts.query),
            ("status", "success" if ok else "failed"),
            ("connected_account_id", link["account"]),
        ]
        raise web.HTTPFound(urlunsplit(parts._replace(query=urlencode(query))))

    # --- auth configs and toolkits ---------------------------------------------------------

    async def _list_auth_configs(self, request: web.Request) -> web.Response:
        q = request.query
        toolkit = q.get("toolkit_slug")
        managed = q.get("is_composio_managed")
        items = [
            c for c in self.auth_configs.values()
            if (not toolkit or c["toolkit"]["slug"] == toolkit)
            and (managed is None or str(c["is_composio_managed"]).lower() == managed.lower())
            and (q.get("show_disabled") == "true" or c["status"] == "ENABLED")
        ]
        return self._page(items, request)

    async def _create_auth_config(self, request: web.Request) -> web.Response:
        body = request[BODY]
        toolkit = (body or {}).get("toolkit", {}).get("slug") if isinstance(body, dict) else None
        if not toolkit:
            return _error(400, "toolkit.slug is required")
        if toolkit not in self.toolkits():
            return _error(400, f"Toolkit {toolkit} does not support Composio-managed auth", 1400)
        config_id = self.add_auth_config(toolkit)
        return web.json_response(
            {
                "toolkit": {"slug": toolkit},
                "auth_config": {
                    "id": config_id,
                    "auth_scheme": "OAUTH2",
                    "is_composio_managed": True,
                    "restrict_to_following_tools": [],
                },
            },
            status=201,
        )

    async def _get_auth_config(self, request: web.Request) -> web.Response:
        config = self.auth_configs.get(request.match_info["id"])
        if config is None:
            return _error(404, "Auth config not found", 1404)
        return web.json_response(config)

    def _toolkit_item(self, slug: str) -> dict[str, Any]:
        tools = [t for t in self.tools if t["toolkit"]["slug"] == slug]
        return {
            "slug": slug,
            "name": tools[0]["toolkit"]["name"],
            "auth_schemes": ["OAUTH2"],
            "composio_managed_auth_schemes": ["OAUTH2"],
            "is_local_toolkit": False,
            "no_auth": False,
            "deprecated": {"toolkitId": f"tk_{slug}"},
            "meta": {
                "created_at": "2025-01-01T00:00:00Z",
                "updated_at": "2025-12-01T00:00:00Z",
                "description": f"{tools[0]['toolkit']['name']} tools",
                "logo": tools[0]["toolkit"].get("logo", ""),
                "app_url": None,
                "categories": [],
                "triggers_count": 0,
                "tools_count": len(tools),
                "version": tools[0].get("version", "00000000_00"),
            },
        }

    async def _list_toolkits(self, request: web.Request) -> web.Response:
        return self._page([self._toolkit_item(s) for s in self.toolkits()], request, default_limit=1000)

    async def _get_toolkit(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        if slug not in self.toolkits():
            return _error(404, f"Toolkit {slug} not found", 1404)
        item = self._toolkit_item(slug)
        meta = item["meta"]
        meta["categories"] = []
        meta["available_versions"] = [meta["version"]]
        return web.json_response({
            "slug": slug,
            "name": item["name"],
            "enabled": True,
            "composio_managed_auth_schemes": ["OAUTH2"],
            "is_local_toolkit": False,
            "auth_config_details": [],
            "meta": meta,
            "deprecated": {"toolkitId": slug, "rawProxyInfoByAuthSchemes": []},
        })


def settings_for(fake: FakeComposio, **env: Any) -> Any:
    """:class:`lucy.config.Settings` pointing Composio at ``fake`` (``env`` by variable name, e.g.
    ``LUCY_PUBLIC_URL="https://lucy.example.com"``)."""
    from lucy.config import Settings

    values = {"COMPOSIO_API_KEY": fake.api_key, "COMPOSIO_BASE_URL": fake.base_url, **env}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def integrations_for(fake: FakeComposio, pool: Any, cache: Any = None, **env: Any) -> Any:
    """The real integrations layer (``lucy.integrations.worker.Integrations``) wired to ``fake``:
    ``.toolset`` (Toolset + ToolCatalog), ``.worker`` (ToolExecutor), ``.connections``, ``.registry``.
    ``cache`` defaults to a fresh in-process cache; close with ``await integrations.aclose()``."""
    from lucy.cache import memory_cache
    from lucy.integrations.worker import build_integrations

    return build_integrations(settings_for(fake, **env), pool, cache or memory_cache())


@pytest.fixture
async def fake_composio() -> AsyncIterator[FakeComposio]:
    """A running :class:`FakeComposio` serving the real catalog, fresh for each test."""
    async with FakeComposio() as fake:
        yield fake
