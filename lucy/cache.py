"""The shared cache: aiocache in-process by default, Redis when ``REDIS_URL`` is set.

Keys are built from parts that are each percent-encoded and joined with ':', so ``("T1", "x")``
and ``("T10", "x")`` can never meet, whatever the backend does with namespaces (aiocache's
memory backend joins namespace and key with no separator). Values are pickled so a caller can
never mutate what another caller reads.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from lucy.log import get_logger

log = get_logger("lucy.cache")


def cache_key(*parts: str, prefix: str = "lucy") -> str:
    return prefix + ":" + ":".join(quote(p, safe="") for p in parts)


class Cache:
    """A thin typed wrapper over an aiocache backend."""

    def __init__(self, backend: Any, kind: str, prefix: str = "lucy") -> None:
        self._backend = backend
        self.kind = kind
        self.prefix = prefix  # tests give each run its own prefix on a shared Redis

    def key(self, *parts: str) -> str:
        return cache_key(*parts, prefix=self.prefix)

    async def get(self, *parts: str) -> Any:
        return await self._backend.get(self.key(*parts))

    async def set(self, *parts: str, value: Any, ttl: float | None = None) -> None:
        await self._backend.set(self.key(*parts), value, ttl=ttl)

    async def delete(self, *parts: str) -> None:
        await self._backend.delete(self.key(*parts))

    async def close(self) -> None:
        await self._backend.close()


def memory_cache(prefix: str = "lucy") -> Cache:
    from aiocache import SimpleMemoryCache
    from aiocache.serializers import PickleSerializer

    # timeout=None: aiocache would otherwise wrap every call in asyncio.wait_for (~4x slower).
    return Cache(SimpleMemoryCache(serializer=PickleSerializer(), timeout=None), "memory", prefix)


def redis_cache(url: str, prefix: str = "lucy") -> Cache:
    from aiocache import RedisCache
    from aiocache.serializers import PickleSerializer

    parts = urlsplit(url)
    kwargs: dict[str, Any] = {
        "endpoint": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "db": int(parts.path.lstrip("/") or 0),
        "password": parts.password,
        "serializer": PickleSerializer(),
        "timeout": 2,
    }
    if parts.scheme == "rediss":
        kwargs["ssl"] = True
    return Cache(RedisCache(**kwargs), "redis", prefix)


def make_cache(redis_url: str | None, prefix: str = "lucy") -> Cache:
    return redis_cache(redis_url, prefix) if redis_url else memory_cache(prefix)
