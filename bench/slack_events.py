"""Slack layer figures: how fast Lucy acks an event (Slack wants 200 within 3 s), how fast the person
sees "is thinking…", and what a redelivered event costs. Real Bolt, real HTTP, real PostgreSQL, the
fake Slack from tests/fakes; the agent is scripted (answers at once), so this measures Lucy's Slack
layer, not a model.

Run: .venv/bin/python bench/slack_events.py [--events 200] [--database-url postgresql://postgres@127.0.0.1/postgres]

The database URL names a server where a throwaway database may be created (default: TEST_DATABASE_URL
or postgres on 127.0.0.1:5432). Prints medians and 95th percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from lucy.core.types import Answer
from lucy.db.migrate import migrate_dsn
from lucy.db.pool import create_pool
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.slack_ports import ScriptedAgent, SlackHarness


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(admin_dsn: str, events: int) -> None:
    name = f"lucy_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    try:
        await migrate_dsn(dsn)
        pool = await create_pool(dsn, min_size=2, max_size=10)
        try:
            await measure(pool, events)
        finally:
            await pool.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def measure(pool: object, events: int) -> None:
    async with FakeSlack() as slack:
        agent = ScriptedAgent(default=Answer("ok"))
        async with SlackHarness.start(pool, slack, agent=agent) as h:
            acks: list[float] = []
            feedback: list[float] = []
            retries: list[float] = []
            for i in range(events):
                msg = slack.user_message("C0BENCH", "U0ALICE", f"<@U0LUCY> question {i}")
                body = slack.app_mention_event(msg)
                before = len(slack.calls("assistant.threads.setStatus"))
                start = time.perf_counter()
                delivery = await h.sender.event(body)
                acks.append((time.perf_counter() - start) * 1000)
                assert delivery.status == 200
                await slack.wait_for(lambda b=before: len(slack.calls("assistant.threads.setStatus")) > b)  # type: ignore[misc]
                feedback.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                await h.sender.event(body, retry_num=1)
                retries.append((time.perf_counter() - start) * 1000)
            await h.idle()
            answered = sum(1 for m in slack.messages if m.is_bot)
    print(f"events: {events} (each delivered twice), answers posted: {answered}, agent turns: {len(agent.turns)}")
    for label, values in (("ack (HTTP 200)", acks), ("'is thinking…' shown", feedback),
                          ("redelivery dropped", retries)):
        print(f"{label:24s} median {statistics.median(values):7.1f} ms   p95 {pct(values, 0.95):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--database-url", default=os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    from lucy.log import configure

    configure("warning", "console")
    asyncio.run(run(args.database_url, args.events))


if __name__ == "__main__":
    main()
