"""OpenAI's chat-completions protocol spoken directly: one aiohttp session, server-sent events.

:class:`lucy.core.llm.LiteLLM` uses this for models LiteLLM itself would send over OpenAI's
wire format: OpenAI (``gpt-4o-mini``, ``openai/gpt-4.1``) and any OpenAI-compatible server at
``LLM_API_BASE`` (vLLM, Ollama, LM Studio, llama.cpp, a LiteLLM proxy). Every other provider goes
through litellm. The reason is CPU: a streamed reply cost ~26 ms of CPU through
``litellm.acompletion`` (its logging, repeated pricing and a pydantic object per chunk) and about
1 ms here, measured on the 2-core machine the load benchmark runs on; at 100 turns a second
that is 2.6 cores against a tenth of one. ``LUCY_LLM_CLIENT=litellm`` turns this path off.

The request is what LiteLLM sends for these models (its OpenAI transformation passes our
messages and tools through): ``model`` without the ``openai/`` prefix, ``messages``, ``tools`` and
``tool_choice`` when there are tools, the output cap, and ``stream`` with
``stream_options.include_usage``. OpenAI's own API gets ``max_completion_tokens`` (its reasoning
models refuse ``max_tokens``); other servers get ``max_tokens``, which every one of them knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

OPENAI_API_BASE = "https://api.openai.com/v1"
DRAIN_SECONDS = 1.0  # to read what follows data: [DONE]
TextSink = Callable[[str], Awaitable[None]]

# How servers say the prompt does not fit: OpenAI's error code, or the wording of vLLM, llama.cpp,
# LM Studio and OpenAI's older message.
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_CONTEXT_WORDS = ("maximum context length", "context length", "context window", "too many tokens",
                  "prompt is too long", "exceeds the context")


class WireError(Exception):
    """A failed call. ``status`` is None when no HTTP answer came (refused, reset, cut stream)."""

    def __init__(self, status: int | None, message: str, *, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def context_overflow(self) -> bool:
        if self.status not in (400, 413):
            return False
        text = str(self).lower()
        return self.code in _CONTEXT_CODES or any(words in text for words in _CONTEXT_WORDS)


@dataclass
class WireCall:
    id: str
    name: str = ""
    arguments: str = ""


@dataclass
class WireReply:
    text: str
    tool_calls: list[WireCall] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    usage_reported: bool = False  # False: the server sent no usage (some local servers)


class OpenAIWire:
    """One endpoint (``base_url``, key). Open it in the event loop that uses it; ``aclose()`` at the end."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_seconds: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._url = self.base_url + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    @property
    def max_tokens_field(self) -> str:
        return "max_completion_tokens" if self.base_url == OPENAI_API_BASE else "max_tokens"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # sock_read bounds each wait for bytes; the caller's asyncio.timeout bounds the call.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(self._timeout, 10.0),
                                            sock_read=self._timeout)
            # No connection limit (aiohttp's default is 100): each turn streams over a connection of
            # its own for as long as the model takes, and the turn gate already bounds the turns. At
            # 100, the 101st turn waited for a free connection until its deadline.
            self._session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, body: Mapping[str, Any], on_text: TextSink | None) -> WireReply:
        """POST one chat completion; streamed (text to ``on_text`` as it comes) when ``on_text`` is given."""
        payload = dict(body)
        if on_text is not None:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        try:
            async with self._client().post(self._url, data=json.dumps(payload), headers=self._headers) as resp:
                if resp.status != 200:
                    raise await _http_error(resp)
                if on_text is None:
                    return _from_json(await _json_body(resp))
                return await _from_stream(resp, on_text)
        except aiohttp.ClientError as exc:  # refused, reset, a broken chunked body
            raise WireError(None, f"{type(exc).__name__}: {exc}") from exc


async def _http_error(resp: aiohttp.ClientResponse) -> WireError:
    raw = await resp.read()
    message, code = raw.decode("utf-8", "replace")[:500], None
    try:
        err = json.loads(raw).get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = str(err["code"]) if err.get("code") is not None else None
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError):
        pass  # not JSON: keep the text
    retry_after = None
    header = resp.headers.get("Retry-After")
    if header is not None:
        try:
            retry_after = max(0.0, float(header))
        except ValueError:
            retry_after = None  # an HTTP date; the exponential backoff is good enough
    return WireError(resp.status, message, code=code, retry_after=retry_after)


async def _json_body(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    return _json_object(await resp.read(), "the server answered with")


def _json_object(raw: bytes | str, said: str) -> dict[str, Any]:
    """``raw`` as a JSON object, or a retryable WireError quoting its start."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise WireError(None, f"{said} something that is not JSON: {raw[:200]!r}") from exc
    if not isinstance(data, dict):
        raise WireError(None, f"{said} unexpected JSON: {raw[:200]!r}")
    return data


def _usage(reply: WireReply, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    reply.usage_reported = True
    reply.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    reply.completion_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        reply.cached_tokens = int(details.get("cached_tokens") or 0)


def _from_json(data: dict[str, Any]) -> WireReply:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise WireError(None, f"the reply has no choices: {json.dumps(data)[:200]}")
    message = choices[0].get("message") or {}
    reply = WireReply(text=str(message.get("content") or ""),
                      finish_reason=str(choices[0].get("finish_reason") or "stop"))
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        reply.tool_calls.append(WireCall(id=str(tc.get("id") or ""), name=str(fn.get("name") or ""),
                                         arguments=_arguments(fn.get("arguments"))))
    _usage(reply, data.get("usage"))
    return reply


def _arguments(value: Any) -> str:
    # Some servers send the arguments as an object instead of a JSON string.
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


async def _from_stream(resp: aiohttp.ClientResponse, on_text: TextSink) -> WireReply:
    state = _Stream(on_text)
    buffer = b""
    # Split on newlines here: one event can be longer than aiohttp's 64 KiB line limit (a server
    # that sends a whole tool call, arguments and all, in one chunk).
    done = False
    async for block in resp.content.iter_any():
        buffer += block
        *lines, buffer = buffer.split(b"\n")
        if await state.feed(lines):
            done = True
            break
    if not done:
        await state.feed([buffer])
    else:
        # Read the body's end (the chunked terminator) so the connection goes back to the pool;
        # unread, aiohttp closes it. A server that keeps it open after [DONE] costs a second.
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            async with asyncio.timeout(DRAIN_SECONDS):
                await resp.read()
    if not state.finished:
        raise WireError(None, "the stream ended before the reply was complete")
    return state.reply()


class _Stream:
    """The reply being rebuilt from a stream's chunks (text pieces; tool-call pieces by index)."""

    def __init__(self, on_text: TextSink) -> None:
        self._on_text = on_text
        self._reply = WireReply(text="")
        self._text: list[str] = []
        self._calls: dict[int, WireCall] = {}
        self.finished = False  # a choice said why it stopped, or the server said [DONE]

    async def feed(self, lines: list[bytes]) -> bool:
        """Apply complete lines; True at ``data: [DONE]``."""
        for line in lines:
            event = _event(line)
            if event is None:
                continue
            if event == "[DONE]":
                self.finished = True
                return True
            await self._apply(event)
        return False

    def reply(self) -> WireReply:
        self._reply.text = "".join(self._text)
        self._reply.tool_calls = [self._calls[i] for i in sorted(self._calls)]
        return self._reply

    async def _apply(self, event: str) -> None:
        chunk = _json_object(event, "the stream sent")
        if isinstance(chunk.get("error"), dict):  # some servers report a failure inside the stream
            err = chunk["error"]
            raise WireError(None, str(err.get("message") or err), code=err.get("code"))
        if chunk.get("usage") is not None:
            _usage(self._reply, chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self._text.append(content)
                await self._on_text(content)
            for piece in delta.get("tool_calls") or []:
                call = self._calls.setdefault(int(piece.get("index") or 0), WireCall(id=""))
                call.id = call.id or str(piece.get("id") or "")
                fn = piece.get("function") or {}
                call.name = call.name or str(fn.get("name") or "")  # sent once (some servers repeat it)
                call.arguments += _arguments(fn.get("arguments"))
            if choice.get("finish_reason"):
                self._reply.finish_reason = str(choice["finish_reason"])
                self.finished = True


def _event(line: bytes) -> str | None:
    line = line.strip()
    if not line.startswith(b"data:"):
        return None  # blank separators, ": keep-alive" comments, "event:" names
    return line[5:].strip().decode("utf-8", "replace")
