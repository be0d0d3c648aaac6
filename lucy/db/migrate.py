"""Plain-SQL migrations, applied in order, recorded with a checksum, under an advisory lock.

Several instances may start at once: the first takes ``pg_advisory_lock`` and applies what is
pending; the others wait, then find nothing to do. An applied file that was edited afterwards
is refused, because the database no longer matches what the file says.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from lucy.errors import MigrationError
from lucy.log import get_logger

log = get_logger("lucy.db")

# Any constant works; this one spells "lucy" so it is easy to spot in pg_locks.
ADVISORY_LOCK_KEY = 0x6C756379
NO_TRANSACTION_MARKER = "-- migrate: no-transaction"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    """The migration files shipped inside the package, in version order."""
    folder = resources.files("lucy.db") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def apply_migrations(
    conn: asyncpg.Connection[Any], migrations: list[Migration] | None = None
) -> list[str]:
    """Apply pending migrations on ``conn``; returns the names applied (empty when current)."""
    migrations = bundled_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        applied = {r["version"]: r for r in await conn.fetch("SELECT * FROM schema_migrations")}
        _check_unchanged(migrations, applied)
        done: list[str] = []
        for migration in migrations:
            if migration.version not in applied:
                await _apply_one(conn, migration)
                done.append(migration.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


def _check_unchanged(migrations: list[Migration], applied: dict[int, Any]) -> None:
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None and row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} was edited after it was applied; "
                "add a new migration file instead of changing an applied one",
                user_message=f"Migration {migration.name} was changed after it was applied. "
                "Restore it and put the change in a new migration file.",
            )


async def _apply_one(conn: asyncpg.Connection[Any], migration: Migration) -> None:
    record = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
    try:
        if migration.sql.lstrip().startswith(NO_TRANSACTION_MARKER):
            await conn.execute(migration.sql)
            await conn.execute(record, migration.version, migration.name, migration.checksum)
        else:
            async with conn.transaction():
                # No arguments: the simple query protocol runs the whole file at once.
                await conn.execute(migration.sql)
                await conn.execute(record, migration.version, migration.name, migration.checksum)
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"migration {migration.name} failed: {exc}",
            user_message=f"Migration {migration.name} failed: {exc}",
        ) from exc
    log.info("migration applied", migration=migration.name)


async def pending(conn: asyncpg.Connection[Any]) -> list[str]:
    """Names of bundled migrations not yet applied (for readiness checks and doctor)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m.name for m in bundled_migrations() if m.version not in applied]


async def migrate_dsn(dsn: str) -> list[str]:
    """Connect, apply pending migrations, disconnect."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrationError(
            f"cannot connect to PostgreSQL: {exc}",
            user_message=f"I can't connect to PostgreSQL ({exc}). Check DATABASE_URL.",
        ) from exc
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
