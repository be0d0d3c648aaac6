"""The cache keeps workspaces apart and survives Redis going away."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator

import pytest

from lucy.cache import Cache, memory_cache, redis_cache


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, redis_url: str, cache_prefix: str) -> AsyncIterator[Cache]:
    c = memory_cache(cache_prefix) if request.param == "memory" else redis_cache(redis_url, cache_prefix)
    yield c
    await c.close()


async def test_workspace_keys_never_collide(cache: Cache) -> None:
    await cache.set("toolkits", "T1", value=["github"])
    await cache.set("toolkits", "T10", value=["gmail"])
    await cache.set("toolkits", "E1:T1", value=["notion"])
    assert await cache.get("toolkits", "T1") == ["github"]
    assert await cache.get("toolkits", "T10") == ["gmail"]
    assert await cache.get("toolkits", "E1:T1") == ["notion"]
    await cache.delete("toolkits", "T1")
    assert await cache.get("toolkits", "T1") is None
    assert await cache.get("toolkits", "T10") == ["gmail"]


async def test_values_are_copies(cache: Cache) -> None:
    await cache.set("toolkits", "T1", value=["github"])
    got = await cache.get("toolkits", "T1")
    got.append("mutated")
    assert await cache.get("toolkits", "T1") == ["github"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_redis(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        await asyncio.sleep(0.05)
    server.kill()
    raise AssertionError("redis-server did not start")


async def test_redis_gone_falls_back_to_memory_and_recovers(cache_prefix: str) -> None:
    port = _free_port()
    server = await _start_redis(port)
    cache = redis_cache(f"redis://127.0.0.1:{port}/0", cache_prefix, retry_after=0.2)
    try:
        await cache.set("k", "T1", value="from-redis")
        assert await cache.get("k", "T1") == "from-redis"
        server.terminate()
        server.wait(10)
        # Redis is gone: no exception reaches the caller, the in-process fallback serves.
        await cache.set("k", "T1", value="from-memory")
        assert cache.degraded
        assert await cache.get("k", "T1") == "from-memory"
        # Redis is back (empty, it keeps nothing on disk): Lucy uses it again without a restart.
        server = await _start_redis(port)
        await asyncio.sleep(0.3)
        await cache.set("k", "T1", value="redis-again")
        assert not cache.degraded
        assert await cache.get("k", "T1") == "redis-again"
    finally:
        await cache.close()
        server.kill()
        server.wait(10)
