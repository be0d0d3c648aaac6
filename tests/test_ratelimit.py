"""Rate limits per person and per workspace, for turns and tool executions: the polite sentence
when a limit is reached, nothing counted or executed, and one budget shared by several
instances on one Redis. Time is a clock the test moves, never the wall clock."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lucy.config import Settings
from lucy.errors import RateLimitedError
from lucy.ratelimit import MemoryRateBackend, RateLimiter, RedisRateBackend


class Clock:
    def __init__(self, now: float = 1_000_020.0) -> None:  # 20 s into a 60 s window
        self.now = now

    def __call__(self) -> float:
        return self.now


def memory_limiter(clock: Clock, **limits: Any) -> RateLimiter:
    settings = {"user_turns": 3, "workspace_turns": 5, "user_tools": 4, "workspace_tools": 100, **limits}
    return RateLimiter(MemoryRateBackend(), window_seconds=60, clock=clock, **settings)


def wait_in(sentence: str) -> int:
    match = re.search(r"Please try again in (\d+) seconds?\.", sentence)
    assert match, sentence
    return int(match.group(1))


async def test_a_person_over_the_limit_gets_the_sentence_and_nothing_is_counted() -> None:
    clock = Clock()
    limiter = memory_limiter(clock)
    for _ in range(3):
        await limiter.check_turn("T1", "U1")
    with pytest.raises(RateLimitedError) as caught:
        await limiter.check_turn("T1", "U1")
    error = caught.value
    assert error.user_message.startswith("You're going a bit fast for me: I answer up to 3 requests a minute")
    assert error.limit_name == "user_turns" and error.retry_after is not None and error.retry_after > 0
    assert wait_in(error.user_message) >= 1
    # The refused turn counted nowhere: two more people still fit under the workspace's 5.
    await limiter.check_turn("T1", "U2")
    await limiter.check_turn("T1", "U3")
    with pytest.raises(RateLimitedError) as busy:
        await limiter.check_turn("T1", "U4")
    assert busy.value.user_message.startswith("This workspace is keeping me busy: I answer up to 5 requests a minute")
    # Another workspace, even one whose id starts the same, has its own budget.
    await limiter.check_turn("T10", "U1")
    await limiter.check_turn("E1:T1", "U1")


async def test_waiting_as_long_as_the_sentence_says_is_enough() -> None:
    clock = Clock()
    limiter = memory_limiter(clock)
    for _ in range(3):
        await limiter.check_turn("T1", "U1")
    with pytest.raises(RateLimitedError) as caught:
        await limiter.check_turn("T1", "U1")
    retry = caught.value.retry_after
    assert retry is not None
    clock.now += retry - 1  # a second too early: still refused
    with pytest.raises(RateLimitedError):
        await limiter.check_turn("T1", "U1")
    clock.now += 1.001
    await limiter.check_turn("T1", "U1")


async def test_the_window_slides_instead_of_resetting_at_its_edge() -> None:
    clock = Clock(now=1_000_059.0)  # one second before the window ends
    limiter = memory_limiter(clock)
    for _ in range(3):
        await limiter.check_turn("T1", "U1")
    clock.now += 2  # a new fixed window, but the last minute still holds 3 requests
    with pytest.raises(RateLimitedError):
        await limiter.check_turn("T1", "U1")
    clock.now += 60
    await limiter.check_turn("T1", "U1")


async def test_tool_limit_stops_execution_with_the_sentence() -> None:
    limiter = memory_limiter(Clock())
    executed: list[str] = []

    async def execute(tool: str) -> str:
        try:
            await limiter.check_tool("T1", "U1")
        except RateLimitedError as exc:
            return exc.user_message
        executed.append(tool)
        return "ok"

    answers = [await execute(f"GITHUB_STAR_{i}") for i in range(6)]
    assert executed == [f"GITHUB_STAR_{i}" for i in range(4)]
    assert answers[4].startswith("I've run as many actions for you as I may (4 a minute), so I stopped here.")
    # Turns have their own budget.
    await limiter.check_turn("T1", "U1")


async def test_zero_means_no_limit() -> None:
    limiter = memory_limiter(Clock(), user_turns=0, workspace_turns=0)
    for _ in range(50):
        await limiter.check_turn("T1", "U1")


async def test_instances_share_one_budget_on_redis(redis_url: str, cache_prefix: str) -> None:
    clock = Clock()
    first = RateLimiter(RedisRateBackend(redis_url), user_turns=3, workspace_turns=100, window_seconds=60,
                        prefix=cache_prefix, clock=clock)
    second = RateLimiter(RedisRateBackend(redis_url), user_turns=3, workspace_turns=100, window_seconds=60,
                         prefix=cache_prefix, clock=clock)
    try:
        await first.check_turn("T1", "U1")
        await second.check_turn("T1", "U1")
        await first.check_turn("T1", "U1")
        with pytest.raises(RateLimitedError) as caught:
            await second.check_turn("T1", "U1")
        assert caught.value.user_message.startswith("You're going a bit fast for me")
        await second.check_turn("T1", "U2")  # another person
        await second.check_turn("T10", "U1")  # another workspace
        # Redis and memory compute the same wait.
        local = memory_limiter(clock, user_turns=3)
        for _ in range(3):
            await local.check_turn("T1", "U1")
        with pytest.raises(RateLimitedError) as same:
            await local.check_turn("T1", "U1")
        assert same.value.retry_after == pytest.approx(caught.value.retry_after)
    finally:
        await first.close()
        await second.close()


async def test_concurrent_hits_on_redis_never_overshoot(redis_url: str, cache_prefix: str) -> None:
    import asyncio

    clock = Clock()
    limiters = [RateLimiter(RedisRateBackend(redis_url), user_tools=10, workspace_tools=1000, window_seconds=60,
                            prefix=cache_prefix, clock=clock) for _ in range(3)]

    async def hit(limiter: RateLimiter) -> bool:
        try:
            await limiter.check_tool("T1", "U1")
        except RateLimitedError:
            return False
        return True

    try:
        results = await asyncio.gather(*[hit(limiters[i % 3]) for i in range(30)])
        assert sum(results) == 10
    finally:
        for limiter in limiters:
            await limiter.close()


async def test_settings_choose_redis_when_redis_url_is_set(
    redis_url: str, cache_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    local = RateLimiter.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert isinstance(local.backend, MemoryRateBackend)
    shared = RateLimiter.from_settings(
        Settings(_env_file=None, REDIS_URL=redis_url, LUCY_RATE_USER_TURNS="1"),  # type: ignore[call-arg]
        prefix=cache_prefix,
    )
    try:
        assert isinstance(shared.backend, RedisRateBackend)
        await shared.check_turn("T1", "U1")
        with pytest.raises(RateLimitedError):
            await shared.check_turn("T1", "U1")
    finally:
        await shared.close()
        await local.close()
