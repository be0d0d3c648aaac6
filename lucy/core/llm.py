"""The LLM port and its LiteLLM adapter.

:class:`LLM` is what the agent loop needs from a model: one chat completion with tools, the
text optionally streamed, usage and cost counted. :class:`LiteLLM` implements it for any
LiteLLM model name (OpenAI, Anthropic, Azure, Bedrock, Gemini, Ollama, any OpenAI-compatible
server through ``LLM_API_BASE``) with:

- its own retries with exponential backoff on 429/5xx and connection errors, honouring
  ``Retry-After``. LiteLLM's ``num_retries`` is not used: for httpx-native providers such as
  ``anthropic/`` it silently makes one request, and for OpenAI-SDK providers it hides the
  attempts inside the OpenAI client. Every attempt here is one HTTP request (``max_retries=0``);
- fallback to ``LLM_FALLBACK_MODELS`` in order when a model keeps failing;
- a hard deadline per call (``asyncio.timeout``), streams included;
- no network at import: litellm is imported lazily, with the bundled (offline) cost map;
- OpenAI's wire format spoken directly (:mod:`lucy.core.openai_wire`) for models LiteLLM would
  send over it — OpenAI and OpenAI-compatible servers — because litellm's streaming costs ~25x
  the CPU; litellm still resolves those models, knows their context windows and prices them.
  ``LUCY_LLM_CLIENT=litellm`` sends every model through litellm.

``LLM_API_BASE``/``LLM_API_KEY`` belong to ``LLM_MODEL``. A fallback model shares them when it
points at the same endpoint: with an ``LLM_API_BASE``, when it has the same ``provider/``
prefix (``openai/a`` and ``openai/b`` on one local server); without one, when LiteLLM resolves
it to the same provider (``gpt-4o`` after ``gpt-4o-mini``). Other fallbacks use their
provider's usual environment variable (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, …).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lucy.core.types import JSON, ToolDef, Usage
from lucy.errors import LLMContextError, LLMError
from lucy.log import get_logger

if TYPE_CHECKING:
    from lucy.config import Settings
    from lucy.core.openai_wire import OpenAIWire, WireReply

log = get_logger("lucy.llm")

TextSink = Callable[[str], Awaitable[None]]
ToolChoice = Literal["auto", "none"]

DEFAULT_CONTEXT_TOKENS = 32_768
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class LLMToolCall:
    """A tool call as the model wrote it; ``arguments`` is the raw JSON string (may be malformed)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class LLMReply:
    text: str
    tool_calls: tuple[LLMToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    streamed: bool = False  # the text already went out through ``on_text``


class LLM(Protocol):
    """One chat completion. Raises LLMContextError (prompt too long) or LLMError (all models failed).

    With ``on_text`` the reply's text is streamed to it as it arrives. That text may belong to a
    step that then calls tools ("Let me check…"), and a stream that breaks midway is retried, so
    the sink can see a beginning twice: the returned reply (and the turn's Outcome) is what counts.
    """

    @property
    def context_tokens(self) -> int:
        """The input budget of the smallest configured model, in tokens."""
        ...

    @property
    def max_output_tokens(self) -> int: ...

    async def complete(
        self,
        messages: Sequence[JSON],
        tools: Sequence[ToolDef],
        *,
        tool_choice: ToolChoice = "auto",
        on_text: TextSink | None = None,
    ) -> LLMReply: ...


def add_usage(total: Usage, step: Usage) -> Usage:
    return Usage(
        prompt_tokens=total.prompt_tokens + step.prompt_tokens,
        completion_tokens=total.completion_tokens + step.completion_tokens,
        cost_usd=total.cost_usd + step.cost_usd,
        model=step.model or total.model,
    )


@dataclass(frozen=True)
class LLMConfig:
    model: str
    fallbacks: tuple[str, ...] = ()
    api_base: str | None = None
    api_key: str | None = None
    timeout_seconds: float = 60.0
    max_retries: int = 2  # per model, after the first attempt
    backoff_seconds: float = 0.5  # first retry delay; doubles each attempt (with jitter)
    max_backoff_seconds: float = 20.0  # also caps a server's Retry-After
    max_tokens: int = 4096
    context_tokens: int | None = None  # None: LiteLLM's model info
    stream: bool = True  # stream when the caller passes on_text
    client: Literal["auto", "litellm"] = "auto"  # auto: OpenAI's wire format directly where it applies

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMConfig:
        return cls(
            model=settings.llm_model,
            fallbacks=tuple(settings.fallback_models),
            api_base=settings.llm_api_base,
            api_key=settings.llm_api_key,
            timeout_seconds=settings.llm_timeout_seconds,
            max_tokens=settings.llm_max_tokens,
            context_tokens=settings.llm_context_tokens,
            client=settings.llm_client,
        )

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.model, *self.fallbacks)))


def load_litellm() -> Any:
    """Import litellm once (it takes seconds and ~190 MB), without network."""
    # litellm reads these at import; setting them here (not reading config) keeps the bundled
    # cost map and beta-header list instead of a blocking GET to GitHub.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")
    import litellm

    litellm.suppress_debug_info = True  # otherwise errors print banners to stdout
    litellm.disable_hf_tokenizer_download = True
    return litellm


class _ModelFailed(Exception):
    def __init__(self, model: str, cause: BaseException) -> None:
        super().__init__(f"{model}: {type(cause).__name__}: {str(cause)[:300]}")


class LiteLLM:
    """The :class:`LLM` port on LiteLLM. Construct once per process (it imports litellm)."""

    def __init__(
        self,
        config: LLMConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._lm = load_litellm()
        self._sleep = sleep
        self._jitter = jitter
        self._context_tokens = config.context_tokens or min(self._model_context(m) for m in config.models)
        self._price_unknown_models()
        self._load_tokenizers()
        # Models spoken to directly: the endpoint, and the model's prices per token (input,
        # cached input, output) read once from LiteLLM's bundled map.
        self._wires: dict[str, tuple[OpenAIWire, str]] = {}
        self._prices: dict[str, tuple[float, float, float]] = {}
        for model in config.models:
            self._open_direct(model)

    @property
    def config(self) -> LLMConfig:
        return self._config

    def direct(self, model: str) -> bool:
        """Whether ``model`` is spoken to over OpenAI's wire format directly (not through litellm)."""
        return model in self._wires

    async def aclose(self) -> None:
        """Close the direct endpoints' HTTP sessions."""
        for wire, _ in self._wires.values():
            await wire.aclose()

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    @property
    def max_output_tokens(self) -> int:
        return self._config.max_tokens

    async def complete(
        self,
        messages: Sequence[JSON],
        tools: Sequence[ToolDef],
        *,
        tool_choice: ToolChoice = "auto",
        on_text: TextSink | None = None,
    ) -> LLMReply:
        failures: list[str] = []
        for model in self._config.models:
            try:
                return await self._with_retries(model, messages, tools, tool_choice, on_text)
            except _ModelFailed as failed:
                failures.append(str(failed))
                log.warning("model failed", model=model, error=str(failed))
        raise LLMError("every model failed: " + " | ".join(failures))

    async def _with_retries(
        self, model: str, messages: Sequence[JSON], tools: Sequence[ToolDef], tool_choice: ToolChoice,
        on_text: TextSink | None,
    ) -> LLMReply:
        import openai

        from lucy.core.openai_wire import WireError

        attempt = 0
        while True:
            try:
                return await self._once(model, messages, tools, tool_choice, on_text)
            except (openai.APIError, WireError, TimeoutError) as exc:
                kind = self._classify(exc)
                if kind == "context":
                    raise LLMContextError(f"{model}: {exc}") from exc
                if kind != "retry" or attempt >= self._config.max_retries:
                    raise _ModelFailed(model, exc) from exc
                delay = self._delay(attempt, exc)
                log.info("model call failed, retrying", model=model, attempt=attempt + 1,
                         status=getattr(exc, "status_code", None), delay_s=round(delay, 2), error=str(exc)[:200])
                attempt += 1
                await self._sleep(delay)

    async def _once(
        self, model: str, messages: Sequence[JSON], tools: Sequence[ToolDef], tool_choice: ToolChoice,
        on_text: TextSink | None,
    ) -> LLMReply:
        stream = on_text is not None and self._config.stream
        direct = self._wires.get(model)
        if direct is not None:
            async with asyncio.timeout(self._config.timeout_seconds):
                wire, name = direct
                reply = await wire.complete(self._body(name, wire, messages, tools, tool_choice),
                                            on_text if stream else None)
            return self._direct_reply(model, reply, messages, streamed=stream)
        kwargs = self._kwargs(model, messages, tools, tool_choice)
        # A hard deadline for the whole call: litellm's timeout bounds each read, not a stream.
        async with asyncio.timeout(self._config.timeout_seconds):
            if stream:
                assert on_text is not None
                response = await self._streamed(kwargs, on_text)
            else:
                response = await self._lm.acompletion(**kwargs)
        return self._reply(model, response, streamed=stream)

    async def _streamed(self, kwargs: dict[str, Any], on_text: TextSink) -> Any:
        stream = await self._lm.acompletion(**kwargs, stream=True, stream_options={"include_usage": True})
        chunks: list[Any] = []
        async for chunk in stream:
            chunks.append(chunk)
            delta = chunk.choices[0].delta if chunk.choices else None
            if delta is not None and delta.content:
                await on_text(delta.content)
        # A 200 whose body is no stream of replies (an HTML error page, nothing) comes out of
        # litellm as one made-up "stop" chunk: no role, no text, no tool call. Built into a reply it
        # would be an empty answer, and the turn would say it has none; it is a failed call instead,
        # retried, then the next model. Every real reply's first delta names its role.
        if not any(_says_something(chunk) for chunk in chunks):
            raise self._lm.APIConnectionError(
                message="the stream held no reply", llm_provider="", model=kwargs["model"])
        # Rebuilt here from the deltas when the server sent usage: litellm's stream_chunk_builder
        # costs ~2.5 ms of CPU per reply (litellm already ran it twice for its own bookkeeping).
        response = _assembled(chunks) or self._lm.stream_chunk_builder(chunks, messages=kwargs["messages"])
        if response is None:
            raise self._lm.APIConnectionError(
                message="the stream ended without a response", llm_provider="", model=kwargs["model"])
        return response

    def _body(self, name: str, wire: OpenAIWire, messages: Sequence[JSON], tools: Sequence[ToolDef],
              tool_choice: ToolChoice) -> dict[str, Any]:
        body: dict[str, Any] = {"model": name, "messages": list(messages),
                                wire.max_tokens_field: self._config.max_tokens}
        if tools:
            body["tools"] = list(tools)
            body["tool_choice"] = tool_choice
        return body

    def _open_direct(self, model: str) -> None:
        """Speak to ``model`` directly when LiteLLM would use its OpenAI provider for it."""
        from lucy.core.openai_wire import OPENAI_API_BASE, OpenAIWire

        cfg = self._config
        if cfg.client != "auto":
            return
        try:
            name, provider, _, _ = self._lm.get_llm_provider(model)
        except self._lm.BadRequestError:  # LiteLLMUnknownProvider
            return
        if provider != "openai":
            return
        shares = self._shares_endpoint(model)
        # LiteLLM's order: the call's api_base, then OPENAI_BASE_URL / OPENAI_API_BASE, then OpenAI.
        base = (cfg.api_base if shares else None) or os.environ.get("OPENAI_BASE_URL") \
            or os.environ.get("OPENAI_API_BASE") or OPENAI_API_BASE
        key = (cfg.api_key if shares else None) or os.environ.get("OPENAI_API_KEY")
        self._wires[model] = (OpenAIWire(base, key, timeout_seconds=cfg.timeout_seconds), str(name))
        try:
            info = self._lm.get_model_info(model)
        except Exception:  # litellm raises ModelNotMappedError or a bare Exception for unknown models
            info = {}
        price_in = float(info.get("input_cost_per_token") or 0.0)
        price_cached = float(info.get("cache_read_input_token_cost") or price_in)
        self._prices[model] = (price_in, price_cached, float(info.get("output_cost_per_token") or 0.0))

    def _direct_reply(self, model: str, reply: WireReply, messages: Sequence[JSON], *, streamed: bool) -> LLMReply:
        prompt, completion = reply.prompt_tokens, reply.completion_tokens
        if not reply.usage_reported:
            # A server that reports no usage (some local ones): about four characters a token.
            prompt = len(json.dumps(list(messages), default=str)) // 4
            completion = (len(reply.text) + sum(len(c.arguments) for c in reply.tool_calls)) // 4
        price_in, price_cached, price_out = self._prices.get(model, (0.0, 0.0, 0.0))
        cached = min(reply.cached_tokens, prompt)
        cost = (prompt - cached) * price_in + cached * price_cached + completion * price_out
        return LLMReply(
            text=reply.text,
            tool_calls=_unique_ids([(c.id, c.name, c.arguments) for c in reply.tool_calls]),
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, model=model),
            finish_reason=reply.finish_reason,
            streamed=streamed,
        )

    def _kwargs(self, model: str, messages: Sequence[JSON], tools: Sequence[ToolDef],
                tool_choice: ToolChoice) -> dict[str, Any]:
        cfg = self._config
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "timeout": cfg.timeout_seconds,
            "max_tokens": cfg.max_tokens,  # Anthropic otherwise asks for the model maximum (64k)
            "drop_params": True,  # e.g. Ollama rejects parallel_tool_calls instead of ignoring it
            "max_retries": 0,  # the OpenAI client would retry twice on its own; we retry here
            "num_retries": 0,
        }
        if tools:
            # An empty tools array is a 400 at OpenAI; no tools means no tools parameter.
            kwargs["tools"] = list(tools)
            kwargs["tool_choice"] = tool_choice
        if self._shares_endpoint(model):
            if cfg.api_base:
                kwargs["api_base"] = cfg.api_base
            if cfg.api_key:
                kwargs["api_key"] = cfg.api_key
        return kwargs

    def _shares_endpoint(self, model: str) -> bool:
        primary = self._config.model
        if model == primary:
            return True
        if self._config.api_base:
            return "/" in model and model.split("/", 1)[0] == primary.split("/", 1)[0]
        return self._provider(model) == self._provider(primary)

    def _provider(self, model: str) -> str:
        try:
            return str(self._lm.get_llm_provider(model)[1])
        except self._lm.BadRequestError:  # LiteLLMUnknownProvider
            return model.split("/", 1)[0]

    def _classify(self, exc: BaseException) -> Literal["context", "retry", "next"]:
        from lucy.core.openai_wire import WireError

        if isinstance(exc, WireError):
            if exc.context_overflow:
                return "context"
            return "retry" if exc.status is None or exc.status in _RETRYABLE_STATUS else "next"
        lm = self._lm
        if isinstance(exc, lm.ContextWindowExceededError):
            return "context"
        if isinstance(exc, TimeoutError | lm.Timeout):
            # A model that timed out once will likely do it again: try the next one instead.
            return "next"
        if isinstance(exc, lm.RateLimitError | lm.InternalServerError | lm.ServiceUnavailableError
                      | lm.BadGatewayError | lm.APIConnectionError):
            return "retry"
        status = getattr(exc, "status_code", None)
        return "retry" if status in _RETRYABLE_STATUS else "next"

    def _delay(self, attempt: int, exc: BaseException) -> float:
        cfg = self._config
        retry_after = _retry_after(exc)
        if retry_after is not None:
            return min(retry_after, cfg.max_backoff_seconds)
        base = cfg.backoff_seconds * (2 ** attempt)
        return float(min(base * (0.5 + self._jitter() / 2), cfg.max_backoff_seconds))

    def _reply(self, model: str, response: Any, *, streamed: bool) -> LLMReply:
        choice = response.choices[0]
        message = choice.message
        calls = _unique_ids([(tc.id or "", tc.function.name or "", tc.function.arguments or "")
                             for tc in message.tool_calls or []])
        usage = getattr(response, "usage", None)
        return LLMReply(
            text=message.content or "",
            tool_calls=calls,
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                cost_usd=self._cost(model, response),
                model=model,
            ),
            finish_reason=str(choice.finish_reason or "stop"),
            streamed=streamed,
        )

    def _cost(self, model: str, response: Any) -> float:
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        if cost is not None:
            return float(cost)
        # A response rebuilt from a stream carries no cost; price it from the bundled map.
        try:
            return float(self._lm.completion_cost(completion_response=response, model=model))
        except (self._lm.exceptions.ModelNotMappedError, ValueError, KeyError, TypeError):
            return 0.0  # a local or custom model LiteLLM has no price for

    def _price_unknown_models(self) -> None:
        """Give models LiteLLM has no price for (local and custom ones) a price of 0.

        LiteLLM prices every reply several times (its own logging, the stream's usage chunk);
        for a model missing from its cost map each lookup searches the whole map again, which
        costs ~8 ms of CPU per reply. Registered, it is a dictionary hit.
        """
        import logging

        lm = self._lm
        unknown = []
        for model in self._config.models:
            try:
                lm.get_model_info(model)
            except Exception:  # litellm raises ModelNotMappedError or a bare Exception for unknown models
                unknown.append(model)
        if not unknown:
            return
        quiet = logging.getLogger("LiteLLM")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # it warns that cache-token prices default to 0, which is the point
        try:
            lm.register_model({m: {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "mode": "chat",
                                   "litellm_provider": m.split("/", 1)[0] if "/" in m else "openai"}
                               for m in unknown})
        finally:
            quiet.setLevel(level)

    def _load_tokenizers(self) -> None:
        """Load the tokenizer LiteLLM prices each model's replies with, now rather than mid-turn.

        LiteLLM counts tokens when it prices a reply, and builds the tiktoken encoding (o200k for
        OpenAI's models, ~0.8 s of CPU) the first time, inside the event loop: every ack and turn
        of the process waited for it once. The constructor runs in a thread at start-up.
        """
        for model in self._config.models:
            try:
                self._lm.token_counter(model=model, messages=[{"role": "user", "content": "warm-up"}])
            except Exception as exc:  # a tokenizer that cannot load here fails later the same way, logged there
                log.debug("could not preload the tokenizer", model=model, error=str(exc))

    def _model_context(self, model: str) -> int:
        try:
            info = self._lm.get_model_info(model)
        except Exception:  # litellm raises ModelNotMappedError or a bare Exception for unknown models
            return DEFAULT_CONTEXT_TOKENS
        return int(info.get("max_input_tokens") or info.get("max_tokens") or DEFAULT_CONTEXT_TOKENS)


def _says_something(chunk: Any) -> bool:
    delta = chunk.choices[0].delta if chunk.choices else None
    return delta is not None and bool(delta.role or delta.content or delta.tool_calls)


def _assembled(chunks: Sequence[Any]) -> Any | None:
    """A reply shaped like litellm's ModelResponse, from streamed chunks; None without a usage chunk.

    Only what :meth:`LiteLLM._reply` reads: the text, tool calls (their pieces joined by index),
    the finish reason, and usage and cost from the final chunk (``stream_options.include_usage``;
    litellm prices it). Without that chunk, litellm's builder estimates the usage instead.
    """
    from types import SimpleNamespace

    final = next((c for c in reversed(chunks) if getattr(c, "usage", None) is not None), None)
    if final is None:
        return None
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        delta = choice.delta
        if delta is None:
            continue
        if delta.content:
            text.append(delta.content)
        for piece in delta.tool_calls or ():
            call = calls.setdefault(int(piece.index or 0), {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or piece.id
            if piece.function is not None:
                call["name"] = call["name"] or piece.function.name or ""  # sent once (some servers repeat it)
                call["arguments"] += piece.function.arguments or ""
    tool_calls = [SimpleNamespace(id=c["id"], function=SimpleNamespace(name=c["name"], arguments=c["arguments"]))
                  for _, c in sorted(calls.items())]
    message = SimpleNamespace(content="".join(text), tool_calls=tool_calls)
    hidden = getattr(final, "_hidden_params", None) or {}
    return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason=finish or "stop")],
                           usage=final.usage, _hidden_params={"response_cost": hidden.get("response_cost") or 0.0})


def _unique_ids(calls: Sequence[tuple[str, str, str]]) -> tuple[LLMToolCall, ...]:
    """Tool calls with an id each: some servers (Ollama, older vLLM) send none, or repeat them."""
    seen: set[str] = set()
    out: list[LLMToolCall] = []
    for sent_id, name, arguments in calls:
        call_id = sent_id if sent_id and sent_id not in seen else f"call_{uuid.uuid4().hex[:20]}"
        seen.add(call_id)
        out.append(LLMToolCall(id=call_id, name=name, arguments=arguments))
    return tuple(out)


def _retry_after(exc: BaseException) -> float | None:
    own = getattr(exc, "retry_after", None)
    if isinstance(own, int | float):
        return max(0.0, float(own))
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff is good enough
