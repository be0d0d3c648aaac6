"""Shutdown lets in-flight turns finish within a bound and names the ones it had to stop."""

from __future__ import annotations

import asyncio

from lucy.core.inflight import InFlight


async def test_drain_waits_for_quick_turns_and_cancels_slow_ones() -> None:
    inflight = InFlight()
    finished: list[str] = []

    async def turn(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    inflight.spawn(turn("quick", 0.01), name="quick")
    slow = inflight.spawn(turn("slow", 60), name="slow")
    stopped = await inflight.drain(grace=0.5)
    assert finished == ["quick"]
    assert stopped == ["slow"]
    assert slow.cancelled()
    assert inflight.closing and len(inflight) == 0


async def test_a_crashing_turn_does_not_take_others_down() -> None:
    inflight = InFlight()

    async def boom() -> None:
        raise RuntimeError("kaput")

    async def fine() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    inflight.spawn(boom(), name="boom")
    ok = inflight.spawn(fine(), name="fine")
    assert await ok == "ok"
    await asyncio.sleep(0)
    assert len(inflight) == 0
