"""Background work that outlives a Slack request, kept and awaited (Bolt keeps no reference)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from lucy.log import get_logger

log = get_logger("lucy.slack.tasks")


class TaskKeeper:
    """Holds every task it starts until it ends; :meth:`drain` waits for them at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            # Handlers catch their own errors; reaching here is a bug worth a loud line.
            log.error("background task failed", task=task.get_name(), error=repr(task.exception()))

    def __len__(self) -> int:
        return len(self._tasks)

    async def idle(self) -> None:
        """Return once nothing is running (tests wait on this instead of sleeping)."""
        while self._tasks:
            await self._idle.wait()
            await asyncio.sleep(0)

    async def drain(self, seconds: float) -> None:
        """Let running turns finish (up to ``seconds``), then cancel what is left."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still = await asyncio.wait(pending, timeout=seconds)
        for task in still:
            task.cancel()
        if still:
            log.warning("cancelled unfinished work at shutdown", count=len(still))
            await asyncio.gather(*still, return_exceptions=True)
