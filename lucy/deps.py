"""Everything a running Lucy depends on, passed around as one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lucy.cache import Cache
from lucy.config import Settings
from lucy.web.metrics import Metrics


@dataclass
class Deps:
    settings: Settings
    pool: Any  # asyncpg.Pool; Any keeps asyncpg out of import paths that do not need it
    cache: Cache
    metrics: Metrics
