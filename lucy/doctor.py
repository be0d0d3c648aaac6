"""`lucy doctor`: check every setting and every dependency Lucy can reach.

Each check prints ✓ or ✗; every ✗ says how to fix it in plain words. Exit code 1 when any
check failed, so scripts can use it too.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lucy.config import WHERE, Settings, describe, load_settings
from lucy.errors import ConfigError

TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def render(self) -> str:
        mark = "✓" if self.ok else "✗"
        line = f"{mark} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            line += f"\n    fix: {self.fix}"
        return line


def run_doctor() -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(Check("settings", False, "a setting is malformed", exc.user_message).render())
        return 1
    checks = asyncio.run(collect(settings))
    for check in checks:
        print(check.render())
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed")
    sys.stdout.flush()
    return 1 if failed else 0


async def collect(settings: Settings) -> list[Check]:
    checks = settings_checks(settings)
    probes: list[Callable[[Settings], Awaitable[Check]]] = [
        check_database, check_redis, check_slack, check_composio, check_llm,
    ]
    results = await asyncio.gather(*(_bounded(p, settings) for p in probes))
    return checks + list(results)


async def _bounded(probe: Callable[[Settings], Awaitable[Check]], settings: Settings) -> Check:
    name = probe.__name__.removeprefix("check_")
    try:
        return await asyncio.wait_for(probe(settings), TIMEOUT)
    except TimeoutError:
        return Check(name, False, f"no answer within {TIMEOUT:.0f} s", "check the URL and that the service runs")


def settings_checks(settings: Settings) -> list[Check]:
    out: list[Check] = []
    if settings.slack_configured:
        mode = "several workspaces (OAuth)" if settings.multi_workspace else "one workspace"
        out.append(Check("slack settings", True, mode))
    else:
        fix = describe("SLACK_BOT_TOKEN", "is not set") + " For several workspaces set SLACK_CLIENT_ID and " \
            "SLACK_CLIENT_SECRET instead."
        out.append(Check("slack settings", False, "no Slack token", fix))
    if settings.socket_mode:
        out.append(Check("slack transport", True, "Socket Mode (SLACK_APP_TOKEN)"))
    elif settings.slack_signing_secret:
        out.append(Check("slack transport", True, f"HTTP on port {settings.port} (/slack/events)"))
    else:
        fix = describe("SLACK_APP_TOKEN", "is not set") + " Or, for HTTP mode, " + \
            describe("SLACK_SIGNING_SECRET", "is not set")
        out.append(Check("slack transport", False, "neither Socket Mode nor HTTP mode is configured", fix))
    if not settings.public_url:
        out.append(Check(
            "public url", False, "LUCY_PUBLIC_URL is not set, so Connect buttons cannot bring people back",
            describe("LUCY_PUBLIC_URL", "is not set"),
        ))
    else:
        out.append(Check("public url", True, settings.public_url))
    return out


async def check_database(settings: Settings) -> Check:
    if not settings.database_url:
        from lucy.db.embedded import find_bindir

        bindir = await asyncio.to_thread(find_bindir)
        if bindir is None:
            return Check("database", False, "DATABASE_URL is not set and no PostgreSQL is installed",
                         describe("DATABASE_URL", "is not set") + " Or install postgresql for the embedded one.")
        return Check("database", True, f"embedded PostgreSQL from {bindir} in {settings.data_dir / 'pgdata'}")
    import asyncpg

    from lucy.db.migrate import pending

    try:
        conn = await asyncpg.connect(settings.database_url, timeout=TIMEOUT)
    except (OSError, asyncpg.PostgresError) as exc:
        return Check("database", False, f"cannot connect ({exc})", "check DATABASE_URL and that PostgreSQL runs")
    try:
        waiting = await pending(conn)
    finally:
        await conn.close()
    if waiting:
        return Check("database", False, f"{len(waiting)} migration(s) pending", "run `lucy migrate`")
    return Check("database", True, "reachable, migrations current")


async def check_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        return Check("cache", True, "in-process (set REDIS_URL when running several instances)")
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis_url, socket_timeout=TIMEOUT)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        return Check("cache", False, f"Redis not reachable ({exc})", "check REDIS_URL and that Redis runs")
    finally:
        await client.aclose()
    return Check("cache", True, "Redis reachable")


async def check_slack(settings: Settings) -> Check:
    if not settings.slack_bot_token:
        if settings.multi_workspace:
            return Check("slack api", True, "tokens come from installations (OAuth)")
        return Check("slack api", False, "SLACK_BOT_TOKEN is not set", describe("SLACK_BOT_TOKEN", "is not set"))
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(
        token=settings.slack_bot_token, timeout=int(TIMEOUT),
        base_url=settings.slack_api_url or AsyncWebClient.BASE_URL,
    )
    try:
        resp = await client.auth_test()
    except SlackApiError as exc:
        return Check("slack api", False, f"auth.test failed: {exc.response.get('error')}",
                     "the bot token is wrong or revoked. " + WHERE["SLACK_BOT_TOKEN"])
    except OSError as exc:
        return Check("slack api", False, f"cannot reach Slack ({exc})", "check the network or SLACK_API_URL")
    return Check("slack api", True, f"auth.test ok as {resp.get('user')} in {resp.get('team')}")


async def check_composio(settings: Settings) -> Check:
    if not settings.composio_api_key:
        return Check("composio", False, "COMPOSIO_API_KEY is not set: no app tools",
                     describe("COMPOSIO_API_KEY", "is not set"))
    import aiohttp

    base = (settings.composio_base_url or "https://backend.composio.dev").rstrip("/")
    url = f"{base}/api/v3.1/auth_configs?limit=1"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session, \
                session.get(url, headers={"x-api-key": settings.composio_api_key}) as resp:
            status = resp.status
    except (OSError, aiohttp.ClientError) as exc:
        return Check("composio", False, f"cannot reach Composio ({exc})", "check the network or COMPOSIO_BASE_URL")
    if status in (401, 403):
        return Check("composio", False, "the API key was refused", describe("COMPOSIO_API_KEY", "was refused"))
    if status >= 400:
        return Check("composio", False, f"Composio answered HTTP {status}", "try again later; check COMPOSIO_BASE_URL")
    return Check("composio", True, "API key accepted")


async def check_llm(settings: Settings) -> Check:
    if not settings.llm_api_key and not settings.llm_api_base:
        return Check("llm", False, f"LLM_API_KEY is not set for {settings.llm_model}",
                     describe("LLM_API_KEY", "is not set"))
    from dataclasses import replace

    from lucy.core.llm import LiteLLM, LLMConfig

    # The adapter serve uses (the direct OpenAI client where it applies), on the primary model alone.
    config = replace(LLMConfig.from_settings(settings), fallbacks=(), max_retries=0, timeout_seconds=TIMEOUT,
                     max_tokens=16)
    llm = await asyncio.to_thread(LiteLLM, config)
    try:
        await llm.complete([{"role": "user", "content": "Say ok."}], [])
    except Exception as exc:  # LLMError or LLMContextError, or a provider-specific failure; all mean "not working"
        return Check("llm", False, f"{settings.llm_model} did not answer ({str(exc)[:200]})",
                     "check LLM_MODEL, LLM_API_KEY and LLM_API_BASE")
    finally:
        await llm.aclose()
    return Check("llm", True, f"{settings.llm_model} answered")
