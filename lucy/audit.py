"""The audit log: one row per action Lucy executed, or was refused, or gave up on.

Every row says which workspace, which Slack user, which tool with which arguments (secrets
redacted, long values cut), what was decided and by whom, how it ended and how long it took.
Writers: the integration worker (executed / failed / timeout / invalid / needs_connection /
rate_limited) and :mod:`lucy.approvals` (denied / expired, in the same transaction as the
decision). Readers: ``lucy audit`` and whoever asks "who deleted that repository?".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from lucy.log import redact_text, redact_value

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    DB = asyncpg.Pool[Any] | asyncpg.Connection[Any] | PoolConnectionProxy[Any]

AuditStatus = Literal[
    "executed", "failed", "denied", "expired", "needs_connection", "needs_approval", "invalid", "timeout",
    "rate_limited",
]
AuditDecision = Literal["auto", "approved", "denied", "expired"]

MAX_VALUE_CHARS = 2000  # a file's content in an argument is evidence enough at 2,000 characters
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class AuditRow:
    id: int
    workspace: str
    user: str | None
    tool: str
    arguments: Any
    status: str
    decision: str | None
    decided_by: str | None
    error: str | None
    duration_ms: float | None
    turn_id: str | None
    approval_id: str | None
    created_at: datetime


def redact_arguments(arguments: Any) -> Any:
    """Arguments as the audit keeps them: secrets replaced, long strings cut."""
    return _cut(redact_value(arguments))


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + f"… [{len(value) - MAX_VALUE_CHARS} more characters]"
    if isinstance(value, Mapping):
        return {str(k): _cut(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cut(v) for v in value]
    return value


_INSERT = (
    "INSERT INTO audit_log (workspace_id, slack_user, tool, arguments, status, decision, decided_by, error, "
    "duration_ms, turn_id, approval_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id"
)


async def record(
    db: DB,
    *,
    workspace: str,
    tool: str,
    status: AuditStatus,
    user: str | None = None,
    arguments: Any = None,
    decision: AuditDecision | None = None,
    decided_by: str | None = None,
    error: str | None = None,
    duration_ms: float | None = None,
    turn_id: str | None = None,
    approval_id: str | None = None,
) -> int:
    """Write one audit row (on a pool, or on a connection inside the caller's transaction)."""
    row_id = await db.fetchval(
        _INSERT, workspace, user, tool, redact_arguments(arguments), status, decision, decided_by,
        redact_text(error)[:MAX_ERROR_CHARS] if error else None, duration_ms, turn_id or None, approval_id,
    )
    return int(row_id)


async def query(db: DB, *, workspace: str, since: timedelta, limit: int = 1000) -> list[AuditRow]:
    """A workspace's rows newer than ``since`` ago, oldest first (the last ``limit`` of them)."""
    rows = await db.fetch(
        "SELECT * FROM (SELECT id, workspace_id, slack_user, tool, arguments, status, decision, decided_by, "
        "error, duration_ms, turn_id, approval_id, created_at FROM audit_log "
        "WHERE workspace_id = $1 AND created_at >= now() - $2::interval ORDER BY created_at DESC, id DESC "
        "LIMIT $3) newest ORDER BY created_at, id",
        workspace, since, limit,
    )
    return [_row(r) for r in rows]


def _row(r: Mapping[str, Any]) -> AuditRow:
    return AuditRow(
        id=r["id"], workspace=r["workspace_id"], user=r["slack_user"], tool=r["tool"], arguments=r["arguments"],
        status=r["status"], decision=r["decision"], decided_by=r["decided_by"], error=r["error"],
        duration_ms=r["duration_ms"], turn_id=r["turn_id"], approval_id=r["approval_id"],
        created_at=r["created_at"],
    )


async def prune(db: DB, *, retention_days: int) -> int:
    """Delete rows older than ``retention_days`` (0 keeps everything); returns how many went."""
    if retention_days <= 0:
        return 0
    deleted = await db.fetchval(
        "WITH gone AS (DELETE FROM audit_log WHERE created_at < now() - make_interval(days => $1) RETURNING 1) "
        "SELECT count(*) FROM gone",
        retention_days,
    )
    return int(deleted or 0)


# --- `lucy audit` helpers ------------------------------------------------------------------

_SINCE = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$", re.I)
_UNITS = {"m": ("minutes", "minute"), "h": ("hours", "hour"), "d": ("days", "day"), "w": ("weeks", "week")}


def parse_since(text: str) -> timedelta:
    """``30m``, ``12h``, ``1d``, ``7d``, ``2w`` → a timedelta.

    Raises:
        ValueError: with one sentence saying what is accepted.
    """
    match = _SINCE.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"--since must be a number followed by m, h, d or w (for example 30m, 12h, 1d or 7d), not {text!r}."
        )
    amount, unit = int(match.group(1)), match.group(2).lower()
    return timedelta(**{_UNITS[unit][0]: amount})


def describe_since(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            amount = seconds // size
            name = _UNITS[unit][1]
            return f"{amount} {name}" + ("s" if amount != 1 else "")
    return f"{seconds} seconds"


_COLUMNS = ("WHEN (UTC)", "USER", "TOOL", "STATUS", "DECISION", "BY", "MS", "ARGUMENTS")
_ARGS_WIDTH = 70


def format_table(rows: Sequence[AuditRow], *, workspace: str, since: timedelta) -> str:
    """A table a person reads in a terminal; errors go on an indented line under their row."""
    window = describe_since(since)
    if not rows:
        return f"No actions recorded for {workspace} in the last {window}."
    table = [_COLUMNS] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = [f"Audit log for {workspace}, last {window}: {len(rows)} action" + ("s" if len(rows) != 1 else "")]
    for index, cells in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
        elif rows[index - 1].error:
            lines.append(f"    error: {_one_line(rows[index - 1].error or '', 200)}")
    return "\n".join(lines)


def _cells(row: AuditRow) -> tuple[str, ...]:
    when = row.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    ms = "" if row.duration_ms is None else f"{row.duration_ms:.0f}"
    return (when, row.user or "-", row.tool, row.status, row.decision or "-", row.decided_by or "-", ms,
            _arguments(row.arguments))


def _arguments(arguments: Any) -> str:
    if arguments in (None, {}, []):
        return "-"
    if isinstance(arguments, Mapping):
        # jsonb keeps its own key order; sorted reads the same every time.
        text = ", ".join(f"{k}={_value(v)}" for k, v in sorted(arguments.items()))
    else:
        text = _value(arguments)
    return _one_line(text, _ARGS_WIDTH)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"

