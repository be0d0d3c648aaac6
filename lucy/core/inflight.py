"""Keeps every turn task Lucy starts, so none is lost and shutdown can drain them.

Bolt runs listeners in tasks nobody keeps; Lucy's listeners hand the long work (the turn) to
``InFlight.spawn`` instead, which holds a reference, logs a crash, and lets ``drain`` wait for
in-flight turns within a bound when SIGTERM arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from lucy.log import get_logger

log = get_logger("lucy.inflight")


class InFlight:
    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], str] = {}
        self.closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str = "turn") -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = name
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", task=task.get_name(), exc_info=task.exception())

    async def drain(self, grace: float) -> list[str]:
        """Stop accepting work, wait up to ``grace`` seconds, cancel the rest; returns their names."""
        self.closing = True
        pending = list(self._tasks)
        if not pending:
            return []
        _, still = await asyncio.wait(pending, timeout=grace)
        names = [t.get_name() for t in still]
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=5)
        return names
