"""Everything a running Lucy depends on, passed around as one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lucy.cache import Cache
from lucy.config import Settings
from lucy.core.inflight import InFlight
from lucy.web.metrics import Metrics


@dataclass
class Deps:
    settings: Settings
    pool: Any  # asyncpg.Pool; Any keeps asyncpg out of import paths that do not need it
    cache: Cache
    metrics: Metrics
    inflight: InFlight = field(default_factory=InFlight)  # every turn task, drained on SIGTERM
