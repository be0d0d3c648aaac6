"""The shared cache: aiocache in-process by default, Redis when ``REDIS_URL`` is set.

Keys are built from parts that are each percent-encoded and joined with ':', so ``("T1", "x")``
and ``("T10", "x")`` can never meet, whatever the backend does with namespaces (aiocache's
memory backend joins namespace and key with no separator). Values are pickled so a caller can
never mutate what another caller reads.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

from lucy.log import get_logger

log = get_logger("lucy.cache")


def cache_key(*parts: str, prefix: str = "lucy") -> str:
    return prefix + ":" + ":".join(quote(p, safe="") for p in parts)


class Cache:
    """A thin typed wrapper over an aiocache backend.

    With a ``fallback`` (Redis mode), a failing backend does not fail the caller: reads and writes
    go to the in-process fallback for ``retry_after`` seconds, the outage is logged once, and the
    backend is tried again afterwards, so Lucy recovers without a restart.
    """

    def __init__(
        self,
        backend: Any,
        kind: str,
        prefix: str = "lucy",
        *,
        fallback: Any | None = None,
        errors: tuple[type[BaseException], ...] = (),
        retry_after: float = 5.0,
    ) -> None:
        self._backend = backend
        self.kind = kind
        self.prefix = prefix  # tests give each run its own prefix on a shared Redis
        self._fallback = fallback
        self._errors = errors
        self._retry_after = retry_after
        self._degraded_until = 0.0

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._degraded_until

    def key(self, *parts: str) -> str:
        return cache_key(*parts, prefix=self.prefix)

    async def get(self, *parts: str) -> Any:
        return await self._call("get", self.key(*parts))

    async def set(self, *parts: str, value: Any, ttl: float | None = None) -> None:
        await self._call("set", self.key(*parts), value, ttl=ttl)

    async def delete(self, *parts: str) -> None:
        await self._call("delete", self.key(*parts))

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._fallback is None:
            return await getattr(self._backend, method)(*args, **kwargs)
        if not self.degraded:
            try:
                result = await getattr(self._backend, method)(*args, **kwargs)
            except self._errors as exc:
                self._degraded_until = time.monotonic() + self._retry_after
                log.warning("Redis is unreachable; using the in-process cache for now", error=str(exc))
            else:
                if self._was_degraded:
                    log.info("Redis is reachable again")
                self._was_degraded = False
                return result
            self._was_degraded = True
        return await getattr(self._fallback, method)(*args, **kwargs)

    _was_degraded = False

    async def close(self) -> None:
        await self._backend.close()
        if self._fallback is not None:
            await self._fallback.close()


def memory_cache(prefix: str = "lucy") -> Cache:
    from aiocache import SimpleMemoryCache
    from aiocache.serializers import PickleSerializer

    # timeout=None: aiocache would otherwise wrap every call in asyncio.wait_for (~4x slower).
    return Cache(SimpleMemoryCache(serializer=PickleSerializer(), timeout=None), "memory", prefix)


def redis_cache(url: str, prefix: str = "lucy", *, retry_after: float = 5.0) -> Cache:
    import redis.exceptions
    from aiocache import RedisCache, SimpleMemoryCache
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
    fallback = SimpleMemoryCache(serializer=PickleSerializer(), timeout=None)
    errors = (OSError, TimeoutError, redis.exceptions.RedisError)
    return Cache(RedisCache(**kwargs), "redis", prefix, fallback=fallback, errors=errors, retry_after=retry_after)


def make_cache(redis_url: str | None, prefix: str = "lucy") -> Cache:
    return redis_cache(redis_url, prefix) if redis_url else memory_cache(prefix)
