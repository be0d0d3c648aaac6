"""Admission control for turns: start a turn only while the event loop keeps up.

One process answers Slack (acks within 3 s) and runs every turn on one event loop. A turn
spends most of its time waiting for the model, but its CPU bursts (LiteLLM's streaming, the
Slack SDK) add up: past what one core can do, every callback waits longer, acks included,
and the backlog makes everything slower still. :class:`TurnGate` measures the loop's lag
(how late a 20 ms sleep wakes up) and the process's CPU use, and lets waiting turns start only
while both are low,
so acks stay fast and an overload becomes a queue (first come, first served) whose turns
are all answered, later, instead of a slowdown for everyone. ``max_running`` also bounds
memory.

Admissions are also paced (one per ``pace`` seconds at most): turns that end together (their
model answers arrived in one burst) would otherwise let as many new turns start in one pass of
the event loop, a few milliseconds of CPU each, and every ack behind them would wait for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

TICK = 0.02  # seconds between lag measurements
MAX_LAG = 0.015  # smoothed lag above which the limit shrinks
MAX_BUSY = 0.55  # share of one core the process may use before the limit shrinks (the rest keeps acks fast)
START_LIMIT = 16.0
PACE = 0.002  # seconds between two turn starts at the most (500 a second: a smoothing, not a limit)


class TurnGate:
    """An adaptive limit on running turns, first come, first served: it grows while the loop keeps
    up and the limit is what holds turns back, and shrinks while the loop lags or the CPU is busy."""

    def __init__(self, *, max_running: int = 1000, max_lag: float = MAX_LAG, max_busy: float = MAX_BUSY,
                 tick: float = TICK, cpu_clock: Callable[[], float] = time.process_time, pace: float = PACE) -> None:
        self.max_running = max_running
        self._max_lag = max_lag
        self._max_busy = max_busy
        self._cpu_clock = cpu_clock
        self.busy = 0.0  # smoothed CPU seconds per second of this process
        self._tick = tick
        self.running = 0
        self.limit = min(START_LIMIT, float(max_running))
        self.lag = 0.0  # smoothed, seconds
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._monitor: asyncio.Task[None] | None = None
        self._pace = pace
        self._next_start = 0.0  # loop time before which no further turn starts
        self._paced: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _room(self) -> int:
        # One turn may always run, so a slow machine still makes progress.
        return max(1, int(self.limit)) - self.running

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a place for one running turn (waiting first, in order, when the limit is reached)."""
        if self._waiters or self._room() <= 0 or not self._may_start():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._ensure_monitor()
            if self._room() > 0:
                self._release_later()  # held back by the pace alone
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.running -= 1  # it was let in just as it was cancelled
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                raise
        else:
            self._started()
        try:
            yield
        finally:
            self.running -= 1
            self._release()

    def _may_start(self) -> bool:
        return self._pace <= 0 or asyncio.get_running_loop().time() >= self._next_start

    def _started(self) -> None:
        self.running += 1
        if self._pace > 0:
            self._next_start = asyncio.get_running_loop().time() + self._pace

    def _release(self) -> None:
        while self._waiters and self._room() > 0:
            if not self._may_start():
                self._release_later()
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self._started()
            waiter.set_result(None)

    def _release_later(self) -> None:
        if self._paced is None or self._paced.cancelled():
            loop = asyncio.get_running_loop()

            def again() -> None:
                self._paced = None
                self._release()

            self._paced = loop.call_at(self._next_start, again)

    def _ensure_monitor(self) -> None:
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.get_running_loop().create_task(self._watch(), name="turn-gate")

    async def start(self) -> None:
        """Measure the lag from now on (otherwise from the first time a turn has to wait)."""
        self._ensure_monitor()

    async def close(self) -> None:
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, cpu_before = loop.time(), self._cpu_clock()
            await asyncio.sleep(self._tick)
            elapsed = loop.time() - before
            lag = max(0.0, elapsed - self._tick)
            self.lag = 0.5 * self.lag + 0.5 * lag
            # Smoothed over ~0.5 s: turns' CPU comes in bursts (a batch of model answers arriving).
            self.busy = 0.9 * self.busy + 0.1 * (self._cpu_clock() - cpu_before) / max(elapsed, 1e-6)
            self._adjust()
            self._release()

    def _adjust(self) -> None:
        if self.lag > self._max_lag or self.busy > self._max_busy:
            self.limit = max(1.0, self.limit * 0.95)
        elif self._waiters and self.running >= int(self.limit):
            # Grow by 2 % a tick (~1.5x a second): turns that mostly wait on the model need a high
            # limit soon, and a limit that overshoots shrinks back as soon as the CPU is busy.
            self.limit = min(float(self.max_running), self.limit + max(1.0, 0.02 * self.limit))
