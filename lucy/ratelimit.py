"""Rate limits per workspace and per person, for turns and for tool executions.

Sliding-window counters: each limit keeps a count for the current fixed window and the one
before it, and the estimate is ``previous × (share of the window still ahead) + current``.
That smooths the burst a plain fixed window allows at its edges, with two integers per key.

With ``REDIS_URL`` the counters live in Redis and one Lua script checks every limit of a hit
and increments them all, atomically, so several instances share the same budget; without it
they live in this process. A hit over any limit increments nothing and raises
:class:`~lucy.errors.RateLimitedError` carrying a polite sentence and how long to wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lucy.cache import cache_key
from lucy.errors import RateLimitedError
from lucy.log import get_logger

if TYPE_CHECKING:
    from lucy.config import Settings

log = get_logger("lucy.ratelimit")

LimitName = Literal["user_turns", "workspace_turns", "user_tools", "workspace_tools"]


@dataclass(frozen=True)
class Limit:
    name: LimitName
    limit: int  # hits allowed per window; 0 = unlimited
    window: float  # seconds


@dataclass(frozen=True)
class Counter:
    """One limit's key for this hit, with where we are in its window."""

    limit: Limit
    current_key: str
    previous_key: str
    elapsed: float  # seconds since the current window began
    ttl_ms: int
    now: float  # the limiter's clock at this hit


@dataclass(frozen=True)
class HitResult:
    rejected: int | None  # index of the first limit exceeded, None when the hit was counted
    counts: list[tuple[int, int]]  # (previous, current) per limit, before this hit


class RateBackend(Protocol):
    async def hit(self, counters: Sequence[Counter]) -> HitResult:
        """Check every counter; if none is over its limit, count one hit on each (atomically)."""
        ...

    async def close(self) -> None: ...


def _weight(counter: Counter) -> float:
    return max(0.0, 1.0 - counter.elapsed / counter.limit.window)


class MemoryRateBackend:
    """In-process counters. The check-and-increment has no await inside, so it is atomic."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}  # key → (count, expires at, limiter's clock)
        self._hits = 0

    async def hit(self, counters: Sequence[Counter]) -> HitResult:
        now = counters[0].now if counters else 0.0
        counts = [(self._get(c.previous_key, now), self._get(c.current_key, now)) for c in counters]
        for index, (counter, (previous, current)) in enumerate(zip(counters, counts, strict=True)):
            if counter.limit.limit > 0 and previous * _weight(counter) + current + 1 > counter.limit.limit:
                return HitResult(index, counts)
        for counter, (_, current) in zip(counters, counts, strict=True):
            self._counts[counter.current_key] = (current + 1, now + counter.ttl_ms / 1000)
        self._hits += 1
        if self._hits % 1000 == 0:
            self._sweep(now)
        return HitResult(None, counts)

    def _get(self, key: str, now: float) -> int:
        entry = self._counts.get(key)
        return entry[0] if entry and entry[1] > now else 0

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, expires) in self._counts.items() if expires <= now]:
            del self._counts[key]

    async def close(self) -> None:
        self._counts.clear()


# KEYS: current, previous key per limit. ARGV: n, then per limit: limit, weight, ttl_ms.
# Returns {rejected index or 0, previous1, current1, previous2, current2, ...}.
_LUA = """
local n = tonumber(ARGV[1])
local out = {0}
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  out[2 * i] = previous
  out[2 * i + 1] = current
end
for i = 1, n do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local weight = tonumber(ARGV[3 + (i - 1) * 3])
  if limit > 0 and out[2 * i] * weight + out[2 * i + 1] + 1 > limit then
    out[1] = i
    return out
  end
end
for i = 1, n do
  redis.call('INCR', KEYS[2 * i - 1])
  redis.call('PEXPIRE', KEYS[2 * i - 1], tonumber(ARGV[4 + (i - 1) * 3]))
end
return out
"""


class RedisRateBackend:
    """Counters in Redis, shared by every instance; one Lua script per hit (atomic).

    While Redis is unreachable, hits are counted in this process instead: limits then hold per
    instance rather than across all of them, which beats failing every request during the
    outage. The outage is logged once; Redis is tried again after ``retry_after`` seconds, so
    Lucy recovers without a restart.
    """

    def __init__(self, url: str, *, retry_after: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        import redis.asyncio as redis
        from redis.exceptions import RedisError

        self._client: Any = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script: Any = self._client.register_script(_LUA)
        self._errors = (OSError, TimeoutError, RedisError)
        self._fallback = MemoryRateBackend()
        self._retry_after = retry_after
        self._clock = clock
        self._degraded_until: float | None = None

    async def hit(self, counters: Sequence[Counter]) -> HitResult:
        if self._degraded_until is not None and self._clock() < self._degraded_until:
            return await self._fallback.hit(counters)
        try:
            result = await self._redis_hit(counters)
        except self._errors as exc:
            if self._degraded_until is None:
                log.warning("Redis is unreachable; rate limits count in this process for now", error=str(exc))
            self._degraded_until = self._clock() + self._retry_after
            return await self._fallback.hit(counters)
        if self._degraded_until is not None:
            log.info("Redis is reachable again; rate limits are shared again")
            self._degraded_until = None
        return result

    async def _redis_hit(self, counters: Sequence[Counter]) -> HitResult:
        keys: list[str] = []
        args: list[Any] = [len(counters)]
        for c in counters:
            keys += [c.current_key, c.previous_key]
            args += [c.limit.limit, repr(_weight(c)), c.ttl_ms]
        out = [int(v) for v in await self._script(keys=keys, args=args)]
        counts = [(out[2 * i + 1], out[2 * i + 2]) for i in range(len(counters))]
        return HitResult(out[0] - 1 if out[0] else None, counts)

    async def close(self) -> None:
        await self._client.aclose()
        await self._fallback.close()


class RateLimiter:
    """``check_turn`` before a turn, ``check_tool`` before each tool execution.

    Both raise :class:`RateLimitedError` (nothing counted) when a limit is reached; its
    ``user_message`` is the sentence to show, ``retry_after`` the seconds to wait.
    """

    def __init__(
        self,
        backend: RateBackend,
        *,
        user_turns: int = 10,
        workspace_turns: int = 100,
        user_tools: int = 60,
        workspace_tools: int = 600,
        window_seconds: float = 60.0,
        prefix: str = "lucy",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.backend = backend
        self.prefix = prefix
        self._clock = clock
        self._turns = (Limit("user_turns", user_turns, window_seconds),
                       Limit("workspace_turns", workspace_turns, window_seconds))
        self._tools = (Limit("user_tools", user_tools, window_seconds),
                       Limit("workspace_tools", workspace_tools, window_seconds))

    @classmethod
    def from_settings(cls, settings: Settings, *, prefix: str | None = None,
                      clock: Callable[[], float] = time.time) -> RateLimiter:
        backend: RateBackend = RedisRateBackend(settings.redis_url) if settings.redis_url else MemoryRateBackend()
        return cls(
            backend, user_turns=settings.rate_user_turns, workspace_turns=settings.rate_workspace_turns,
            user_tools=settings.rate_user_tools, workspace_tools=settings.rate_workspace_tools,
            window_seconds=settings.rate_window_seconds, prefix=prefix or settings.redis_prefix, clock=clock,
        )

    async def check_turn(self, workspace: str, user: str) -> None:
        await self._hit("turns", self._turns, workspace, user)

    async def check_tool(self, workspace: str, user: str) -> None:
        await self._hit("tools", self._tools, workspace, user)

    async def close(self) -> None:
        await self.backend.close()

    async def _hit(self, kind: str, limits: Sequence[Limit], workspace: str, user: str) -> None:
        active = [limit for limit in limits if limit.limit > 0]
        if not active:
            return
        now = self._clock()
        counters = [self._counter(kind, limit, workspace, user, now) for limit in active]
        result = await self.backend.hit(counters)
        if result.rejected is None:
            return
        counter = counters[result.rejected]
        previous, current = result.counts[result.rejected]
        wait = retry_after(counter.limit, counter.elapsed, previous, current)
        raise RateLimitedError(
            f"rate limit {counter.limit.name} reached for {workspace}/{user}",
            user_message=limit_sentence(counter.limit, wait),
            retry_after=wait,
            limit_name=counter.limit.name,
        )

    def _counter(self, kind: str, limit: Limit, workspace: str, user: str, now: float) -> Counter:
        index = math.floor(now / limit.window)
        who = (workspace, user) if limit.name.startswith("user") else (workspace,)
        base = ("rl", kind, limit.name.split("_")[0], *who)
        return Counter(
            limit=limit,
            current_key=cache_key(*base, str(index), prefix=self.prefix),
            previous_key=cache_key(*base, str(index - 1), prefix=self.prefix),
            elapsed=now - index * limit.window,
            ttl_ms=math.ceil(limit.window * 2000),  # the current window, then its turn as "previous"
            now=now,
        )


def retry_after(limit: Limit, elapsed: float, previous: int, current: int) -> float:
    """Seconds until one more hit fits under ``limit``, given the two windows' counts."""
    room, window = limit.limit - 1, limit.window
    if current <= room:
        if previous <= 0:
            return 0.0
        # previous × (1 − t / window) + current ≤ room, still inside this window?
        at = window * (1 - (room - current) / previous)
        if at < window:
            return max(0.0, at - elapsed)
    # Next window: this window's count becomes "previous" and decays from there.
    later = window * (1 - room / current) if current > room else 0.0
    return (window - elapsed) + max(0.0, later)


def _duration(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    if whole < 90:
        return f"{whole} second" + ("s" if whole != 1 else "")
    minutes = math.ceil(whole / 60)
    if minutes < 90:
        return f"{minutes} minutes"
    return f"{math.ceil(minutes / 60)} hours"


def _per(window: float) -> str:
    if window == 60:
        return "a minute"
    if window == 3600:
        return "an hour"
    if window == 86400:
        return "a day"
    return f"every {_duration(window)}"


def limit_sentence(limit: Limit, wait: float) -> str:
    """The polite sentence for a reached limit, with how long to wait."""
    again = f"Please try again in {_duration(wait)}."
    per = _per(limit.window)
    if limit.name == "user_turns":
        return f"You're going a bit fast for me: I answer up to {limit.limit} requests {per} per person. {again}"
    if limit.name == "workspace_turns":
        return f"This workspace is keeping me busy: I answer up to {limit.limit} requests {per} here. {again}"
    if limit.name == "user_tools":
        return f"I've run as many actions for you as I may ({limit.limit} {per}), so I stopped here. {again}"
    return f"This workspace has used its {limit.limit} actions {per}, so I stopped here. {again}"
