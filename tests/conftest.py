"""Shared fixtures: a real PostgreSQL (a fresh database per test, cloned from a migrated
template) and a real Redis (a key prefix per test run).

``TEST_DATABASE_URL`` names an admin DSN of a running server (default: 127.0.0.1:5432 as
postgres); ``TEST_REDIS_URL`` a Redis (default redis://127.0.0.1:6379/0). scripts/test starts
throwaway servers when none is running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Tool selection is lexical in tests (and the subprocesses they start) unless a test loads the
# sentence model itself: encoding the whole catalog the first time costs minutes of CPU.
os.environ.setdefault("LUCY_EMBEDDING_MODEL", "off")

pytest_plugins = ["tests.fakes.fake_llm"]  # the `fake_llm` fixture (a fake OpenAI-compatible server)
pytest_plugins.append("tests.fakes.fake_composio")  # the `fake_composio` fixture (a fake Composio API)
pytest_plugins.append("tests.fakes.fake_slack")  # the `fake_slack` fixture (a fake Slack Web API)

ADMIN_DSN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]


def dsn_for(database: str) -> str:
    parts = urlsplit(ADMIN_DSN)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def template_db() -> AsyncIterator[str]:
    """A migrated database that per-test databases are cloned from (fast: no DDL per test)."""
    from lucy.db.migrate import migrate_dsn

    name = f"lucy_tpl_{RUN_ID}"
    await _admin(f"CREATE DATABASE {name}")
    await migrate_dsn(dsn_for(name))
    yield name
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def empty_db_dsn() -> AsyncIterator[str]:
    """A brand-new database with no tables."""
    name = f"lucy_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    await _admin(f"CREATE DATABASE {name}")
    yield dsn_for(name)
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def db_dsn(template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"lucy_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    await _admin(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield dsn_for(name)
    await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[Any]:
    from lucy.db.pool import create_pool

    p = await create_pool(db_dsn, min_size=1, max_size=10)
    yield p
    await p.close()


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def cache_prefix() -> Iterator[str]:
    yield f"lucytest-{RUN_ID}-{uuid.uuid4().hex[:6]}"
