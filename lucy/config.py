"""Configuration: the only module that reads the environment and ``.env``.

A missing or malformed setting becomes a :class:`~lucy.errors.ConfigError` whose message is one
sentence naming the variable and where to get its value; callers print it and exit, never a
traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lucy.errors import ConfigError

# Where each value comes from, in words a newcomer can follow. Used by error messages and
# `lucy doctor`, so both say the same thing.
WHERE: dict[str, str] = {
    "SLACK_BOT_TOKEN": "Get it from the Slack app's OAuth & Permissions page (Bot User OAuth Token, xoxb-…).",
    "SLACK_SIGNING_SECRET": "Get it from the Slack app's Basic Information page (App Credentials → Signing Secret).",
    "SLACK_APP_TOKEN": (
        "Get it from the Slack app's Basic Information page "
        "(App-Level Tokens, with scope connections:write, starts with xapp-)."
    ),
    "SLACK_CLIENT_ID": "Get it from the Slack app's Basic Information page (App Credentials → Client ID).",
    "SLACK_CLIENT_SECRET": "Get it from the Slack app's Basic Information page (App Credentials → Client Secret).",
    "SLACK_API_URL": "Leave it unset for Slack itself; tests point it at a local fake (http://127.0.0.1:PORT/api/).",
    "COMPOSIO_API_KEY": "Get it from the Composio dashboard (Settings → API Keys).",
    "COMPOSIO_BASE_URL": "Leave it unset for Composio's cloud; it must be https, or http on 127.0.0.1.",
    "LLM_MODEL": "Use a LiteLLM model name such as gpt-4o-mini, anthropic/claude-sonnet-4-5 or openai/<name>.",
    "LLM_API_BASE": "Use your OpenAI-compatible server's URL ending in /v1, or leave it unset for hosted providers.",
    "LLM_API_KEY": "Get it from your model provider's console (for example platform.openai.com → API keys).",
    "LLM_FALLBACK_MODELS": "Use a comma-separated list of LiteLLM model names, tried in order when LLM_MODEL fails.",
    "LLM_MAX_TOKENS": "Use the most tokens one model answer may have; the default is 4096.",
    "LLM_CONTEXT_TOKENS": (
        "Use the model's context window in tokens (for example 32768 for a local model); "
        "unset = LiteLLM's model info, or 32768 for models it does not know."
    ),
    "DATABASE_URL": (
        "Use a PostgreSQL URL like postgresql://user:password@host:5432/lucy, "
        "or leave it unset for the embedded development database."
    ),
    "REDIS_URL": "Use a Redis URL like redis://127.0.0.1:6379/0, or leave it unset for the in-process cache.",
    "PORT": "Use a TCP port number, for example 3000.",
    "LUCY_PUBLIC_URL": "Use the https URL where Slack and browsers reach this server, like https://lucy.example.com.",
    "LOG_LEVEL": "Use one of debug, info, warning, error.",
    "LOG_FORMAT": "Use json (production) or console (development).",
    "LUCY_DATA_DIR": "Use a directory Lucy may write to (embedded database); the default is .lucy.",
    "LUCY_CACHE_TTL_SECONDS": "Use the seconds to keep a workspace's connected apps cached; the default is 300.",
    "LUCY_MAX_STEPS": "Use the most LLM steps in one turn, 1 to 50; the default is 8.",
    "LUCY_TOOL_TIMEOUT_SECONDS": "Use the seconds one tool call may take; the default is 60.",
    "LUCY_LLM_TIMEOUT_SECONDS": "Use the seconds one model call may take; the default is 60.",
    "LUCY_LLM_CLIENT": (
        "Use auto (OpenAI-compatible models called directly, others through litellm) or litellm (every model "
        "through litellm)."
    ),
    "LUCY_COMPOSIO_TIMEOUT_SECONDS": "Use the seconds one Composio read may take; the default is 20.",
    "LUCY_APPROVAL_TTL_MINUTES": "Use the minutes an approval request stays open before it expires; the default is 15.",
    "LUCY_AUDIT_RETENTION_DAYS": "Use the days to keep audit log rows (0 keeps them forever); the default is 90.",
    "LUCY_RATE_WINDOW_SECONDS": "Use the length in seconds of the rate-limit window; the default is 60.",
    "LUCY_RATE_USER_TURNS": "Use the requests one person may make per rate-limit window (0 = no limit); "
    "the default is 10.",
    "LUCY_RATE_WORKSPACE_TURNS": "Use the requests one workspace may make per rate-limit window (0 = no limit); "
    "the default is 100.",
    "LUCY_RATE_USER_TOOLS": "Use the tool runs one person may cause per rate-limit window (0 = no limit); "
    "the default is 60.",
    "LUCY_RATE_WORKSPACE_TOOLS": "Use the tool runs one workspace may cause per rate-limit window (0 = no limit); "
    "the default is 600.",
    "COMPOSIO_TOOLKIT_VERSIONS": (
        "Use comma-separated toolkit=version pins like github=20251201_00,gmail=20251027_00 "
        "(versions are listed on each toolkit's page in the Composio dashboard); unset = latest."
    ),
    "COMPOSIO_AUTH_CONFIGS": (
        "Use comma-separated toolkit=auth config id pairs like github=ac_123 from the Composio dashboard "
        "(Auth Configs); unset = Lucy finds or creates a Composio-managed auth config per toolkit."
    ),
    "LUCY_TOOL_SCHEMA_TTL_SECONDS": "Use the seconds to keep a toolkit's tool schemas cached; the default is 3600.",
    "LUCY_TOOL_OUTPUT_MAX_CHARS": "Use the most characters of one tool result the model reads; the default is 20000.",
    "LUCY_SHUTDOWN_GRACE_SECONDS": (
        "Use the seconds answers in progress may take to finish after SIGTERM; the default is 20 "
        "(keep it below your platform's kill timeout, e.g. 30 s on Heroku and Kubernetes)."
    ),
    "LUCY_DB_POOL_SIZE": (
        "Use the most PostgreSQL connections one process opens; the default is 20 "
        "(instances × this must stay under the server's max_connections)."
    ),
    "LUCY_MAX_CONCURRENT_TURNS": (
        "Use the most answers one process works on at once (more wait their turn); the default is 1000."
    ),
    "LUCY_REDIS_PREFIX": (
        "Use a short name that starts every Redis key (cache, rate limits); the default is lucy. "
        "Give each Lucy deployment sharing one Redis its own."
    ),
    "LUCY_EMBEDDING_MODEL": (
        "Use off for lexical tool selection only, or the directory of an all-MiniLM-L6-v2 model; "
        "unset = <LUCY_DATA_DIR>/models/all-MiniLM-L6-v2 when scripts/_setup.sh has put it there."
    ),
    "LUCY_PHRASEBOOK_AUTO": (
        "Use true (default) to let Lucy write, with the LLM, the phrasebook of a connected app it ships "
        "none for, or false to never spend model calls on it (lucy tools phrasebook writes one by hand)."
    ),
}


class Settings(BaseSettings):
    """Every setting Lucy knows, by its environment variable name."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=False
    )

    slack_bot_token: str | None = Field(None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: str | None = Field(None, alias="SLACK_APP_TOKEN")
    slack_client_id: str | None = Field(None, alias="SLACK_CLIENT_ID")
    slack_client_secret: str | None = Field(None, alias="SLACK_CLIENT_SECRET")
    slack_api_url: str | None = Field(None, alias="SLACK_API_URL")

    composio_api_key: str | None = Field(None, alias="COMPOSIO_API_KEY")
    composio_base_url: str | None = Field(None, alias="COMPOSIO_BASE_URL")

    llm_model: str = Field("gpt-4o-mini", alias="LLM_MODEL")
    llm_api_base: str | None = Field(None, alias="LLM_API_BASE")
    llm_api_key: str | None = Field(None, alias="LLM_API_KEY")
    llm_fallback_models: str = Field("", alias="LLM_FALLBACK_MODELS")
    llm_max_tokens: int = Field(4096, alias="LLM_MAX_TOKENS", ge=16)
    llm_context_tokens: int | None = Field(None, alias="LLM_CONTEXT_TOKENS", ge=1024)
    # auto: OpenAI and OpenAI-compatible servers are spoken to directly (lucy/core/openai_wire.py).
    llm_client: Literal["auto", "litellm"] = Field("auto", alias="LUCY_LLM_CLIENT")

    database_url: str | None = Field(None, alias="DATABASE_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    port: int = Field(3000, alias="PORT", ge=1, le=65535)
    public_url: str | None = Field(None, alias="LUCY_PUBLIC_URL")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", alias="LOG_LEVEL")
    log_format: Literal["json", "console"] | None = Field(None, alias="LOG_FORMAT")

    data_dir: Path = Field(Path(".lucy"), alias="LUCY_DATA_DIR")
    cache_ttl_seconds: float = Field(300.0, alias="LUCY_CACHE_TTL_SECONDS", gt=0)
    max_steps: int = Field(8, alias="LUCY_MAX_STEPS", ge=1, le=50)
    tool_timeout_seconds: float = Field(60.0, alias="LUCY_TOOL_TIMEOUT_SECONDS", gt=0)
    llm_timeout_seconds: float = Field(60.0, alias="LUCY_LLM_TIMEOUT_SECONDS", gt=0)
    composio_timeout_seconds: float = Field(20.0, alias="LUCY_COMPOSIO_TIMEOUT_SECONDS", gt=0)
    # Approvals, audit and rate limits (lucy/approvals.py, lucy/audit.py, lucy/ratelimit.py).
    approval_ttl_minutes: float = Field(15.0, alias="LUCY_APPROVAL_TTL_MINUTES", gt=0, le=7 * 24 * 60)
    audit_retention_days: int = Field(90, alias="LUCY_AUDIT_RETENTION_DAYS", ge=0)
    rate_window_seconds: float = Field(60.0, alias="LUCY_RATE_WINDOW_SECONDS", gt=0)
    rate_user_turns: int = Field(10, alias="LUCY_RATE_USER_TURNS", ge=0)
    rate_workspace_turns: int = Field(100, alias="LUCY_RATE_WORKSPACE_TURNS", ge=0)
    rate_user_tools: int = Field(60, alias="LUCY_RATE_USER_TOOLS", ge=0)
    rate_workspace_tools: int = Field(600, alias="LUCY_RATE_WORKSPACE_TOOLS", ge=0)
    composio_toolkit_versions: str = Field("", alias="COMPOSIO_TOOLKIT_VERSIONS")
    composio_auth_configs: str = Field("", alias="COMPOSIO_AUTH_CONFIGS")
    tool_schema_ttl_seconds: float = Field(3600.0, alias="LUCY_TOOL_SCHEMA_TTL_SECONDS", gt=0)
    tool_output_max_chars: int = Field(20000, alias="LUCY_TOOL_OUTPUT_MAX_CHARS", ge=500)
    # Tool selection's sentence encoder (lucy/integrations/selection_embed.py); "" = the default place.
    embedding_model: str = Field("", alias="LUCY_EMBEDDING_MODEL")
    # Write the phrasebook of a connected toolkit that has none, with the LLM, in the background.
    phrasebook_auto: bool = Field(True, alias="LUCY_PHRASEBOOK_AUTO")
    # Several instances and shutdown (lucy/serve.py).
    shutdown_grace_seconds: float = Field(20.0, alias="LUCY_SHUTDOWN_GRACE_SECONDS", ge=0, le=3600)
    db_pool_size: int = Field(20, alias="LUCY_DB_POOL_SIZE", ge=2, le=1000)
    max_concurrent_turns: int = Field(1000, alias="LUCY_MAX_CONCURRENT_TURNS", ge=1, le=100_000)
    redis_prefix: str = Field("lucy", alias="LUCY_REDIS_PREFIX", min_length=1, max_length=64,
                              pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("composio_toolkit_versions", "composio_auth_configs")
    @classmethod
    def _toolkit_pairs(cls, value: str) -> str:
        _parse_pairs(value)  # raises ValueError with the bad entry named
        return value

    @field_validator("llm_context_tokens", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # `LLM_CONTEXT_TOKENS=` in a .env file means "look it up", not an invalid integer.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_or_none(cls, value: object) -> object:
        if isinstance(value, str):
            return value.lower() or None
        return value

    @field_validator(
        "slack_bot_token", "slack_signing_secret", "slack_app_token", "slack_client_id",
        "slack_client_secret", "slack_api_url", "composio_api_key", "composio_base_url",
        "llm_api_base", "llm_api_key", "database_url", "redis_url", "public_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `FOO=` in .env.example style files means "not set", not "set to the empty string".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("xoxb-"):
            raise ValueError("must start with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("xapp-"):
            raise ValueError("must start with xapp-")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("postgres", "postgresql"):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://")
        return value

    @field_validator("slack_api_url", "composio_base_url", "llm_api_base", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s) URL")
        return value

    # Derived views -------------------------------------------------------------------------

    @property
    def toolkit_versions(self) -> dict[str, str]:
        """Composio toolkit version pins, toolkit slug (lower case) → version."""
        return _parse_pairs(self.composio_toolkit_versions)

    @property
    def auth_config_ids(self) -> dict[str, str]:
        """Composio auth config ids to use per toolkit slug (lower case)."""
        return _parse_pairs(self.composio_auth_configs)

    @property
    def fallback_models(self) -> list[str]:
        return [m.strip() for m in self.llm_fallback_models.split(",") if m.strip()]

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def multi_workspace(self) -> bool:
        return self.slack_client_id is not None and self.slack_client_secret is not None

    @property
    def slack_configured(self) -> bool:
        return self.slack_bot_token is not None or self.multi_workspace

    @property
    def resolved_log_format(self) -> Literal["json", "console"]:
        # Development (a terminal) reads better as console lines; production pipes want JSON.
        if self.log_format is not None:
            return self.log_format
        return "console" if _stderr_is_tty() else "json"

    def secrets(self) -> list[str]:
        """Every secret value in the settings, for the log redactor."""
        values = [
            self.slack_bot_token, self.slack_signing_secret, self.slack_app_token,
            self.slack_client_secret, self.composio_api_key, self.llm_api_key,
        ]
        values += [_url_password(self.database_url), _url_password(self.redis_url)]
        return [v for v in values if v and len(v) >= 6]


def _parse_pairs(value: str) -> dict[str, str]:
    """``"github=ac_1, gmail=ac_2"`` → ``{"github": "ac_1", "gmail": "ac_2"}``."""
    pairs: dict[str, str] = {}
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        key, sep, val = entry.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"has an entry {entry!r} that is not toolkit=value")
        pairs[key.strip().lower()] = val.strip()
    return pairs


def _url_password(url: str | None) -> str | None:
    return urlsplit(url).password if url else None


def _stderr_is_tty() -> bool:
    try:
        return os.isatty(2)
    except OSError:
        return False


@dataclass(frozen=True)
class _Problem:
    variable: str
    reason: str


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read the environment (and ``env_file``) into :class:`Settings`.

    Raises:
        ConfigError: one sentence per problem, naming the variable and where to get its value.
    """
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors()]
        raise ConfigError(" ".join(describe(p.variable, p.reason) for p in problems)) from None


_SECRET_VARIABLES = {
    "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_CLIENT_SECRET",
    "COMPOSIO_API_KEY", "LLM_API_KEY", "DATABASE_URL", "REDIS_URL",
}


def _problem(err: object) -> _Problem:
    assert isinstance(err, dict)
    loc = err.get("loc") or ("?",)
    variable = _alias_of(str(loc[0]))
    reason = _reason(str(err.get("type", "")), str(err.get("msg", "is invalid")), err.get("ctx") or {})
    # Echo what was typed so the person sees the typo, but never a secret.
    if variable not in _SECRET_VARIABLES and isinstance(err.get("input"), str):
        reason = f"is {err['input']!r} but {reason}"
    return _Problem(variable, reason)


def _reason(kind: str, msg: str, ctx: dict[str, object]) -> str:
    if kind == "int_parsing":
        return "must be a whole number"
    if kind == "float_parsing":
        return "must be a number"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return msg.replace("Input should be", "must be")
    return msg.removeprefix("Value error, ")


def _alias_of(name: str) -> str:
    if name in WHERE:
        return name
    field = Settings.model_fields.get(name)
    if field is not None and field.alias:
        return field.alias
    return name.upper()


def describe(variable: str, reason: str) -> str:
    """The one sentence shown for a bad or missing setting."""
    hint = WHERE.get(variable)
    return f"{variable} {reason.rstrip('.')}." + (f" {hint}" if hint else "")


def require(settings: Settings, *variables: str) -> None:
    """Stop with a clear sentence when any of ``variables`` is unset."""
    missing = [v for v in variables if getattr(settings, _field_of(v)) in (None, "")]
    if missing:
        raise ConfigError(" ".join(describe(v, "is not set") for v in missing))


def _field_of(variable: str) -> str:
    for name, field in Settings.model_fields.items():
        if field.alias == variable:
            return name
    raise KeyError(variable)
