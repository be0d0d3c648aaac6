"""Lucy's own work per agent turn: everything except waiting for the LLM and Composio.

    .venv/bin/python bench/agent_turn.py [--turns 300] [--concurrency 50] [--database-url postgresql://…]

Every turn is a follow-up in one of 50 threads (each seeded with 20 messages), with 5 toolkits
connected (github, gmail, googlecalendar, notion, googledrive), and two steps: the model calls a
tool, reads its result, answers. Thread memory is the real PostgreSQL (a throwaway database on
``--database-url``, default ``$TEST_DATABASE_URL`` or postgres@127.0.0.1:5432).

Two set-ups, each timed per turn (median, p99 in ms; turns run one after another):

* ``loop`` — the agent loop with instant in-process ports (LLM, toolset with 20 real tool
  definitions, executor): prompt, history load + fit, argument parsing, tool dispatch, result
  fencing, thread writes. This is the part of the turn ``lucy/core/agent.py`` owns.
* ``stack`` — the real LLM adapter (for ``openai/…`` models its direct OpenAI wire client;
  ``LUCY_LLM_CLIENT=litellm`` for litellm) against the fake OpenAI server, the real toolset (registry, schema
  cache, ToolSelector) and IntegrationWorker (validation, policy, audit row) against the fake
  Composio. Lucy's own = turn − time inside the LLM call (litellm's client work + the local fake
  server) − time inside Composio's execute.

Memory per concurrent turn: ``--concurrency`` turns are held in flight at their second model call
(all state built), and traced Python memory (tracemalloc) above the idle baseline is divided by
their number. Figures vary with machine load; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from lucy.core.agent import AgentDeps, AgentLimits, LucyAgent  # noqa: E402
from lucy.core.llm import LLMReply, LLMToolCall  # noqa: E402
from lucy.core.memory import ThreadMemory, user_message  # noqa: E402
from lucy.core.types import JSON, ExecuteResult, ToolCall, ToolDef, ToolResult, Turn, Usage  # noqa: E402

TOOLKITS = ["github", "gmail", "googlecalendar", "notion", "googledrive"]
TOOLS_DIR = ROOT.parent / "shared" / "composio" / "tools"
WORKSPACE = "T0BENCH01"
THREADS = 50
REQUEST = "create a github issue in acme/app titled 'Login broken on Safari' and tell me my next meeting"
TOOL_RESULT = {"number": 1347, "html_url": "https://github.com/acme/app/issues/1347", "state": "open",
               "title": "Login broken on Safari", "body": "Steps to reproduce: " + "open the login page. " * 60,
               "labels": [{"name": "bug"}, {"name": "p1"}], "user": {"login": "lucy-bot"}}


def load_tool_definitions(per_toolkit: int = 4) -> list[ToolDef]:
    """Real Composio tools in OpenAI format (what the toolset sends): 4 per toolkit, 20 in all."""
    tools: list[ToolDef] = []
    for toolkit in TOOLKITS:
        raw = json.loads((TOOLS_DIR / f"{toolkit}.json").read_text())
        for t in raw[:per_toolkit]:
            tools.append({"type": "function", "function": {
                "name": t["slug"], "description": t.get("description", ""),
                "parameters": t.get("input_parameters") or {"type": "object", "properties": {}}}})
    return tools


# --- instant ports (the `loop` set-up) ---------------------------------------------------------------


class InstantLLM:
    """The LLM port answering at once: a tool call first, then the answer. ``gate`` holds step 2."""

    def __init__(self, tool: str) -> None:
        self._tool = tool
        self.gate: asyncio.Event | None = None
        self.parked = 0
        self.expected = 0
        self.all_parked = asyncio.Event()

    @property
    def context_tokens(self) -> int:
        return 128_000

    @property
    def max_output_tokens(self) -> int:
        return 4096

    async def complete(self, messages: Sequence[JSON], tools: Sequence[ToolDef], *, tool_choice: str = "auto",
                       on_text: Any = None) -> LLMReply:
        usage = Usage(prompt_tokens=3000, completion_tokens=40, cost_usd=0.0005, model="instant")
        if messages[-1].get("role") != "tool":
            args = json.dumps({"owner": "acme", "repo": "app", "title": "Login broken on Safari"})
            return LLMReply(text="", tool_calls=(LLMToolCall(f"call_{uuid.uuid4().hex[:12]}", self._tool, args),),
                            usage=usage, finish_reason="tool_calls")
        if self.gate is not None:
            self.parked += 1
            if self.parked >= self.expected:
                self.all_parked.set()
            await self.gate.wait()
        text = "Created <https://github.com/acme/app/issues/1347|#1347>. Your next meeting is standup at 09:00."
        if on_text is not None:
            await on_text(text)
        return LLMReply(text=text, usage=usage)


class InstantToolset:
    def __init__(self, tools: list[ToolDef]) -> None:
        self._tools = tools

    async def tools_for_turn(
        self, workspace: str, request: str, history_text: str = "", *, pinned: Sequence[str] = ()
    ) -> list[ToolDef]:
        return self._tools


class InstantExecutor:
    async def execute(self, turn: Turn, call: ToolCall) -> ExecuteResult:
        return ToolResult(call.id, call.name, TOOL_RESULT)


class FiveApps:
    async def active_toolkits(self, workspace: str) -> list[str]:
        return list(TOOLKITS)


class QuietProgress:
    async def tool_started(self, call: ToolCall) -> None:
        return None

    async def tool_finished(self, call: ToolCall, result: ExecuteResult) -> None:
        return None

    async def text_delta(self, text: str) -> None:
        return None


# --- timing wrappers (the `stack` set-up) --------------------------------------------------------------


@dataclass
class Waits:
    llm: float = 0.0
    composio: float = 0.0


class TimedLLM:
    def __init__(self, inner: Any, waits: Waits) -> None:
        self._inner = inner
        self._waits = waits

    @property
    def context_tokens(self) -> int:
        return int(self._inner.context_tokens)

    @property
    def max_output_tokens(self) -> int:
        return int(self._inner.max_output_tokens)

    async def complete(self, *args: Any, **kwargs: Any) -> LLMReply:
        start = time.perf_counter()
        try:
            reply: LLMReply = await self._inner.complete(*args, **kwargs)
            return reply
        finally:
            self._waits.llm += time.perf_counter() - start


class TimedComposio:
    """Delegates to the real ComposioClient, timing execute (the wait for the app)."""

    def __init__(self, inner: Any, waits: Waits) -> None:
        self._inner = inner
        self._waits = waits

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await self._inner.execute(*args, **kwargs)
        finally:
            self._waits.composio += time.perf_counter() - start


# --- database ----------------------------------------------------------------------------------------


async def make_database(admin_dsn: str) -> tuple[str, Any, Any]:
    """A throwaway database; its pools as ``lucy serve`` opens them: durable, and records
    (thread messages and audit rows, which commit without waiting for the WAL flush)."""
    import asyncpg

    from lucy.db.migrate import migrate_dsn
    from lucy.db.pool import create_pool

    name = f"lucy_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    await migrate_dsn(dsn)
    return (name, await create_pool(dsn, min_size=2, max_size=20),
            await create_pool(dsn, min_size=2, max_size=10, synchronous_commit=False))


async def drop_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def seed_threads(memory: ThreadMemory) -> None:
    for n in range(THREADS):
        messages: list[JSON] = []
        for i in range(5):
            cid = f"call_seed_{n}_{i}"
            messages += [
                user_message(f"earlier request {i}: list my open issues", "U0BENCH", "Ada"),
                {"role": "assistant", "content": None, "tool_calls": [{"id": cid, "type": "function", "function": {
                    "name": "GITHUB_LIST_REPOSITORY_ISSUES", "arguments": '{"owner":"acme","repo":"app"}'}}]},
                {"role": "tool", "tool_call_id": cid, "content": json.dumps({"issues": [TOOL_RESULT] * 2})},
                {"role": "assistant", "content": f"You have {i + 2} open issues."},
            ]
        await memory.append(WORKSPACE, "C0BENCH", f"1700000000.{n:06d}", messages)


def turn_for(i: int) -> Turn:
    return Turn(workspace=WORKSPACE, user="U0BENCH", channel="C0BENCH", thread_ts=f"1700000000.{i % THREADS:06d}",
                text=REQUEST, ts=f"1700000001.{i:06d}", user_name="Ada", user_tz="Europe/Oslo",
                workspace_name="Acme")


# --- runs --------------------------------------------------------------------------------------------


def summary(values_ms: list[float]) -> str:
    ordered = sorted(values_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered):6.2f} ms   p99 {p99:6.2f} ms"


@dataclass
class Timings:
    wall: list[float]  # ms per turn
    own: list[float]  # ms per turn, minus the waits
    cpu: list[float]  # ms of this process's CPU per turn (PostgreSQL's own work not included)


async def time_turns(agent: LucyAgent, turns: int, waits: Waits | None, start: int) -> Timings:
    timings = Timings([], [], [])
    progress = QuietProgress()
    for i in range(turns):
        if waits is not None:
            waits.llm = waits.composio = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = await agent.run_turn(turn_for(start + i), progress)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert type(outcome).__name__ == "Answer", outcome
        timings.wall.append(elapsed * 1000)
        timings.own.append((elapsed - (waits.llm + waits.composio if waits else 0.0)) * 1000)
        timings.cpu.append(cpu * 1000)
    return timings


async def memory_per_turn(agent: LucyAgent, llm: InstantLLM, concurrency: int, start: int) -> float:
    """KiB of traced Python memory per turn held at its second model call."""
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    llm.gate, llm.parked, llm.expected = asyncio.Event(), 0, concurrency
    llm.all_parked.clear()
    tasks = [asyncio.create_task(agent.run_turn(turn_for(start + i), QuietProgress())) for i in range(concurrency)]
    await llm.all_parked.wait()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - baseline
    llm.gate.set()
    await asyncio.gather(*tasks)
    tracemalloc.stop()
    llm.gate = None
    return held / concurrency / 1024


async def bench_loop(records: Any, turns: int, concurrency: int) -> None:
    tools = load_tool_definitions()
    llm = InstantLLM(tools[0]["function"]["name"])
    agent = LucyAgent(AgentDeps(llm=llm, toolset=InstantToolset(tools), executor=InstantExecutor(),
                                memory=ThreadMemory(records), apps=FiveApps(), limits=AgentLimits()))
    await time_turns(agent, 30, None, 0)  # warm-up: connections, code paths
    t = await time_turns(agent, turns, None, 1000)
    print(f"loop   Lucy's own time per turn ({turns} turns, 2 steps, {len(tools)} tools): {summary(t.wall)}")
    print(f"loop   of which CPU in Lucy's process:                        {summary(t.cpu)}")
    kib = await memory_per_turn(agent, llm, concurrency, 5000)
    print(f"loop   memory per concurrent turn ({concurrency} in flight): {kib:,.0f} KiB")


async def bench_stack(pool: Any, records: Any, turns: int) -> None:
    from lucy.cache import memory_cache
    from lucy.config import Settings
    from lucy.core.llm import LiteLLM, LLMConfig
    from lucy.integrations.composio_client import ComposioClient
    from lucy.integrations.selection import ToolSelector
    from lucy.integrations.worker import build_integrations
    from tests.fakes.fake_composio import FakeComposio
    from tests.fakes.fake_llm import FakeLLM, RecordedRequest, Reply, text, tool_call

    def respond(request: RecordedRequest) -> Reply:
        if request.messages[-1].get("role") == "tool":
            return text("Created #1347. Your next meeting is standup at 09:00.")
        return tool_call("GITHUB_CREATE_AN_ISSUE", {"owner": "acme", "repo": "app", "title": "Login broken"})

    waits = Waits()
    async with FakeLLM() as fake_llm, FakeComposio() as composio:
        fake_llm.responder = respond
        for toolkit in TOOLKITS:
            composio.connect(WORKSPACE, toolkit)
        composio.set_result("GITHUB_CREATE_AN_ISSUE", TOOL_RESULT)
        settings = Settings(_env_file=None, COMPOSIO_API_KEY=composio.api_key,  # type: ignore[call-arg]
                            COMPOSIO_BASE_URL=composio.base_url)
        client = TimedComposio(ComposioClient(api_key=composio.api_key, base_url=composio.base_url), waits)
        cache = memory_cache(f"bench-{uuid.uuid4().hex[:6]}")
        integrations = build_integrations(settings, pool, cache, client=client, selector=ToolSelector(),
                                          audit_pool=records)
        llm = LiteLLM(LLMConfig(model="openai/gpt-4o-mini", api_base=fake_llm.base_url, api_key="sk-bench",
                                client="litellm" if os.environ.get("LUCY_LLM_CLIENT") == "litellm" else "auto"))
        agent = LucyAgent(AgentDeps(
            llm=TimedLLM(llm, waits), toolset=integrations.toolset, executor=integrations.worker,
            memory=ThreadMemory(records), apps=_RegistryApps(integrations.registry), catalog=integrations.toolset))
        try:
            await time_turns(agent, 30, waits, 20000)  # warm-up: schema caches, selector indexes, clients
            t = await time_turns(agent, turns, waits, 21000)
        finally:
            await integrations.aclose()
            await cache.close()
            await llm.aclose()
    print(f"stack  whole turn with local fakes ({turns} turns):            {summary(t.wall)}")
    print(f"stack  Lucy's own time (turn − LLM call − Composio execute):  {summary(t.own)}")
    print(f"stack  CPU of the whole process per turn (incl. litellm, both fakes): {summary(t.cpu)}")


class _RegistryApps:
    def __init__(self, registry: Any) -> None:
        self._registry = registry

    async def active_toolkits(self, workspace: str) -> list[str]:
        return sorted(await self._registry.active_toolkits(workspace))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--database-url", default=os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), help="an admin DSN")
    parser.add_argument("--skip-stack", action="store_true", help="only the agent loop with instant ports")
    args = parser.parse_args()

    import logging

    logging.getLogger().setLevel(logging.WARNING)  # per-turn info lines would dominate the timing
    from lucy.log import configure

    configure("warning", "console")
    name, pool, records = await make_database(args.database_url)
    try:
        await seed_threads(ThreadMemory(records))
        await bench_loop(records, args.turns, args.concurrency)
        if not args.skip_stack:
            await bench_stack(pool, records, args.turns)
    finally:
        await records.close()
        await pool.close()
        await drop_database(args.database_url, name)


if __name__ == "__main__":
    asyncio.run(main())
