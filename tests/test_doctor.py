"""`lucy doctor` explains every missing setting and checks what it can reach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lucy.config import Settings
from tests.fakes.fake_llm import FakeLLM, text
from tests.test_config import CLEAN_ENV


def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lucy", "doctor"], env={**CLEAN_ENV, **env}, cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_nothing_configured_every_gap_is_explained(tmp_path: Path) -> None:
    result = doctor({}, tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    failed = [line for line in out.splitlines() if line.startswith("✗")]
    fixes = [line for line in out.splitlines() if line.strip().startswith("fix:")]
    assert len(failed) == len(fixes) >= 4
    assert "SLACK_BOT_TOKEN is not set. Get it from the Slack app's OAuth & Permissions page" in out
    assert "COMPOSIO_API_KEY is not set. Get it from the Composio dashboard" in out
    assert "LLM_API_KEY is not set" in out
    assert "LUCY_PUBLIC_URL is not set" in out
    assert "✓ database: embedded PostgreSQL" in out
    assert "✓ cache: in-process" in out


def test_reachable_database_and_redis_are_checked_for_real(db_dsn: str, redis_url: str, tmp_path: Path) -> None:
    out = doctor({"DATABASE_URL": db_dsn, "REDIS_URL": redis_url}, tmp_path).stdout
    assert "✓ database: reachable, migrations current" in out
    assert "✓ cache: Redis reachable" in out


def test_unreachable_database_and_pending_migrations_are_failures(empty_db_dsn: str, tmp_path: Path) -> None:
    out = doctor({"DATABASE_URL": empty_db_dsn, "REDIS_URL": "redis://127.0.0.1:1/0"}, tmp_path).stdout
    assert "✗ database:" in out and "run `lucy migrate`" in out
    assert "✗ cache: Redis not reachable" in out


def test_malformed_setting_is_one_failure_with_the_fix(tmp_path: Path) -> None:
    result = doctor({"REDIS_URL": "memcached://x"}, tmp_path)
    assert result.returncode == 1
    assert "REDIS_URL must start with redis://" in result.stdout


async def test_the_llm_check_asks_the_configured_model_once(fake_llm: FakeLLM) -> None:
    from lucy.doctor import check_llm

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, LLM_MODEL="openai/fake", LLM_API_BASE=fake_llm.base_url, LLM_API_KEY="sk-test",
        LLM_FALLBACK_MODELS="openai/backup")
    fake_llm.script(text("ok"))
    assert (await check_llm(settings)).ok
    fake_llm.down("fake", 401)
    failed = await check_llm(settings)
    assert not failed.ok and "did not answer" in failed.detail and "LLM_API_KEY" in failed.fix
    assert [r.model for r in fake_llm.requests] == ["fake", "fake"]  # no retries, no fallback: one question each
