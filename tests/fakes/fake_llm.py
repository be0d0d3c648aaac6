"""A fake OpenAI-compatible chat-completions server for tests (aiohttp on 127.0.0.1, port 0).

It speaks the real wire protocol (``POST /v1/chat/completions``, JSON or server-sent events), so
tests drive the REAL litellm (``model="openai/<name>"``, ``api_base=llm.base_url``) and see
exactly what a hosted model would have been sent.

Usage::

    from tests.fakes.fake_llm import FakeLLM, text, tool_call, tool_calls, call, error

    async with FakeLLM() as llm:                 # or the ``fake_llm`` pytest fixture
        settings = Settings(LLM_MODEL="openai/fake", LLM_API_BASE=llm.base_url, LLM_API_KEY="sk-test")
        llm.script([
            tool_call("GITHUB_CREATE_ISSUE", {"title": "Bug"}),           # step 1: one tool call
            tool_calls(call("A", {}), call("B", {"x": 1})),                # parallel tool calls
            error(429, retry_after=0),                                     # an HTTP error
            text("Done: https://github.com/o/r/issues/1", delay=0.2),      # a slow text answer
        ])
        llm.script([error(500)], model="primary")    # replies only for requests naming that model
        llm.down("primary", status=503)              # every request for that model fails
        llm.responder = lambda request: text("ok")   # used when no scripted reply is left
        llm.async_responder = hold                   # the same, awaited (it may hold the reply)
        ...
        llm.requests[0].messages        # what the model was sent (history, tool results, …)
        llm.requests[0].tool_names      # the tools it was offered
        llm.requests[0].stream          # whether litellm asked for a stream

Replies (all take ``delay=`` seconds before answering and ``usage=(prompt, completion)``):
    ``text(content)``; ``tool_call(name, arguments)``; ``tool_calls(call(...), call(...))`` —
    ``arguments`` is a dict, or a raw string to send malformed JSON; ``error(status, message,
    retry_after=None)``. ``text`` and tool replies also take ``finish_reason=`` and
    ``chunk_size=`` (characters per streamed fragment). ``garbage(body)`` answers 200 with a body
    that is not the protocol; ``cut(content, after=n)`` streams n chunks and ends without ``[DONE]``.

Whether a reply is streamed is decided by the request (``"stream": true``), as with OpenAI;
usage is sent as the final chunk when ``stream_options.include_usage`` is set.

A request with nothing scripted (and no ``responder``) gets HTTP 500 and is kept in
``llm.unexpected``; the ``fake_llm`` fixture fails the test at teardown when that list is not
empty, so a missing script line shows up as such instead of as a confusing retry.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

__all__ = ["FakeLLM", "RecordedRequest", "Reply", "ScriptedCall", "call", "cut", "error", "fake_llm", "garbage",
           "text", "tool_call", "tool_calls"]


@dataclass(frozen=True)
class ScriptedCall:
    name: str
    arguments: dict[str, Any] | str
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the fake model."""

    text: str | None = None
    calls: tuple[ScriptedCall, ...] = ()
    status: int = 200
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None
    chunk_size: int = 5
    raw: bytes | None = None  # sent as the whole 200 body (a stream or not), e.g. garbage
    cut_after: int | None = None  # a stream that stops after this many chunks, with no [DONE]


def garbage(body: bytes = b"<html>502 Bad Gateway</html>") -> Reply:
    """A 200 whose body is not what the protocol promises."""
    return Reply(raw=body)


def cut(content: str, after: int = 2) -> Reply:
    """A streamed text answer whose connection ends after ``after`` chunks (a non-streamed one is whole)."""
    return Reply(text=content, cut_after=after, chunk_size=3)


def text(content: str, *, delay: float = 0.0, usage: tuple[int, int] | None = None,
         finish_reason: str | None = None, chunk_size: int = 5) -> Reply:
    return Reply(text=content, delay=delay, usage=usage, finish_reason=finish_reason, chunk_size=chunk_size)


def call(name: str, arguments: dict[str, Any] | str | None = None, id: str | None = None) -> ScriptedCall:
    return ScriptedCall(name, {} if arguments is None else arguments, id)


def tool_calls(*calls: ScriptedCall, content: str | None = None, delay: float = 0.0,
               usage: tuple[int, int] | None = None, chunk_size: int = 5) -> Reply:
    return Reply(text=content, calls=tuple(calls), delay=delay, usage=usage, chunk_size=chunk_size)


def tool_call(name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None,
              delay: float = 0.0, usage: tuple[int, int] | None = None) -> Reply:
    return tool_calls(call(name, arguments, id), delay=delay, usage=usage)


def error(status: int, message: str = "", *, retry_after: float | None = None, delay: float = 0.0) -> Reply:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Reply(status=status, message=message or f"fake error {status}", headers=headers, delay=delay)


@dataclass(frozen=True)
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools") or [])

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def tool_choice(self) -> Any:
        return self.body.get("tool_choice")

    @property
    def system(self) -> str:
        return "\n".join(str(m.get("content")) for m in self.messages if m.get("role") == "system")

    def tool_results(self) -> dict[str, str]:
        """tool_call_id → content of every tool message sent."""
        return {m["tool_call_id"]: m.get("content", "") for m in self.messages if m.get("role") == "tool"}


Responder = Callable[[RecordedRequest], Reply]
AsyncResponder = Callable[[RecordedRequest], Awaitable[Reply]]


def _model_key(model: str) -> str:
    return model.split("/", 1)[1] if model.startswith("openai/") else model


class FakeLLM:
    """The fake server. See the module docstring."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.unexpected: list[RecordedRequest] = []
        self.responder: Responder | None = None
        self.async_responder: AsyncResponder | None = None  # like responder, awaited (it may hold the reply)
        self._queue: deque[Reply] = deque()
        self._by_model: dict[str, deque[Reply]] = {}
        self._down: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- scripting --------------------------------------------------------------------------

    def script(self, replies: Reply | Sequence[Reply], *, model: str | None = None) -> None:
        """Queue replies, in order. With ``model``, only requests for that model use them."""
        items = [replies] if isinstance(replies, Reply) else list(replies)
        queue = self._queue if model is None else self._by_model.setdefault(_model_key(model), deque())
        queue.extend(items)

    def down(self, model: str, status: int = 500) -> None:
        """Every request for ``model`` fails with ``status`` from now on."""
        self._down[_model_key(model)] = status

    def up(self, model: str) -> None:
        self._down.pop(_model_key(model), None)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == _model_key(model)]

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._queue) + sum(len(q) for q in self._by_model.values())

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> FakeLLM:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client that gives up (timeout) stops the delayed handler too.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- protocol ---------------------------------------------------------------------------

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        recorded = RecordedRequest(body=body, headers=dict(request.headers))
        self.requests.append(recorded)
        reply = self._next(recorded)
        if reply is None and self.async_responder is not None:
            reply = await self.async_responder(recorded)
        if reply is None:
            self.unexpected.append(recorded)
            return _error_response(500, "FakeLLM: no scripted reply left for this request", {})
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return _error_response(reply.status, reply.message, reply.headers)
        if reply.raw is not None:
            kind = "text/event-stream" if recorded.stream else "application/json"
            return web.Response(body=reply.raw, headers={"Content-Type": kind})
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        calls = [(c, c.id or f"call_fake{next(self._ids)}") for c in reply.calls]
        usage = _usage(reply, recorded)
        if recorded.stream:
            return await self._stream(request, recorded, reply, completion_id, calls, usage)
        return web.json_response(_completion(recorded, reply, completion_id, calls, usage))

    def _next(self, recorded: RecordedRequest) -> Reply | None:
        status = self._down.get(recorded.model)
        if status is not None:
            return error(status, f"model {recorded.model} is down")
        queue = self._by_model.get(recorded.model)
        if queue:
            return queue.popleft()
        if self._queue:
            return self._queue.popleft()
        if self.responder is not None:
            return self.responder(recorded)
        return None

    async def _stream(self, request: web.Request, recorded: RecordedRequest, reply: Reply, completion_id: str,
                      calls: list[tuple[ScriptedCall, str]], usage: dict[str, int]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for n, chunk in enumerate(_chunks(recorded, reply, completion_id, calls, usage)):
            if reply.cut_after is not None and n >= reply.cut_after:
                await response.write_eof()
                return response
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _error_response(status: int, message: str, headers: dict[str, str]) -> web.Response:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_exceeded"}.get(
        status, "server_error")
    payload = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return web.json_response(payload, status=status, headers=headers)


def _usage(reply: Reply, recorded: RecordedRequest) -> dict[str, int]:
    if reply.usage is not None:
        prompt, completion = reply.usage
    else:
        # Roughly what a tokenizer would say, so budgets and cost look plausible.
        prompt = max(1, len(json.dumps(recorded.messages)) // 4 + len(json.dumps(recorded.tools)) // 4)
        completion = max(1, len(reply.text or "") // 4 + sum(len(c.arguments_json) // 4 + 5 for c in reply.calls))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.calls else "stop")


def _completion(recorded: RecordedRequest, reply: Reply, completion_id: str,
                calls: list[tuple[ScriptedCall, str]], usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c, cid in calls
        ]
    return {
        "id": completion_id, "object": "chat.completion", "created": 1_700_000_000, "model": recorded.model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(reply), "logprobs": None}],
        "usage": usage,
    }


def _pieces(value: str, size: int) -> list[str]:
    return [value[i:i + size] for i in range(0, len(value), max(1, size))] or [""]


def _chunks(recorded: RecordedRequest, reply: Reply, completion_id: str,
            calls: list[tuple[ScriptedCall, str]], usage: dict[str, int]) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": completion_id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": recorded.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    if reply.text:
        out += [chunk({"content": piece}) for piece in _pieces(reply.text, reply.chunk_size)]
    for index, (c, cid) in enumerate(calls):
        out.append(chunk({"tool_calls": [{"index": index, "id": cid, "type": "function",
                                          "function": {"name": c.name, "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _pieces(c.arguments_json, reply.chunk_size)]
    out.append(chunk({}, _finish_reason(reply)))
    if (recorded.body.get("stream_options") or {}).get("include_usage"):
        out.append({"id": completion_id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": recorded.model, "choices": [], "usage": usage})
    return out


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    """A started :class:`FakeLLM`; fails the test if a request found nothing scripted."""
    llm = FakeLLM()
    await llm.start()
    try:
        yield llm
    finally:
        await llm.close()
    assert not llm.unexpected, (
        f"FakeLLM got {len(llm.unexpected)} request(s) with nothing scripted; last messages: "
        f"{llm.unexpected[-1].messages[-2:]}"
    )
