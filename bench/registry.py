"""Benchmark: how long "which apps has this workspace connected?" takes, cached and cold.

Runs the real registry (and the real toolset on top of it) against the fake Composio server on
127.0.0.1, a throwaway PostgreSQL database and, when reachable, Redis — all in one process and
one run, next to a plain-dict baseline, and prints a Markdown table of p50/p99 latencies.

    .venv/bin/python bench/registry.py [--n 20000] [--cold 300] [--workspaces 1000]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/0]

``--database-url`` is an admin DSN: a database ``lucy_bench_*`` is created, migrated and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


Rows = list[tuple[str, int, list[int]]]


async def measure(name: str, n: int, call: Callable[[], Awaitable[Any]], rows: Rows) -> None:
    for _ in range(min(200, n)):  # warm up
        await call()
    samples: list[int] = []
    gc.disable()
    try:
        for _ in range(n):
            start = time.perf_counter_ns()
            await call()
            samples.append(time.perf_counter_ns() - start)
    finally:
        gc.enable()
    rows.append((name, n, samples))


def table(rows: list[tuple[str, int, list[int]]]) -> str:
    lines = ["| lookup | n | p50 | p99 | mean |", "|---|---:|---:|---:|---:|"]
    for name, n, samples in rows:
        ordered = sorted(samples)
        p50 = ordered[len(ordered) // 2] / 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
        mean = statistics.fmean(samples) / 1000
        lines.append(f"| {name} | {n:,} | {fmt(p50)} | {fmt(p99)} | {fmt(mean)} |")
    return "\n".join(lines)


def fmt(us: float) -> str:
    return f"{us:,.1f} µs" if us < 1000 else f"{us / 1000:,.2f} ms"


def dict_baseline(ttl: float) -> Callable[[str], Awaitable[frozenset[str]]]:
    """What a hand-written in-process cache would cost: a dict and a monotonic-clock TTL."""
    store: dict[str, tuple[float, frozenset[str]]] = {}

    async def lookup(workspace: str) -> frozenset[str]:
        hit = store.get(workspace)
        now = time.monotonic()
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = frozenset({"github", "gmail"})
        store[workspace] = (now, value)
        return value

    return lookup


async def redis_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 6379), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def main(args: argparse.Namespace) -> None:
    import asyncpg
    import structlog

    from lucy.cache import Cache, memory_cache, redis_cache
    from lucy.db.migrate import migrate_dsn
    from lucy.db.pool import create_pool
    from lucy.integrations.composio_client import ComposioClient
    from lucy.integrations.registry import IntegrationRegistry
    from lucy.integrations.schemas import ToolSchemaCache
    from lucy.integrations.toolset import WorkspaceToolset
    from tests.fakes.fake_composio import FakeComposio

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: no log I/O in loops
    admin = args.database_url
    name = f"lucy_bench_{uuid.uuid4().hex[:8]}"
    dsn = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    rows: list[tuple[str, int, list[int]]] = []
    caches: list[Cache] = []
    try:
        await migrate_dsn(dsn)
        pool = await create_pool(dsn, min_size=2, max_size=10)
        async with FakeComposio() as fake:
            workspaces = [f"T{i:05d}" for i in range(args.workspaces)]
            for i, ws in enumerate(workspaces):
                fake.connect(ws, "github")
                if i % 2:
                    fake.connect(ws, "gmail")
            client = ComposioClient(api_key=fake.api_key, base_url=fake.base_url)
            backends: list[tuple[str, Cache]] = [("in-process (aiocache memory)", memory_cache(f"bench-{name}"))]
            if await redis_reachable(args.redis_url):
                backends.append(("Redis (aiocache, loopback)", redis_cache(args.redis_url, f"bench-{name}")))
            else:
                print(f"(Redis at {args.redis_url} not reachable: skipped)", file=sys.stderr)
            caches.extend(c for _, c in backends)

            baseline = dict_baseline(300)
            it = iter(range(10**12))
            await measure("plain dict + TTL (baseline)", args.n,
                          lambda: baseline(workspaces[next(it) % len(workspaces)]), rows)
            for label, cache in backends:
                registry = IntegrationRegistry(client, pool, cache, ttl=300)
                for ws in workspaces:
                    await registry.active(ws)
                await measure(f"registry, cached, {label}", args.n,
                              lambda r=registry: r.active_toolkits(workspaces[next(it) % len(workspaces)]), rows)

            registry = IntegrationRegistry(client, pool, memory_cache(f"cold-{name}"), ttl=300)

            async def cold() -> None:
                ws = workspaces[next(it) % len(workspaces)]
                await registry.invalidate(ws)
                await registry.active_toolkits(ws)  # Composio (fake, loopback) + a PostgreSQL write

            await measure("registry, cold (Composio fake on loopback + PostgreSQL)", args.cold, cold, rows)

            schemas = ToolSchemaCache(client, memory_cache(f"schemas-{name}"))
            warm = IntegrationRegistry(client, pool, memory_cache(f"warm-{name}"), ttl=300)
            await schemas.toolkits(["github", "gmail"])
            toolset = WorkspaceToolset(warm, schemas, connectable=fake.toolkits)
            for ws in workspaces:
                await warm.active(ws)
            await measure("tools_for_turn, cached, 128-cap (no selector)", max(args.n // 10, 100),
                          lambda: toolset.tools_for_turn(workspaces[next(it) % len(workspaces)], "open an issue"), rows)
            try:
                from lucy.integrations.selection import ToolSelector
            except ImportError:
                ToolSelector = None
            if ToolSelector is not None:
                ranked = WorkspaceToolset(warm, schemas, selector=ToolSelector(), connectable=fake.toolkits)
                await ranked.tools_for_turn(workspaces[0], "warm the index")
                await measure("tools_for_turn, cached, with ToolSelector", max(args.n // 20, 100),
                              lambda: ranked.tools_for_turn(workspaces[next(it) % len(workspaces)],
                                                            "close acme/web#377, it's a dupe of #350"), rows)
            await client.aclose()
        await pool.close()
    finally:
        for cache in caches:
            await cache.close()
        conn = await asyncpg.connect(admin)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.workspaces:,} workspaces, "
          f"TTL 300 s, GC off while timing\n")
    print(table(rows))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="cached lookups per row")
    parser.add_argument("--cold", type=int, default=300, help="cold lookups")
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--database-url", default=os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
