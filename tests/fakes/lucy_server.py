"""``lucy serve`` in the test's own process, in HTTP mode, on the fake Slack, Composio and LLM.

    lucy = await start_lucy(db_dsn, fake_slack, fake_composio, fake_llm, LUCY_TOOL_TIMEOUT_SECONDS=1)
    await lucy.sender.event(fake_slack.app_mention_event(msg))   # a signed delivery to /slack/events
    await lucy.shutdown()                                         # SIGTERM's path: answers finish first

Everything between the fakes is real: Bolt, slack_sdk, the agent loop, the integrations layer on the
Composio SDK, PostgreSQL. ``start_lucy`` returns once ``/readyz`` answers 200.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from lucy.config import Settings
from tests.fakes.fake_composio import FakeComposio
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.fake_slack import FakeSlack, JSONDict, Message, SlackSender
from tests.fakes.slack_ports import SIGNING_SECRET

READY_SECONDS = 120  # importing the SDKs on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def thread(slack: FakeSlack, channel: str, ts: str) -> list[str]:
    """Lucy's finished messages in a thread (a stream still being written does not count yet)."""
    return [m.text for m in slack.bot_messages_in(channel, ts) if not m.streaming]


@dataclass
class Lucy:
    slack: FakeSlack
    composio: FakeComposio
    llm: FakeLLM
    sender: SlackSender
    base: str
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        """Stop serving; answers in progress are finished first (so assertions after this are final)."""
        if not self.task.done():
            self.stop.set()
            await asyncio.wait_for(self.task, 60)

    async def get(self, path: str, **params: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(self.base + path, params=params) as resp:
            return resp.status, await resp.text()

    async def click(self, button: JSONDict, user: str, message: Message) -> int:
        delivery = await self.sender.action(button["action_id"], button["value"], user=user, channel=message.channel,
                                            message_ts=message.ts)
        return delivery.status


async def start_lucy(db_dsn: str, slack: FakeSlack, composio: FakeComposio, llm: FakeLLM, **env: Any) -> Lucy:
    """Serve on a free port with the fakes' URLs and keys; ``env`` adds or overrides settings."""
    from lucy.serve import serve

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values: dict[str, Any] = {
        "DATABASE_URL": db_dsn, "PORT": port, "LUCY_PUBLIC_URL": base, "REDIS_URL": None,
        "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
        "SLACK_APP_TOKEN": None, "SLACK_CLIENT_ID": None, "SLACK_CLIENT_SECRET": None,
        "COMPOSIO_API_KEY": composio.api_key, "COMPOSIO_BASE_URL": composio.base_url,
        "LLM_MODEL": "openai/fake", "LLM_API_BASE": llm.base_url, "LLM_API_KEY": "sk-test",
        "LLM_CONTEXT_TOKENS": 128000, "LUCY_EMBEDDING_MODEL": "off", **env,
    }
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve(settings, stop))
    deadline = time.monotonic() + READY_SECONDS
    async with aiohttp.ClientSession() as session:
        while True:
            if task.done():
                task.result()  # raises what made serve stop
            try:
                async with session.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "lucy serve never became ready"
            await asyncio.sleep(0.1)
    return Lucy(slack, composio, llm, SlackSender(f"{base}/slack/events", SIGNING_SECRET, slack), base, stop, task)
