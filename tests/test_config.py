"""Configuration errors are one clear sentence per variable, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lucy.config import load_settings, require
from lucy.errors import ConfigError

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "COMPOSIO_", "LLM_", "LUCY_"))}
CLEAN_ENV.pop("DATABASE_URL", None)
CLEAN_ENV.pop("PORT", None)


def run_lucy(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lucy", *args], env={**CLEAN_ENV, **env}, cwd=cwd,
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_malformed_port_stops_serve_with_one_sentence(tmp_path: Path) -> None:
    result = run_lucy(["serve"], {"PORT": "abc"}, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "lucy: PORT is 'abc' but must be a whole number. Use a TCP port number, for example 3000."
    )


def test_wrong_kind_of_slack_token_names_where_to_get_the_right_one(tmp_path: Path) -> None:
    result = run_lucy(["migrate"], {"SLACK_BOT_TOKEN": "xoxp-user-token-123"}, tmp_path)
    assert result.returncode == 1
    assert "SLACK_BOT_TOKEN must start with xoxb-" in result.stderr
    assert "OAuth & Permissions page" in result.stderr
    # The malformed value is a secret: it is never echoed back.
    assert "xoxp-user-token-123" not in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_come_from_the_dot_env_file_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("LOG_LEVEL", "LLM_MODEL", "LLM_FALLBACK_MODELS", "DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=DEBUG\nLLM_MODEL=openai/local\nLLM_FALLBACK_MODELS=a, b\nDATABASE_URL=\n")
    settings = load_settings(env_file)
    assert settings.log_level == "debug"
    assert settings.llm_model == "openai/local"
    assert settings.fallback_models == ["a", "b"]
    assert settings.database_url is None  # an empty value means unset


def test_malformed_database_url_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://localhost/lucy")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "missing.env")
    assert info.value.user_message.startswith("DATABASE_URL must start with postgresql://.")


def test_missing_signing_secret_says_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    settings = load_settings(tmp_path / "missing.env")
    with pytest.raises(ConfigError) as info:
        require(settings, "SLACK_SIGNING_SECRET")
    assert info.value.user_message == (
        "SLACK_SIGNING_SECRET is not set. Get it from the Slack app's Basic Information page "
        "(App Credentials → Signing Secret)."
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    result = run_lucy(["serve"], {"PORT": "0", "LOG_FORMAT": "xml", "LUCY_MAX_STEPS": "many"}, tmp_path)
    assert result.returncode == 1
    for variable in ("PORT", "LOG_FORMAT", "LUCY_MAX_STEPS"):
        assert variable in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
