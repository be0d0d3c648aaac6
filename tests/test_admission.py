"""The turn gate: turns over the limit wait their turn (first come, first served) and all run;
a busy CPU shrinks the limit; starts are spread out instead of bunched into one loop pass."""

from __future__ import annotations

import asyncio
import itertools

from lucy.core.admission import START_LIMIT, TurnGate


async def _until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_turns_over_the_limit_wait_in_order_and_all_run() -> None:
    gate = TurnGate(max_running=2, pace=0)
    started: list[int] = []
    release = asyncio.Event()

    async def turn(n: int) -> None:
        async with gate.slot():
            started.append(n)
            await release.wait()

    tasks = [asyncio.create_task(turn(n)) for n in range(5)]
    await _until(lambda: len(started) == 2)
    assert gate.running == 2 and gate.waiting == 3
    release.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3, 4] and gate.running == 0
    await gate.close()


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    gate = TurnGate(max_running=1, pace=0)
    hold, done = asyncio.Event(), []

    async def turn(n: int) -> None:
        async with gate.slot():
            await hold.wait()
            done.append(n)

    first, second, third = (asyncio.create_task(turn(n)) for n in range(3))
    await _until(lambda: gate.waiting == 2)
    second.cancel()
    hold.set()
    await asyncio.gather(first, third)
    assert done == [0, 2] and second.cancelled() and gate.running == 0
    await gate.close()


async def test_a_busy_cpu_shrinks_the_limit_and_turns_still_run() -> None:
    busy = itertools.count(step=1.0)  # a CPU clock that says every second was spent computing
    gate = TurnGate(max_running=100, tick=0.001, cpu_clock=lambda: float(next(busy)), pace=0)
    await gate.start()
    await _until(lambda: gate.limit < START_LIMIT / 2)
    ran = []

    async def turn(n: int) -> None:
        async with gate.slot():
            ran.append(n)

    await asyncio.gather(*(turn(n) for n in range(20)))
    assert sorted(ran) == list(range(20))  # one turn may always run, so an overloaded process still progresses
    await gate.close()


async def test_starts_are_spread_out_not_bunched() -> None:
    gate = TurnGate(max_running=10, pace=0.05)
    started: list[int] = []

    async def turn(n: int) -> None:
        async with gate.slot():
            started.append(n)

    tasks = [asyncio.create_task(turn(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert started == [0]  # room for ten, but the others wait for the pace
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2]
    await gate.close()
