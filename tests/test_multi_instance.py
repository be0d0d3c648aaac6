"""Two real ``python -m lucy serve`` processes (HTTP mode) sharing one PostgreSQL and one Redis,
taking one stream of signed events through a round-robin "load balancer" in the test.

Slack's stream is what a load balancer in front of several instances sees: the ``app_mention`` and
``message.channels`` deliveries of one message land on different instances, and a retry of an event
lands on the other instance than the first delivery. Every message must be answered once, every
tool executed once (for the right workspace), and the caches and rate limits are shared.

The fakes (Slack, Composio, LLM) run in this test process; the instances reach them over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.fake_composio import FakeComposio
from tests.fakes.fake_llm import FakeLLM, RecordedRequest, Reply, text, tool_call
from tests.fakes.fake_slack import Delivery, FakeSlack, SlackSender
from tests.fakes.lucy_server import free_port, thread
from tests.fakes.slack_ports import SIGNING_SECRET

CHANNEL = "C0GENERAL"
WS = "T0001"
READY_SECONDS = 180.0  # each process imports litellm, Composio and Bolt: slow on a loaded 2-core machine
_DROP = ("SLACK_", "COMPOSIO_", "LLM_", "LUCY_", "DATABASE_URL", "REDIS_URL", "PORT", "LOG_")


def lucy_env(*, db_dsn: str, slack: FakeSlack, composio: FakeComposio, llm: FakeLLM, port: int,
             **extra: str) -> dict[str, str]:
    """The environment of one ``lucy serve`` pointed at the fakes (nothing inherited from ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PORT": str(port), "LUCY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": db_dsn, "LOG_FORMAT": "json", "LOG_LEVEL": "info",
        "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
        "COMPOSIO_API_KEY": composio.api_key, "COMPOSIO_BASE_URL": composio.base_url,
        "LLM_MODEL": "openai/fake", "LLM_API_BASE": llm.base_url, "LLM_API_KEY": "sk-test",
        "LLM_CONTEXT_TOKENS": "128000", "LUCY_EMBEDDING_MODEL": "off",
    })
    env.update(extra)
    return env


@dataclass
class LucyProcess:
    """One ``python -m lucy serve`` child process; its log (JSON lines) goes to ``log_path``."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    sender: SlackSender | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, slack: FakeSlack) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lucy", "serve"], env=self.env,
                                         cwd=self.log_path.parent, stdout=log, stderr=subprocess.STDOUT)
        self.sender = SlackSender(f"{self.base}/slack/events", SIGNING_SECRET, slack)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.proc is not None
                assert self.proc.poll() is None, f"{self.name} exited early:\n{self.log()}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                assert time.monotonic() < deadline, f"{self.name} never became ready:\n{self.log()}"
                await asyncio.sleep(0.2)

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(self.base + path) as resp:
            return resp.status, await resp.text()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"{self.name} did not exit after SIGTERM:\n{self.log()}"
            await asyncio.sleep(0.1)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events


async def start_instances(names: list[str], tmp_path: Path, slack: FakeSlack, **env_kw: Any) -> list[LucyProcess]:
    procs = []
    for name in names:
        port = free_port()
        procs.append(LucyProcess(name, port, lucy_env(port=port, slack=slack, **env_kw), tmp_path / f"{name}.log"))
    for p in procs:
        p.start(slack)
    try:
        await asyncio.gather(*(p.wait_ready() for p in procs))
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return procs


@dataclass
class RoundRobin:
    """The load balancer: each delivery goes to the next instance."""

    instances: list[LucyProcess]
    _next: Any = field(default=None)

    def __post_init__(self) -> None:
        self._next = itertools.cycle(range(len(self.instances)))

    async def event(self, envelope: dict[str, Any], *, to: int | None = None, **kw: Any) -> Delivery:
        index = next(self._next) if to is None else to
        sender = self.instances[index].sender
        assert sender is not None
        return await sender.event(envelope, **kw)


_MARK = re.compile(r"\bQ(\d+)\b")


def responder(request: RecordedRequest) -> Reply:
    """The model: creates the issue when asked (then reports it), otherwise echoes the question's mark."""
    last = request.messages[-1]
    if last.get("role") == "tool":
        return text("Created issue #42.", delay=0.05)
    said = str(last.get("content"))
    if "create a github issue" in said:
        return tool_call("GITHUB_CREATE_AN_ISSUE", {"owner": "acme", "repo": "web", "title": "Login fails"})
    mark = _MARK.search(said)
    return text(f"Answer to Q{mark.group(1) if mark else '?'}.", delay=0.05)


@pytest.fixture
async def two(tmp_path: Path, db_dsn: str, redis_url: str, cache_prefix: str, fake_slack: FakeSlack,
              fake_composio: FakeComposio, fake_llm: FakeLLM) -> AsyncIterator[list[LucyProcess]]:
    fake_llm.responder = responder
    procs = await start_instances(
        ["a", "b"], tmp_path, fake_slack, db_dsn=db_dsn, composio=fake_composio, llm=fake_llm,
        REDIS_URL=redis_url, LUCY_REDIS_PREFIX=cache_prefix,
        LUCY_RATE_USER_TURNS="3", LUCY_RATE_WINDOW_SECONDS="3600",
    )
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        codes = []
        for p in procs:
            try:
                codes.append(await p.wait_exit(60))
            finally:
                p.kill()
        assert codes == [0, 0], [p.log()[-3000:] for p in procs]
        errors = [e for p in procs for e in p.log_events() if e.get("level") in ("error", "critical")]
        assert not errors, errors


async def test_two_instances_answer_each_message_once_and_share_caches_and_limits(
    two: list[LucyProcess], fake_slack: FakeSlack, fake_composio: FakeComposio, fake_llm: FakeLLM,
) -> None:
    slack, composio, lb = fake_slack, fake_composio, RoundRobin(two)
    composio.connect(WS, "github")
    composio.set_result("GITHUB_CREATE_AN_ISSUE", {"number": 42})

    # One message, four deliveries: mention on a, its message twin on b, retries crossing over.
    msg = slack.user_message(CHANNEL, "U0ALICE", "<@U0LUCY> create a github issue in acme/web: Login fails")
    mention = slack.app_mention_event(msg)
    deliveries = [
        await lb.event(mention, to=0),
        await lb.event(slack.message_event(msg), to=1),
        await lb.event(mention, to=1, retry_num=1),
        await lb.event(mention, to=0, retry_num=2),
    ]
    # The first turn fills the shared cache before the crowd comes: two instances missing it at the
    # same moment would each ask Composio (single flight is per process), which proves nothing here.
    await slack.wait_for(lambda: thread(slack, CHANNEL, msg.ts), timeout=60)
    # Many people at once, round robin; every message also comes as its message.channels twin.
    people = [f"U0P{i:02d}" for i in range(8)]
    for user in people:
        slack.add_user(user, user.lower(), f"Person {user}", "UTC")
    asks = [slack.user_message(CHANNEL, user, f"<@U0LUCY> question Q{i}") for i, user in enumerate(people)]
    sent = await asyncio.gather(*(lb.event(slack.app_mention_event(m)) for m in asks),
                                *(lb.event(slack.message_event(m)) for m in asks))
    await slack.wait_for(lambda: thread(slack, CHANNEL, msg.ts) and all(thread(slack, CHANNEL, m.ts) for m in asks),
                         timeout=60)

    # One person over the per-person limit (3 per hour), alternating instances.
    bob = [slack.user_message(CHANNEL, "U0BOB", f"<@U0LUCY> question Q{100 + i}") for i in range(4)]
    for i, m in enumerate(bob):
        await lb.event(slack.app_mention_event(m), to=i % 2)
        await slack.wait_for(lambda m=m: thread(slack, CHANNEL, m.ts), timeout=30)
    await asyncio.sleep(0.5)  # anything duplicated would show up by now

    assert {d.status for d in [*deliveries, *sent]} == {200}
    assert thread(slack, CHANNEL, msg.ts) == ["Created issue #42."]
    assert [(e.user_id, e.slug) for e in composio.executes] == [(WS, "GITHUB_CREATE_AN_ISSUE")]
    for i, m in enumerate(asks):
        assert thread(slack, CHANNEL, m.ts) == [f"Answer to Q{i}."]
    assert [thread(slack, CHANNEL, m.ts) for m in bob[:3]] == [["Answer to Q100."], ["Answer to Q101."],
                                                                ["Answer to Q102."]]
    [limited] = thread(slack, CHANNEL, bob[3].ts)
    assert limited.startswith("You're going a bit fast for me: I answer up to 3 requests an hour per person.")
    # 8 + 3 questions, the issue request twice (tool call, then its answer); the limited one never reached the model.
    assert len(fake_llm.requests) == 8 + 3 + 2
    # Both instances worked, and shared the cache: Composio was asked for the workspace's connections once,
    # and Slack for each person's profile once, though both instances answered that workspace and Bob.
    answered_by = {p.name: sum(1 for e in p.log_events() if e.get("event") == "turn finished") for p in two}
    assert all(answered_by.values()), answered_by
    assert composio.count("GET", "/connected_accounts") == 1
    bob_lookups = [c for c in slack.calls("users.info") if c.args.get("user") == "U0BOB"]
    assert len(bob_lookups) == 1
