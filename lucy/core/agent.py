"""The agent loop: a person's message in, an answer (or a reason to stop) out.

``LucyAgent.run_turn`` stores the message, loads the thread, builds the prompt, then loops:
model → tool calls (run concurrently through the executor) → results appended → model … until
the model answers or the step limit is reached. It only orchestrates: the model sits behind
:class:`~lucy.core.llm.LLM`, tools behind :class:`~lucy.core.types.Toolset` /
:class:`~lucy.core.types.ToolExecutor`, the thread behind
:class:`~lucy.core.memory.HistoryStore`.

Guarantees the Slack layer and the providers rely on:
- every tool call id gets exactly one tool message, also on error, timeout, cancellation, or
  when the turn stops for a connection or an approval;
- malformed arguments are repaired when that is safe (code fences, concatenated objects,
  trailing commas) and otherwise returned to the model as an error; a truncated object is
  never guessed at, because a half-written email must not be sent;
- the outcome is a value (Answer, ConnectionRequired, ApprovalRequired, Failure), never an
  exception for an expected problem;
- tool output reaches the model fenced as untrusted data (see :mod:`lucy.core.prompt`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lucy.core.llm import LLM, LLMReply, LLMToolCall, add_usage
from lucy.core.memory import (
    HistoryStore,
    estimate_tokens,
    fit_history_counted,
    message_tokens,
    recent_text,
    shorten_tool_outputs,
    used_tools,
    user_message,
)
from lucy.core.meta_tools import meta_tools
from lucy.core.prompt import PromptContext, app_name, system_prompt, untrusted
from lucy.core.types import (
    CONNECT_APP,
    JSON,
    SEARCH_TOOLS,
    Answer,
    ApprovalRequired,
    ConnectedApps,
    ConnectionRequired,
    ExecuteResult,
    Failure,
    NeedsApproval,
    NeedsConnection,
    Outcome,
    ProgressSink,
    ToolCall,
    ToolCatalog,
    ToolDef,
    ToolExecutor,
    ToolResult,
    Toolset,
    Turn,
    Usage,
)
from lucy.errors import LLMContextError, LLMError, LucyError
from lucy.log import get_logger, turn_context

if TYPE_CHECKING:
    from lucy.config import Settings
    from lucy.web.metrics import Metrics

log = get_logger("lucy.agent")

STATE_VERSION = 1
LAST_STEP_NOTE = (
    "You have used every step available for this request. Do not call tools now: answer with what "
    "you found so far, and say plainly what is still undone and how the person can continue."
)
EMPTY_ANSWER = "I couldn't put an answer together. Could you rephrase that, or try again?"



def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AgentLimits:
    max_steps: int = 8  # model calls per turn; the last one must answer
    tool_timeout_seconds: float = 60.0
    tool_output_max_chars: int = 20_000
    context_margin: float = 0.05  # of the context window, for estimate error
    max_parallel_tools: int = 8  # calls of one step running at once; a model can ask for dozens

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentLimits:
        return cls(max_steps=settings.max_steps, tool_timeout_seconds=settings.tool_timeout_seconds,
                   tool_output_max_chars=settings.tool_output_max_chars)


@dataclass(frozen=True)
class AgentDeps:
    """Everything the loop uses, passed in (no globals)."""

    llm: LLM
    toolset: Toolset
    executor: ToolExecutor
    memory: HistoryStore
    apps: ConnectedApps
    catalog: ToolCatalog | None = None  # None: no search_tools meta-tool
    limits: AgentLimits = field(default_factory=AgentLimits)
    clock: Callable[[], datetime] = _utcnow
    metrics: Metrics | None = None


@dataclass
class TurnState:
    """The loop's state, plain JSON all the way down so a stopped turn can be resumed later."""

    messages: list[JSON]  # this turn's messages, the person's message first (no system, no history)
    tools: list[ToolDef]
    step: int = 0
    usage: Usage = field(default_factory=Usage)
    tool_calls: int = 0
    saved: int = 1  # messages[:saved] are in the history store (the person's message is stored first)
    pending: list[str] = field(default_factory=list)  # call ids waiting for an approval

    @property
    def tool_names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}

    def to_json(self) -> JSON:
        u = self.usage
        return {"version": STATE_VERSION, "messages": self.messages, "tools": self.tools, "step": self.step,
                "tool_calls": self.tool_calls, "pending": self.pending,
                "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                          "cost_usd": u.cost_usd, "model": u.model}}

    @classmethod
    def from_json(cls, data: JSON) -> TurnState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown turn state version {data.get('version')!r}")
        return cls(messages=list(data["messages"]), tools=list(data["tools"]), step=int(data["step"]),
                   usage=Usage(**data["usage"]), tool_calls=int(data["tool_calls"]),
                   saved=len(data["messages"]), pending=list(data.get("pending", [])))


@dataclass(frozen=True)
class _Prepared:
    """One tool call after argument parsing; ``error`` set means it will not run."""

    id: str
    name: str
    arguments: JSON
    error: str | None = None


@dataclass(frozen=True)
class _Ran:
    result: ExecuteResult
    from_app: bool  # output came from outside (fence it as untrusted) rather than from Lucy


@dataclass
class _Prompt:
    """One turn's fixed prompt parts, and the history as last fitted (steps mostly reuse it)."""

    system: str
    history: list[JSON]
    system_tokens: int = 0
    tools_tokens: tuple[int, int] = (-1, 0)  # (number of tools, their tokens)
    fitted: tuple[int, list[JSON]] | None = None  # (tokens, messages)

    def __post_init__(self) -> None:
        self.system_tokens = message_tokens({"content": self.system})


class LucyAgent:
    """Implements :class:`~lucy.core.types.Agent`. One instance serves every turn (no per-turn state)."""

    def __init__(self, deps: AgentDeps) -> None:
        self._d = deps
        # Token estimates of tool definitions by name: the same tools come back turn after turn,
        # and serialising 20 schemas costs more than the rest of the estimate. Only an estimate,
        # so a schema that changed under the same name is harmless.
        self._tool_tokens: dict[str, int] = {}

    async def run_turn(self, turn: Turn, progress: ProgressSink) -> Outcome:
        state = TurnState(messages=[user_message(turn.text, turn.user, turn.user_name)], tools=[])
        return await self._guarded(turn, state, lambda t: self._start(t, progress, state))

    async def continue_turn(self, turn: Turn, note: str, progress: ProgressSink) -> Outcome:
        """Go on with a request that stopped for a connection, now that the app is connected.

        The request and Lucy's "connect it" answer are already in the thread; the note comes in as
        a message from Lucy (and is kept), and the loop starts again with a fresh step budget.
        """
        message = {"role": "user", "content": f"[Note from Lucy, not from the person] {note}\n"
                   "Continue the person's request above."}
        state = TurnState(messages=[message], tools=[], saved=0)

        async def body(t: Turn) -> Outcome:
            d = self._d
            try:
                history, connected = await asyncio.gather(
                    d.memory.load(t.workspace, t.channel, t.thread_ts), self._connected(t.workspace))
            except LucyError as exc:
                log.error("could not continue the turn", error=str(exc))
                return Failure(exc.user_message, detail=str(exc))
            state.tools = await self._tools(t, recent_text(history), used_tools(history))
            return await self._loop(t, progress, state, _Prompt(self._system(t, connected), history))

        return await self._guarded(turn, state, body)

    async def resume_turn(self, turn: Turn, state_json: JSON, results: Sequence[ToolResult],
                          progress: ProgressSink) -> Outcome:
        """Continue a turn that stopped for approval, once the approved/denied calls have results.

        The stopped turn's messages are already in the thread; the decision arrives as a note
        from Lucy and the loop goes on with the steps it had left.
        """
        prior = TurnState.from_json(state_json)
        limit = self._d.limits.tool_output_max_chars
        lines = [f"- {r.name} (call {r.call_id}): {untrusted(r.name, r.content, limit)}" for r in results]
        note = {"role": "user", "content": "[Note from Lucy, not from the person] Approval decided:\n"
                + "\n".join(lines) + "\nContinue the person's request."}
        state = TurnState(messages=[note], tools=prior.tools, step=prior.step, usage=prior.usage,
                          tool_calls=prior.tool_calls, saved=0)

        async def resume(t: Turn) -> Outcome:
            history = await self._d.memory.load(t.workspace, t.channel, t.thread_ts)
            connected = await self._connected(t.workspace)
            return await self._loop(t, progress, state, _Prompt(self._system(t, connected), history))

        return await self._guarded(turn, state, resume)

    async def _guarded(self, turn: Turn, state: TurnState, body: Callable[[Turn], Awaitable[Outcome]]) -> Outcome:
        """Logging context, the turn id on the Turn, what a cancellation leaves behind, and the record."""
        with turn_context(workspace=turn.workspace, channel=turn.channel, thread=turn.thread_ts,
                          turn_id=turn.turn_id or None) as turn_id:
            turn = replace(turn, turn_id=turn_id)  # the executor's audit rows carry the logs' turn id
            started = time.monotonic()
            try:
                outcome = await body(turn)
            except asyncio.CancelledError:
                await self._save_cancelled(turn, state)
                raise
            self._record(outcome, state, time.monotonic() - started)
            return outcome

    # --- phases ----------------------------------------------------------------------------

    async def _start(self, turn: Turn, progress: ProgressSink, state: TurnState) -> Outcome:
        d = self._d
        try:
            history_task = d.memory.start_turn(turn.workspace, turn.channel, turn.thread_ts,
                                               slack_user=turn.user, message=state.messages[0])
            history, connected = await asyncio.gather(history_task, self._connected(turn.workspace))
        except LucyError as exc:
            state.saved = 0  # the message may not be stored; nothing else will be either
            log.error("could not start the turn", error=str(exc))
            return Failure(exc.user_message, detail=str(exc))
        state.tools = await self._tools(turn, recent_text(history), used_tools(history))
        return await self._loop(turn, progress, state, _Prompt(self._system(turn, connected), history))

    async def _loop(self, turn: Turn, progress: ProgressSink, state: TurnState, prompt: _Prompt) -> Outcome:
        max_steps = self._d.limits.max_steps
        while True:
            last = state.step >= max_steps - 1
            try:
                reply = await self._ask(prompt, state, progress, last=last)
            except LLMError as exc:
                log.error("the model failed", error=str(exc))
                await self._finish(turn, state, exc.user_message)
                return Failure(exc.user_message, detail=str(exc))
            state.step += 1
            state.usage = add_usage(state.usage, reply.usage)
            if not reply.tool_calls or last:
                text = reply.text.strip() or (self._out_of_steps(state) if reply.tool_calls else EMPTY_ANSWER)
                await self._finish(turn, state, text)
                return Answer(text=text, usage=state.usage, tool_calls=state.tool_calls)
            ran = await self._act(turn, progress, state, reply)
            stop = await self._stop_for(turn, state, ran)
            if stop is not None:
                return stop

    async def _ask(self, prompt: _Prompt, state: TurnState, progress: ProgressSink, *, last: bool) -> LLMReply:
        """One model call, the history fitted to the window; a context overflow shrinks it and retries."""
        tail = [*state.messages, {"role": "system", "content": LAST_STEP_NOTE}] if last else state.messages
        shrink = 1.0
        for _ in range(3):
            budget = int(self._history_budget(prompt, state.tools, tail) * shrink)
            messages = [{"role": "system", "content": prompt.system}, *self._fit(prompt, budget), *tail]
            try:
                return await self._d.llm.complete(messages, state.tools, tool_choice="none" if last else "auto",
                                                  on_text=progress.text_delta)
            except LLMContextError as exc:
                log.warning("prompt too long for the model; trimming harder", shrink=shrink, error=str(exc))
                shrink /= 4
                tail = shorten_tool_outputs(tail, 2000, " …(cut to fit the context window)")
        raise LLMContextError("the prompt does not fit even with the history trimmed away")

    async def _act(self, turn: Turn, progress: ProgressSink, state: TurnState,
                   reply: LLMReply) -> list[tuple[_Prepared, _Ran]]:
        """Record the model's tool calls, run them concurrently, append one result per call id."""
        prepared = [_prepare(c) for c in reply.tool_calls]
        state.messages.append(_assistant_message(reply.text, reply.tool_calls, prepared))
        done: dict[str, _Ran] = {}
        slots = asyncio.Semaphore(self._d.limits.max_parallel_tools)

        async def run(p: _Prepared) -> None:
            async with slots:
                await self._run_one(turn, progress, state, p, done)

        try:
            await asyncio.gather(*(run(p) for p in prepared))
        except asyncio.CancelledError:
            state.messages += [self._tool_message(p, done.get(p.id) or _cancelled(p)) for p in prepared]
            raise
        state.messages += [self._tool_message(p, done[p.id]) for p in prepared]
        state.tool_calls += len(prepared)
        return [(p, done[p.id]) for p in prepared]

    async def _run_one(self, turn: Turn, progress: ProgressSink, state: TurnState, p: _Prepared,
                       done: dict[str, _Ran]) -> None:
        if p.error is not None:
            done[p.id] = _Ran(ToolResult(p.id, p.name, {"error": p.error}, ok=False), from_app=False)
            return
        if p.name not in state.tool_names:
            message = f"The tool {p.name!r} is not available here. Use one of the tools you were given"
            message += f", or call {SEARCH_TOOLS} to find another." if self._d.catalog else "."
            done[p.id] = _Ran(ToolResult(p.id, p.name, {"error": message}, ok=False), from_app=False)
            return
        call = ToolCall(p.id, p.name, p.arguments)
        await _notify(progress.tool_started(call))
        if p.name == SEARCH_TOOLS:
            ran = await self._search(turn, state, p)
        else:
            ran = await self._execute(turn, call)
        done[p.id] = ran
        await _notify(progress.tool_finished(call, ran.result))

    async def _execute(self, turn: Turn, call: ToolCall) -> _Ran:
        limit = self._d.limits.tool_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                result = await self._d.executor.execute(turn, call)
        except TimeoutError:
            log.warning("tool timed out", tool=call.name, timeout_s=limit)
            return _Ran(ToolResult(call.id, call.name, {"error": f"The tool did not answer within {limit:g} seconds."},
                                   ok=False), from_app=False)
        except LucyError as exc:
            log.warning("tool failed", tool=call.name, error=str(exc))
            return _Ran(ToolResult(call.id, call.name, {"error": exc.user_message}, ok=False), from_app=False)
        except Exception:  # a bug in one tool must not leave its call id unanswered or end the turn
            log.exception("tool crashed", tool=call.name)
            return _Ran(ToolResult(call.id, call.name, {"error": "The tool failed unexpectedly."}, ok=False),
                        from_app=False)
        return _Ran(result, from_app=isinstance(result, ToolResult))

    async def _search(self, turn: Turn, state: TurnState, p: _Prepared) -> _Ran:
        query = str(p.arguments.get("query", "")).strip()
        if self._d.catalog is None:
            return _Ran(ToolResult(p.id, p.name, {"error": "Tool search is not available; use the tools you have."},
                                   ok=False), from_app=False)
        if not query:
            return _Ran(ToolResult(p.id, p.name, {"error": "Tool search needs a query."}, ok=False), from_app=False)
        try:
            found = await self._d.catalog.search(turn.workspace, query, frozenset(state.tool_names))
        except LucyError as exc:
            return _Ran(ToolResult(p.id, p.name, {"error": exc.user_message}, ok=False), from_app=False)
        new = [t for t in found if t["function"]["name"] not in state.tool_names]
        state.tools = [*state.tools, *new]
        listing = [{"name": t["function"]["name"], "description": str(t["function"].get("description", ""))[:160]}
                   for t in new]
        content: Any = {"added_tools": listing} if listing else {"added_tools": [], "note": "No matching tools."}
        return _Ran(ToolResult(p.id, p.name, content), from_app=False)

    async def _stop_for(self, turn: Turn, state: TurnState, ran: list[tuple[_Prepared, _Ran]]) -> Outcome | None:
        """A needed connection or approval ends the turn (connection first: nothing can run without it)."""
        results = [r.result for _, r in ran]
        connection = next((r for r in results if isinstance(r, NeedsConnection)), None)
        if connection is not None:
            text = _connect_text(connection)
            await self._finish(turn, state, text)
            return ConnectionRequired(toolkit=connection.toolkit, connect_url=connection.connect_url, text=text)
        approvals = [r for r in results if isinstance(r, NeedsApproval)]
        if not approvals:
            return None
        first = approvals[0]
        state.pending = [p.id for p, r in ran if isinstance(r.result, NeedsApproval)]
        text = f"I need a go-ahead before I run *{first.tool}*: {first.reason}".rstrip(": ")
        await self._finish(turn, state, text)
        return ApprovalRequired(approval=first, text=text, state=state.to_json())

    # --- helpers ---------------------------------------------------------------------------

    async def _connected(self, workspace: str) -> list[str] | None:
        try:
            return list(await self._d.apps.active_toolkits(workspace))
        except LucyError as exc:
            log.warning("connected apps unavailable", error=str(exc))
            return None

    async def _tools(self, turn: Turn, history_text: str, pinned: list[str]) -> list[ToolDef]:
        try:
            tools = list(await self._d.toolset.tools_for_turn(turn.workspace, turn.text, history_text, pinned=pinned))
        except LucyError as exc:
            log.warning("tools unavailable this turn", error=str(exc))
            tools = []
        names = {t["function"]["name"] for t in tools}
        # The toolset normally sends the meta-tools itself (with the connectable apps as an enum);
        # these plain ones stand in when it did not, search only when there is a catalog to search.
        meta = [m for m in meta_tools(()) if m["function"]["name"] == CONNECT_APP or self._d.catalog is not None]
        return tools + [m for m in meta if m["function"]["name"] not in names]

    def _system(self, turn: Turn, connected: list[str] | None) -> str:
        return system_prompt(PromptContext(
            workspace_id=turn.workspace, workspace_name=turn.workspace_name, user_id=turn.user,
            user_name=turn.user_name, user_tz=turn.user_tz, now=self._d.clock(), connected=connected or (),
            apps_unavailable=connected is None))

    def _history_budget(self, prompt: _Prompt, tools: list[ToolDef], tail: list[JSON]) -> int:
        if prompt.tools_tokens[0] != len(tools):  # the list only grows (search_tools) within a turn
            prompt.tools_tokens = (len(tools), sum(self._tokens_of_tool(t) for t in tools))
        llm = self._d.llm
        used = prompt.system_tokens + prompt.tools_tokens[1] + sum(message_tokens(m) for m in tail)
        return max(0, int(llm.context_tokens * (1 - self._d.limits.context_margin)) - llm.max_output_tokens - used)

    def _fit(self, prompt: _Prompt, budget: int) -> list[JSON]:
        # Refit only when the budget no longer holds the last fit (tool outputs grew this turn).
        if prompt.fitted is not None and prompt.fitted[0] <= budget:
            return prompt.fitted[1]
        fitted, tokens = fit_history_counted(prompt.history, budget)
        prompt.fitted = (tokens, fitted)
        return fitted

    def _tokens_of_tool(self, tool: ToolDef) -> int:
        name = str(tool.get("function", {}).get("name", ""))
        tokens = self._tool_tokens.get(name)
        if tokens is None:
            if len(self._tool_tokens) > 20_000:  # bounded: a catalog is ~1,400 tools
                self._tool_tokens.clear()
            tokens = self._tool_tokens[name] = estimate_tokens(tool)
        return tokens

    def _tool_message(self, p: _Prepared, ran: _Ran) -> JSON:
        result = ran.result
        if isinstance(result, NeedsConnection):
            note = f"Nothing ran. The person was offered a Connect button for {app_name(result.toolkit)}."
            body: Any = {"status": "needs_connection", "toolkit": result.toolkit, "note": note}
        elif isinstance(result, NeedsApproval):
            body = {"status": "awaiting_approval", "approval_id": result.approval_id,
                    "note": "Nothing ran yet. A person must approve this call first."}
        elif ran.from_app:
            failed_already_says_so = isinstance(result.content, dict) and "error" in result.content
            content = result.content if result.ok or failed_already_says_so else {"error": result.content}
            body = untrusted(p.name, content, self._d.limits.tool_output_max_chars)
        else:
            body = result.content
        return {"role": "tool", "tool_call_id": p.id,
                "content": body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, default=str)}

    def _out_of_steps(self, state: TurnState) -> str:
        return (f"I stopped after {state.step} steps without finishing. "
                "Tell me what to focus on, or ask me to continue.")

    async def _finish(self, turn: Turn, state: TurnState, text: str) -> None:
        """Store what this turn added to the thread, ending with what Lucy says."""
        state.messages.append({"role": "assistant", "content": text})
        await self._save(turn, state)

    async def _save(self, turn: Turn, state: TurnState) -> None:
        new = state.messages[state.saved:]
        if not new:
            return
        try:
            await self._d.memory.append(turn.workspace, turn.channel, turn.thread_ts, new)
            state.saved = len(state.messages)
        except LucyError as exc:
            # The person still gets the answer; the next turn will miss these messages.
            log.error("could not store thread messages", error=str(exc), count=len(new))

    async def _save_cancelled(self, turn: Turn, state: TurnState) -> None:
        # Cancelled mid-turn (shutdown, a newer message): keep what happened, every call answered.
        last = state.messages[-1] if state.messages else {}
        if last.get("role") == "assistant" and last.get("tool_calls"):
            state.messages += [{"role": "tool", "tool_call_id": c["id"], "content": '{"error": "cancelled"}'}
                               for c in last["tool_calls"]]
        await asyncio.shield(self._save(turn, state))

    def _record(self, outcome: Outcome, state: TurnState, seconds: float) -> None:
        u = state.usage
        kind = type(outcome).__name__
        log.info("turn finished", outcome=kind, steps=state.step, tool_calls=state.tool_calls,
                 prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                 cost_usd=round(u.cost_usd, 6), model=u.model, seconds=round(seconds, 3))
        metrics = self._d.metrics
        if metrics is not None:
            metrics.turns.labels(outcome=_snake(kind)).inc()
            metrics.turn_seconds.observe(seconds)
            metrics.llm_tokens.labels(kind="prompt").inc(u.prompt_tokens)
            metrics.llm_tokens.labels(kind="completion").inc(u.completion_tokens)
            metrics.llm_cost.inc(u.cost_usd)


# --- pure helpers --------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def parse_arguments(raw: str) -> tuple[JSON | None, str | None]:
    """The call's arguments as an object, or why they cannot be used.

    Repairs what is unambiguous: empty → ``{}``, a code fence around the JSON, objects written
    back to back (``{}{"x":1}``, as some providers stream them), trailing commas. A cut-off
    object is refused: guessing the rest could send half an email.
    """
    text = (raw or "").strip()
    if not text:
        return {}, None
    fenced = _FENCE.match(text)
    candidates = [text, fenced.group(1)] if fenced else [text]
    candidates.append(_TRAILING_COMMA.sub(r"\1", candidates[-1]))
    for candidate in candidates:
        value = _loads_concatenated(candidate)
        if isinstance(value, dict):
            return value, None
        if value is not None:
            return None, "The arguments must be a JSON object, like {\"name\": \"value\"}. Send the call again."
    try:
        json.loads(text)
    except ValueError as exc:
        return None, f"The arguments are not valid JSON ({exc}). Send the call again with complete, valid JSON."
    return None, "The arguments are not valid JSON. Send the call again with complete, valid JSON."


def _loads_concatenated(text: str) -> Any:
    decoder = json.JSONDecoder()
    values: list[Any] = []
    index = 0
    try:
        while index < len(text):
            value, index = decoder.raw_decode(text, index)
            values.append(value)
            while index < len(text) and text[index] in " \t\r\n":
                index += 1
    except ValueError:
        return None
    if len(values) == 1:
        return values[0]
    if values and all(isinstance(v, dict) for v in values):
        merged: JSON = {}
        for v in values:
            merged.update(v)
        return merged
    return None


def _prepare(call: LLMToolCall) -> _Prepared:
    arguments, error = parse_arguments(call.arguments)
    if not call.name:
        return _Prepared(call.id, call.name, {}, "The tool call had no tool name.")
    return _Prepared(call.id, call.name, arguments or {}, error)


def _assistant_message(text: str, calls: Sequence[LLMToolCall], prepared: Sequence[_Prepared]) -> JSON:
    # Stored arguments are always valid JSON (repaired or "{}"): a later request to Anthropic
    # fails before sending anything when a stored call has invalid arguments.
    return {"role": "assistant", "content": text or None, "tool_calls": [
        {"id": c.id, "type": "function",
         "function": {"name": c.name, "arguments": json.dumps(p.arguments) if p.error is None else "{}"}}
        for c, p in zip(calls, prepared, strict=True)]}


def _cancelled(p: _Prepared) -> _Ran:
    return _Ran(ToolResult(p.id, p.name, {"error": "cancelled"}, ok=False), from_app=False)


def _connect_text(needed: NeedsConnection) -> str:
    name = app_name(needed.toolkit)
    if needed.connect_url:
        return f"To do that I need access to {name}. Connect it with the button below and I'll carry on from there."
    return (f"To do that I need access to {name}, but I couldn't get a connect link right now. "
            f"Try `/lucy-connect {needed.toolkit}`.")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def _notify(coro: Any) -> None:
    """Progress is a courtesy: a failing sink (Slack hiccup) must not fail the turn."""
    try:
        await coro
    except Exception:  # the sink is another layer's adapter; any error there is only logged
        log.warning("progress update failed", exc_info=True)
