"""Small pieces the registry and the schema cache share: single flight, and cache failures."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Concurrent callers asking for the same key share one load.

    The load runs in its own task, so one caller being cancelled (a turn timing out) does not
    cancel it for the others. The task is kept until it finishes; its failure is delivered to
    every caller that was waiting.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._tasks

    async def run(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def forget(self, key: str) -> None:
        """Let the next caller start a fresh load; callers already waiting keep theirs."""
        self._tasks.pop(key, None)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here too, so an unwaited failure is not reported as lost


def cache_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the shared cache is unavailable" (Redis down or slow)."""
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - redis is a dependency
        return (OSError, TimeoutError)
    return (OSError, TimeoutError, RedisError)


def database_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "PostgreSQL is unavailable or refused the statement"."""
    import asyncpg

    return (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
