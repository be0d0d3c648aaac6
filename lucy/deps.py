"""Everything a running Lucy depends on, passed around as one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lucy.cache import Cache
from lucy.config import Settings
from lucy.core.inflight import InFlight
from lucy.web.metrics import Metrics

if TYPE_CHECKING:
    from lucy.ratelimit import RateLimiter


@dataclass
class Deps:
    settings: Settings
    pool: Any  # asyncpg.Pool; Any keeps asyncpg out of import paths that do not need it
    cache: Cache
    metrics: Metrics
    inflight: InFlight = field(default_factory=InFlight)  # every turn task, drained on SIGTERM
    # A few connections only the ack path uses (event claims), so an ack never queues behind turns.
    ack_pool: Any = None
    # Connections for records: thread messages and audit rows (lucy.db.pool, synchronous_commit).
    records_pool: Any = None
    limiter: RateLimiter | None = None  # rate limits per person and workspace (shared through Redis)
