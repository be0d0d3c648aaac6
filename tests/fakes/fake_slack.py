"""A fake Slack for tests: the Web API, response URLs, OAuth and Socket Mode on 127.0.0.1.

The real ``slack_sdk``/``slack_bolt`` talk to it over HTTP exactly as they talk to Slack; it records
every call, checks tokens and required arguments, keeps the messages it was sent (with edits and
streams applied) and answers like Slack: ``{"ok": true, "ts": ...}``, errors such as
``channel_not_found``, ``invalid_auth``, ``message_not_found``, and ``429 ratelimited`` with
``Retry-After``.

Use::

    async with FakeSlack() as slack:                       # or the ``fake_slack`` pytest fixture
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)   # api_url ends in /api/
        ...
        slack.calls("chat.postMessage")                    # [Call(method, args, token, status, response)]
        slack.messages_in("C0CHAN", thread_ts="1700.0001")  # [Message] the thread (root included), oldest first
        slack.rate_limit_next("chat.postMessage", retry_after=0, times=1)   # next call answers HTTP 429
        slack.fail_next("chat.update", "channel_not_found")                  # next call answers that error
        slack.unsupported("chat.startStream", error="unknown_method")        # every call answers that error
        msg = slack.user_message("C0CHAN", "U0ALICE", "<@U0LUCY> hi")        # a person writes; returns Message
        body = slack.app_mention_event(msg)                                  # the Events API envelope for it
        await slack.wait_for(lambda: slack.bot_messages_in("C0CHAN", msg.ts))  # poll until truthy (10 s)

Tokens accepted: ``slack.bot_token`` (``xoxb-…``, team ``slack.team_id``, bot user ``slack.bot_user_id``,
bot id ``slack.bot_id``), tokens added with :meth:`FakeSlack.add_team` or issued by ``oauth.v2.access``,
and ``slack.app_token`` (``xapp-…``) for ``apps.connections.open``. Anything else is ``invalid_auth``;
revoked tokens (:meth:`FakeSlack.revoke`) are ``token_revoked``.

Other surfaces:

- ``slack.response_url()`` → a URL that records what ``respond()`` posts (``slack.responses``).
- OAuth: ``GET {slack.base_url}/oauth/v2/authorize?client_id&scope&state&redirect_uri`` redirects to
  ``redirect_uri?code=…&state=…`` (``slack.redirect_uri`` when the request names none, like the app's
  configured URL) as Slack does after the person clicks Allow; ``oauth.v2.access`` checks
  ``slack.client_id``/``slack.client_secret`` and the code, then installs team ``slack.install_team``.
- Socket Mode: ``apps.connections.open`` returns ``ws://…/link``; ``await slack.socket_connected()``;
  ``await slack.socket_send(payload)`` sends an ``events_api`` envelope; ``slack.socket_acks`` holds acks.
- Signing and sending: :func:`signed_headers` and :class:`SlackSender` POST signed Events API, slash
  command and interactivity requests to a Lucy URL (optionally forged, stale or marked as retries).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web

JSONDict = dict[str, Any]

TEXT_LIMIT = 40_000  # chat.postMessage/update `text` (Slack truncates above; we refuse, to catch bugs)
SECTION_TEXT_LIMIT = 3_000
BLOCKS_LIMIT = 50
BUTTON_TEXT_LIMIT = 75
BUTTON_URL_LIMIT = 3_000
MARKDOWN_TEXT_LIMIT = 12_000  # per chat.*Stream call and per markdown_text

_CHANNEL = re.compile(r"^[CDG][A-Z0-9]{2,}$")

REQUIRED: dict[str, list[str]] = {
    "chat.postMessage": ["channel"],
    "chat.update": ["channel", "ts"],
    "chat.delete": ["channel", "ts"],
    "chat.postEphemeral": ["channel", "user"],
    "chat.startStream": ["channel", "thread_ts"],
    "chat.appendStream": ["channel", "ts"],
    "chat.stopStream": ["channel", "ts"],
    "assistant.threads.setStatus": ["channel_id", "thread_ts", "status"],
    "assistant.threads.setSuggestedPrompts": ["channel_id", "prompts"],
    "assistant.threads.setTitle": ["channel_id", "thread_ts", "title"],
    "reactions.add": ["channel", "timestamp", "name"],
    "reactions.remove": ["channel", "timestamp", "name"],
    "users.info": ["user"],
    "conversations.open": ["users"],
    "oauth.v2.access": ["code"],
}


@dataclass
class Team:
    team_id: str
    bot_token: str
    bot_user_id: str = "U0LUCY"
    bot_id: str = "B0LUCY"
    team_name: str = "Acme"
    enterprise_id: str | None = None
    scopes: str = "app_mentions:read,assistant:write,chat:write,commands,im:history,channels:history"


@dataclass
class Call:
    method: str
    args: JSONDict
    token: str | None
    status: int
    response: JSONDict

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))


@dataclass
class Message:
    channel: str
    ts: str
    text: str = ""
    user: str | None = None
    bot_id: str | None = None
    thread_ts: str | None = None
    blocks: list[JSONDict] = field(default_factory=list)
    chunks: list[JSONDict] = field(default_factory=list)
    streaming: bool = False
    edits: int = 0
    reactions: set[str] = field(default_factory=set)
    team_id: str | None = None

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def block_text(self) -> str:
        """Every piece of text in the blocks, for assertions."""
        return " ".join(_texts_in(self.blocks))

    @property
    def buttons(self) -> list[JSONDict]:
        return [e for b in self.blocks for e in _elements(b) if e.get("type") == "button"]

    @property
    def tasks(self) -> dict[str, JSONDict]:
        """Streamed task updates, latest state per task id."""
        return {c["id"]: c for c in self.chunks if c.get("type") == "task_update"}


def _elements(block: JSONDict) -> list[JSONDict]:
    found = list(block.get("elements", []))
    if isinstance(block.get("accessory"), dict):
        found.append(block["accessory"])
    return found


def _texts_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        out = []
        if isinstance(value.get("text"), str):
            out.append(value["text"])
        for k, v in value.items():
            if k != "text" or not isinstance(v, str):
                out += _texts_in(v)
        return out
    if isinstance(value, list):
        return [t for v in value for t in _texts_in(v)]
    return []


class SlackApiFail(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class FakeSlack:
    """See the module docstring."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_token: str = "xoxb-test-token",
        bot_user_id: str = "U0LUCY",
        bot_id: str = "B0LUCY",
        app_token: str = "xapp-1-test-token",
        client_id: str = "1111.2222",
        client_secret: str = "fake-client-secret",
    ) -> None:
        self.team_id = team_id
        self.bot_token = bot_token
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_token = app_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.teams: dict[str, Team] = {bot_token: Team(team_id, bot_token, bot_user_id, bot_id)}
        self.revoked: set[str] = set()
        self.users: dict[str, JSONDict] = {}
        self.missing_channels: set[str] = set()
        self.messages: list[Message] = []
        self.ephemerals: list[Call] = []
        self.responses: list[JSONDict] = []
        self._calls: list[Call] = []
        self._rate_limits: dict[str, list[int]] = {}
        self._failures: dict[str, list[str]] = {}
        self._unsupported: dict[str, str] = {}
        self._ts = itertools.count(1)
        self._codes: dict[str, str] = {}
        self.install_team = Team("T0NEW", "xoxb-new-team-token", "U0LUCY2", "B0LUCY2", "Newco")
        self.redirect_uri: str | None = None  # the app's configured redirect URL (used when none is passed)
        self.socket_acks: list[JSONDict] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.add_user("U0ALICE", "alice", "Alice Example", "Europe/Oslo")
        self.add_user("U0BOB", "bob", "Bob Example", "America/New_York")

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk sends some reads (users.info) as GET
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/oauth/v2/authorize", self._authorize)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # --- set-up ------------------------------------------------------------------------------

    def add_team(self, team_id: str, bot_token: str, bot_user_id: str = "U0LUCY", bot_id: str = "B0LUCY",
                 team_name: str = "Other", enterprise_id: str | None = None) -> Team:
        team = Team(team_id, bot_token, bot_user_id, bot_id, team_name, enterprise_id)
        self.teams[bot_token] = team
        return team

    def add_user(self, user_id: str, name: str, real_name: str, tz: str, *, is_admin: bool = False,
                 is_owner: bool = False) -> None:
        """A person in the workspace; ``users.info`` answers with them (``is_admin``/``is_owner`` as Slack
        sends them: an owner is an admin too)."""
        self.users[user_id] = {
            "id": user_id, "name": name, "real_name": real_name, "tz": tz,
            "profile": {"display_name": name, "real_name": real_name},
            "is_bot": False, "deleted": False, "is_admin": is_admin or is_owner, "is_owner": is_owner,
            "is_primary_owner": False,
        }

    def revoke(self, token: str) -> None:
        self.revoked.add(token)

    def rate_limit_next(self, method: str, retry_after: int = 0, times: int = 1) -> None:
        self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def fail_next(self, method: str, error: str, times: int = 1) -> None:
        self._failures.setdefault(method, []).extend([error] * times)

    def unsupported(self, method: str, error: str = "unknown_method") -> None:
        self._unsupported[method] = error

    def response_url(self) -> str:
        return f"{self.base_url}/response/{uuid.uuid4().hex[:12]}"

    # --- people writing ----------------------------------------------------------------------

    def new_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.{next(self._ts):06d}"

    def user_message(self, channel: str, user: str, text: str, thread_ts: str | None = None,
                     team_id: str | None = None) -> Message:
        msg = Message(channel=channel, ts=self.new_ts(), text=text, user=user, thread_ts=thread_ts,
                      team_id=team_id or self.team_id)
        self.messages.append(msg)
        return msg

    def envelope(self, event: JSONDict, *, team_id: str | None = None, event_id: str | None = None,
                 enterprise_id: str | None = None) -> JSONDict:
        team = team_id or self.team_id
        return {
            "token": "legacy-verification-token",
            "team_id": team,
            "enterprise_id": enterprise_id,
            "api_app_id": "A0LUCY",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": enterprise_id, "team_id": team, "user_id": self.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }

    def _message_event(self, msg: Message, kind: str, channel_type: str | None) -> JSONDict:
        event: JSONDict = {
            "type": kind, "user": msg.user, "text": msg.text, "ts": msg.ts, "channel": msg.channel,
            "event_ts": msg.ts, "team": msg.team_id,
        }
        if msg.thread_ts:
            event["thread_ts"] = msg.thread_ts
        if channel_type:
            event["channel_type"] = channel_type
        return event

    def app_mention_event(self, msg: Message, **kw: Any) -> JSONDict:
        return self.envelope(self._message_event(msg, "app_mention", None), team_id=msg.team_id, **kw)

    def message_event(self, msg: Message, channel_type: str | None = None, **kw: Any) -> JSONDict:
        kind = channel_type or {"D": "im", "G": "group"}.get(msg.channel[0], "channel")
        return self.envelope(self._message_event(msg, "message", kind), team_id=msg.team_id, **kw)

    # --- what happened -----------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        return [c for c in self._calls if method is None or c.method == method]

    def ok_calls(self, method: str) -> list[Call]:
        return [c for c in self.calls(method) if c.ok]

    def messages_in(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """The channel's messages, or one thread (its root included), oldest first."""
        found = [m for m in self.messages if m.channel == channel]
        if thread_ts is not None:
            found = [m for m in found if m.ts == thread_ts or m.thread_ts == thread_ts]
        return sorted(found, key=lambda m: float(m.ts))

    def bot_messages_in(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        return [m for m in self.messages_in(channel, thread_ts) if m.is_bot]

    def find(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts), None)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll until ``predicate()`` is truthy; return its value (AssertionError after ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; calls: {[c.method for c in self._calls]}")
            await asyncio.sleep(0.02)

    # --- HTTP handlers -----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _read_args(request)
        token = _token_of(request, args)
        status, body, headers = 200, {"ok": True}, {}
        try:
            body = await self._dispatch(method, args, token, request)
        except SlackApiFail as fail:
            body = {"ok": False, "error": fail.error, **fail.extra}
            if fail.error == "ratelimited":
                status = 429
                headers["Retry-After"] = str(fail.extra.pop("retry_after", 0))
                body.pop("retry_after", None)
        self._calls.append(Call(method, args, token, status, body))
        if method == "auth.test" and body.get("ok"):
            headers["x-oauth-scopes"] = self._team(token).scopes
        return web.json_response(body, status=status, headers=headers)

    async def _dispatch(self, method: str, args: JSONDict, token: str | None, request: web.Request) -> JSONDict:
        if self._rate_limits.get(method):
            raise SlackApiFail("ratelimited", retry_after=self._rate_limits[method].pop(0))
        if method in self._unsupported:
            raise SlackApiFail(self._unsupported[method])
        handler = _HANDLERS.get(method)
        if handler is None:
            raise SlackApiFail("unknown_method")
        if method == "oauth.v2.access":
            self._check_client(request, args)
        elif method == "apps.connections.open":
            if token != self.app_token:
                raise SlackApiFail("invalid_auth")
        else:
            self._team(token)
        missing = [name for name in REQUIRED.get(method, []) if args.get(name) in (None, "", [])]
        if missing:
            raise SlackApiFail("invalid_arguments",
                               response_metadata={"messages": [f"[ERROR] missing required field: {missing[0]}"]})
        if self._failures.get(method):
            raise SlackApiFail(self._failures[method].pop(0))
        return handler(self, args, token)

    def _team(self, token: str | None) -> Team:
        if not token:
            raise SlackApiFail("not_authed")
        if token in self.revoked:
            raise SlackApiFail("token_revoked")
        team = self.teams.get(token)
        if team is None:
            raise SlackApiFail("invalid_auth")
        return team

    def _check_client(self, request: web.Request, args: JSONDict) -> None:
        client_id, secret = args.get("client_id"), args.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != self.client_id or secret != self.client_secret:
            raise SlackApiFail("invalid_client_id" if client_id != self.client_id else "bad_client_secret")

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({"url": str(request.url), **body})
        return web.Response(text="ok")

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("client_id") != self.client_id:
            return web.Response(status=400, text="invalid client_id")
        code = uuid.uuid4().hex
        target = q.get("redirect_uri") or self.redirect_uri
        if not target:
            return web.Response(status=400, text="no redirect_uri: set FakeSlack.redirect_uri")
        self._codes[code] = target
        sep = "&" if "?" in target else "?"
        raise web.HTTPFound(f"{target}{sep}{urlencode({'code': code, 'state': q.get('state', '')})}")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets),
                            "connection_info": {"app_id": "A0LUCY"}, "debug_info": {"host": "fake"}})
        self._socket_event.set()
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.socket_acks.append(json.loads(msg.data))
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_event.clear()
        return ws

    async def socket_connected(self, timeout: float = 10.0, *, count: int = 1) -> None:
        """Wait until ``count`` Socket Mode connections are open (one per instance of the app)."""
        async with asyncio.timeout(timeout):
            while len(self._sockets) < count:
                await self._socket_event.wait()
                if len(self._sockets) < count:
                    await asyncio.sleep(0.01)

    async def socket_send(self, payload: JSONDict, *, retry_attempt: int = 0, kind: str = "events_api",
                          to: int = -1) -> str:
        """Send one envelope to a connected Socket Mode client (``to``: which connection, in the
        order they opened; Slack spreads envelopes over an app's connections); returns its id."""
        envelope_id = uuid.uuid4().hex
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "accepts_response_payload": kind != "events_api", "retry_attempt": retry_attempt,
                    "retry_reason": "timeout" if retry_attempt else ""}
        await self._sockets[to].send_json(envelope)
        return envelope_id

    # --- Web API methods ---------------------------------------------------------------------

    def _channel(self, args: JSONDict, key: str = "channel") -> str:
        channel = str(args[key])
        if not _CHANNEL.match(channel) or channel in self.missing_channels:
            raise SlackApiFail("channel_not_found")
        return channel

    def _own_message(self, channel: str, ts: str, token: str | None) -> Message:
        msg = self.find(channel, ts)
        if msg is None:
            raise SlackApiFail("message_not_found")
        if msg.bot_id != self._team(token).bot_id:
            raise SlackApiFail("cant_update_message")
        return msg

    def m_auth_test(self, args: JSONDict, token: str | None) -> JSONDict:
        team = self._team(token)
        return {"ok": True, "url": f"https://{team.team_name.lower()}.slack.com/", "team": team.team_name,
                "user": "lucy", "team_id": team.team_id, "user_id": team.bot_user_id, "bot_id": team.bot_id,
                "enterprise_id": team.enterprise_id, "is_enterprise_install": False}

    def _post(self, args: JSONDict, token: str | None, *, streaming: bool = False) -> Message:
        team = self._team(token)
        channel = self._channel(args)
        text = args.get("text") or args.get("markdown_text") or ""
        blocks = _blocks_of(args)
        if not streaming and not (text or blocks or args.get("attachments")):
            raise SlackApiFail("no_text")
        _check_text(text, blocks)
        thread_ts = args.get("thread_ts") or None
        msg = Message(channel=channel, ts=self.new_ts(), text=text, bot_id=team.bot_id, user=team.bot_user_id,
                      thread_ts=thread_ts, blocks=blocks, streaming=streaming, team_id=team.team_id)
        self.messages.append(msg)
        return msg

    def m_chat_postMessage(self, args: JSONDict, token: str | None) -> JSONDict:
        msg = self._post(args, token)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts,
                "message": {"text": msg.text, "ts": msg.ts, "bot_id": msg.bot_id}}

    def m_chat_update(self, args: JSONDict, token: str | None) -> JSONDict:
        channel = self._channel(args)
        msg = self._own_message(channel, str(args["ts"]), token)
        text = args.get("text") or args.get("markdown_text")
        blocks = _blocks_of(args)
        _check_text(text or "", blocks)
        if text is not None:
            msg.text = text
        if "blocks" in args:
            msg.blocks = blocks
        msg.edits += 1
        return {"ok": True, "channel": channel, "ts": msg.ts, "text": msg.text}

    def m_chat_delete(self, args: JSONDict, token: str | None) -> JSONDict:
        channel = self._channel(args)
        msg = self._own_message(channel, str(args["ts"]), token)
        self.messages.remove(msg)
        return {"ok": True, "channel": channel, "ts": msg.ts}

    def m_chat_postEphemeral(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        self._channel(args)
        if not (args.get("text") or args.get("blocks")):
            raise SlackApiFail("no_text")
        _check_text(args.get("text") or "", _blocks_of(args))
        self.ephemerals.append(Call("chat.postEphemeral", args, token, 200, {"ok": True}))
        return {"ok": True, "message_ts": self.new_ts()}

    def m_chat_startStream(self, args: JSONDict, token: str | None) -> JSONDict:
        channel = self._channel(args)
        if channel[0] in "CG" and not (args.get("recipient_team_id") and args.get("recipient_user_id")):
            raise SlackApiFail("invalid_arguments", response_metadata={
                "messages": ["[ERROR] recipient_team_id and recipient_user_id are required in channels"]})
        msg = self._post({**args, "text": "", "blocks": None}, token, streaming=True)
        self._stream_into(msg, args)
        return {"ok": True, "channel": channel, "ts": msg.ts}

    def _streaming_message(self, args: JSONDict, token: str | None) -> Message:
        msg = self._own_message(self._channel(args), str(args["ts"]), token)
        if not msg.streaming:
            raise SlackApiFail("message_not_in_streaming_state")
        return msg

    def m_chat_appendStream(self, args: JSONDict, token: str | None) -> JSONDict:
        msg = self._streaming_message(args, token)
        if not (args.get("markdown_text") or args.get("chunks")):
            raise SlackApiFail("invalid_arguments",
                               response_metadata={"messages": ["[ERROR] markdown_text or chunks is required"]})
        self._stream_into(msg, args)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def m_chat_stopStream(self, args: JSONDict, token: str | None) -> JSONDict:
        msg = self._streaming_message(args, token)
        self._stream_into(msg, args)
        blocks = _blocks_of(args)
        _check_text("", blocks)
        msg.blocks = blocks
        msg.streaming = False
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "message": {"text": msg.text, "ts": msg.ts}}

    def _stream_into(self, msg: Message, args: JSONDict) -> None:
        pieces: list[str] = []
        if args.get("markdown_text"):
            pieces.append(str(args["markdown_text"]))
        for chunk in _json_list(args.get("chunks")):
            if chunk.get("type") == "markdown_text":
                pieces.append(str(chunk.get("text", "")))
            else:
                msg.chunks.append(chunk)
        for piece in pieces:
            if len(piece) > MARKDOWN_TEXT_LIMIT:
                raise SlackApiFail("invalid_arguments",
                                   response_metadata={"messages": ["[ERROR] markdown_text is too long"]})
        msg.text += "".join(pieces)
        if len(msg.text) > TEXT_LIMIT:
            raise SlackApiFail("msg_too_long")

    def m_assistant_threads_setStatus(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        self._channel(args, "channel_id")
        return {"ok": True}

    def m_assistant_threads_setSuggestedPrompts(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        self._channel(args, "channel_id")
        prompts = _json_list(args.get("prompts"))
        if not 1 <= len(prompts) <= 4 or any(not p.get("title") or not p.get("message") for p in prompts):
            raise SlackApiFail("invalid_arguments")
        return {"ok": True}

    def m_assistant_threads_setTitle(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        self._channel(args, "channel_id")
        return {"ok": True}

    def _reaction_target(self, args: JSONDict) -> Message:
        msg = self.find(self._channel(args), str(args["timestamp"]))
        if msg is None:
            raise SlackApiFail("message_not_found")
        return msg

    def m_reactions_add(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        msg = self._reaction_target(args)
        if args["name"] in msg.reactions:
            raise SlackApiFail("already_reacted")
        msg.reactions.add(str(args["name"]))
        return {"ok": True}

    def m_reactions_remove(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        msg = self._reaction_target(args)
        if args["name"] not in msg.reactions:
            raise SlackApiFail("no_reaction")
        msg.reactions.discard(str(args["name"]))
        return {"ok": True}

    def m_users_info(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        user = self.users.get(str(args["user"]))
        if user is None:
            raise SlackApiFail("user_not_found")
        return {"ok": True, "user": user}

    def m_conversations_open(self, args: JSONDict, token: str | None) -> JSONDict:
        self._team(token)
        users = str(args["users"])
        return {"ok": True, "channel": {"id": "D" + users.replace(",", "")[-8:].upper().replace("U", "0")}}

    def m_oauth_v2_access(self, args: JSONDict, token: str | None) -> JSONDict:
        code = str(args["code"])
        if code not in self._codes:
            raise SlackApiFail("invalid_code")
        del self._codes[code]
        team = self.install_team
        self.teams[team.bot_token] = team
        return {
            "ok": True, "app_id": "A0LUCY", "authed_user": {"id": "U0ALICE"}, "scope": team.scopes,
            "token_type": "bot", "access_token": team.bot_token, "bot_user_id": team.bot_user_id,
            "team": {"id": team.team_id, "name": team.team_name}, "enterprise": None,
            "is_enterprise_install": False,
        }

    def m_apps_connections_open(self, args: JSONDict, token: str | None) -> JSONDict:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}


_HANDLERS: dict[str, Callable[[FakeSlack, JSONDict, str | None], JSONDict]] = {
    name[2:].replace("_", "."): getattr(FakeSlack, name)
    for name in dir(FakeSlack) if name.startswith("m_")
}


async def _read_args(request: web.Request) -> JSONDict:
    args: JSONDict = dict(request.query)
    ctype = request.content_type
    raw = await request.read()
    if ctype == "application/json" and raw:
        args.update(json.loads(raw))
    elif raw:
        args.update(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
    return args


def _token_of(request: web.Request, args: JSONDict) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    token = args.pop("token", None)
    return str(token) if token else None


def _json_list(value: Any) -> list[JSONDict]:
    if isinstance(value, str):
        value = json.loads(value) if value else []
    return list(value or [])


def _blocks_of(args: JSONDict) -> list[JSONDict]:
    return _json_list(args.get("blocks"))


def _check_text(text: str, blocks: list[JSONDict]) -> None:
    if len(text) > TEXT_LIMIT:
        raise SlackApiFail("msg_too_long")
    if len(blocks) > BLOCKS_LIMIT:
        raise SlackApiFail("invalid_blocks", response_metadata={"messages": ["[ERROR] too many blocks"]})
    for block in blocks:
        text_obj = block.get("text")
        if block.get("type") == "section" and isinstance(text_obj, dict):
            if len(text_obj.get("text", "")) > SECTION_TEXT_LIMIT:
                raise SlackApiFail("invalid_blocks", response_metadata={
                    "messages": ["[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]"]})
        for element in _elements(block):
            if element.get("type") != "button":
                continue
            if len(element.get("text", {}).get("text", "")) > BUTTON_TEXT_LIMIT:
                raise SlackApiFail("invalid_blocks")
            if len(element.get("url") or "") > BUTTON_URL_LIMIT:
                raise SlackApiFail("invalid_blocks")
            if not element.get("action_id"):
                raise SlackApiFail("invalid_blocks")


# --- sending signed requests to Lucy -------------------------------------------------------------


def signed_headers(secret: str, body: str, *, timestamp: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """Headers Slack would send with ``body``: ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}", "Content-Type": content_type}


@dataclass
class Delivery:
    status: int
    text: str
    headers: dict[str, str]


class SlackSender:
    """POSTs signed requests to Lucy's ``/slack/events`` the way Slack does."""

    def __init__(self, url: str, signing_secret: str, slack: FakeSlack) -> None:
        self.url = url
        self.secret = signing_secret
        self.slack = slack

    async def _post(self, body: str, content_type: str, *, retry_num: int | None = None,
                    timestamp: int | None = None, secret: str | None = None) -> Delivery:
        headers = signed_headers(secret or self.secret, body, timestamp=timestamp, content_type=content_type)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        async with aiohttp.ClientSession() as session, session.post(self.url, data=body.encode(),
                                                                    headers=headers) as resp:
            return Delivery(resp.status, await resp.text(), dict(resp.headers))

    async def event(self, envelope: JSONDict, **kw: Any) -> Delivery:
        return await self._post(json.dumps(envelope), "application/json", **kw)

    async def command(self, text: str = "", *, user: str = "U0ALICE", channel: str = "C0GENERAL",
                      team_id: str | None = None, command: str = "/lucy-connect", **kw: Any) -> tuple[Delivery, str]:
        """A slash command; returns the delivery and the response_url that ``respond()`` will post to."""
        response_url = self.slack.response_url()
        form = {
            "token": "legacy", "team_id": team_id or self.slack.team_id, "team_domain": "acme",
            "channel_id": channel, "channel_name": "general", "user_id": user, "user_name": "alice",
            "command": command, "text": text, "api_app_id": "A0LUCY", "is_enterprise_install": "false",
            "response_url": response_url, "trigger_id": f"trig.{uuid.uuid4().hex[:8]}",
        }
        return await self._post(urlencode(form), "application/x-www-form-urlencoded", **kw), response_url

    async def action(self, action_id: str, value: str = "", *, user: str = "U0ALICE", channel: str = "C0GENERAL",
                     message_ts: str | None = None, url: str | None = None, team_id: str | None = None,
                     **kw: Any) -> Delivery:
        """A ``block_actions`` click on a button."""
        action: JSONDict = {"type": "button", "action_id": action_id, "block_id": "b1", "value": value,
                            "text": {"type": "plain_text", "text": "Button"}, "action_ts": str(time.time())}
        if url:
            action["url"] = url
        team = team_id or self.slack.team_id
        payload = {
            "type": "block_actions", "user": {"id": user, "username": "alice", "team_id": team},
            "api_app_id": "A0LUCY", "token": "legacy", "team": {"id": team, "domain": "acme"},
            "channel": {"id": channel, "name": "general"}, "trigger_id": "trig.1",
            "container": {"type": "message", "message_ts": message_ts or "1.1", "channel_id": channel},
            "message": {"ts": message_ts or "1.1", "text": "", "type": "message"},
            "response_url": self.slack.response_url(), "actions": [action],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return await self._post(body, "application/x-www-form-urlencoded", **kw)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A running :class:`FakeSlack` (import this fixture into a test module or conftest)."""
    async with FakeSlack() as slack:
        yield slack
