"""Approvals: a tool call waiting for a person's Approve or Deny, in ``pending_actions``.

The worker stores the call and whatever the waiting turn needs to continue (``state``) with
:meth:`ApprovalStore.create`; the Slack layer posts :func:`approval_blocks` and, when someone
clicks, calls :meth:`ApprovalStore.decide`. Only the person who asked, or a workspace admin, may
decide. The decision is one compare-and-set in PostgreSQL (``UPDATE … WHERE status = 'pending'
AND expires_at > now()``), so a double click, or two instances receiving the same click, decide
once; every other caller gets "already decided". Rows live in the database, so a restart loses
nothing: the click after the restart finds the row and the state.

Denied and expired requests are written to the audit log in the same transaction as the
transition; executed and failed ones are written by the worker when it runs the call.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from lucy import audit
from lucy.core.types import JSON, Turn
from lucy.log import redact_value

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Conn = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

Risk = Literal["read", "write", "destructive"]
Status = Literal["pending", "approved", "denied", "expired", "done", "failed"]
Outcome = Literal["approved", "denied", "expired", "not_allowed", "already_decided", "not_found"]

DEFAULT_TTL = timedelta(minutes=15)
APPROVE_ACTION = "lucy_approve"
DENY_ACTION = "lucy_deny"


@dataclass(frozen=True)
class Approval:
    id: str
    workspace: str
    channel: str
    thread_ts: str
    requester: str  # Slack user who asked; they (or an admin) decide
    tool: str
    toolkit: str | None
    arguments: JSON
    state: JSON
    reason: str
    risk: Risk
    status: Status
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime
    created_at: datetime
    message_ts: str | None
    turn_id: str | None


@dataclass(frozen=True)
class Decision:
    """What a click led to. ``message`` is one sentence for the clicker (ephemeral)."""

    outcome: Outcome
    approval: Approval | None
    message: str
    changed: bool = False  # this call moved the request out of 'pending'

    @property
    def executes(self) -> bool:
        """True for exactly one caller: the one whose Approve won. Only it runs the tool."""
        return self.outcome == "approved" and self.changed


_COLUMNS = (
    "id, workspace_id, channel, thread_ts, slack_user, tool, toolkit, arguments, state, reason, risk, status, "
    "decided_by, decided_at, expires_at, created_at, message_ts, turn_id"
)


def _approval(row: Mapping[str, Any]) -> Approval:
    return Approval(
        id=row["id"], workspace=row["workspace_id"], channel=row["channel"], thread_ts=row["thread_ts"],
        requester=row["slack_user"], tool=row["tool"] or "", toolkit=row["toolkit"],
        arguments=row["arguments"] or {}, state=row["state"] or {}, reason=row["reason"] or "",
        risk=row["risk"] or "destructive", status=row["status"], decided_by=row["decided_by"],
        decided_at=row["decided_at"], expires_at=row["expires_at"], created_at=row["created_at"],
        message_ts=row["message_ts"], turn_id=row["turn_id"],
    )


def new_approval_id() -> str:
    # Unguessable: the id travels in a button value that anyone in the channel can see.
    return "apr_" + secrets.token_urlsafe(16)


class ApprovalStore:
    """Approval requests on the ``pending_actions`` table (kind = 'approval')."""

    def __init__(self, pool: asyncpg.Pool[Any], *, ttl: timedelta = DEFAULT_TTL) -> None:
        self._pool = pool
        self.ttl = ttl

    async def create(
        self,
        turn: Turn,
        tool: str,
        arguments: JSON,
        reason: str,
        state: JSON,
        *,
        ttl: timedelta | None = None,
        risk: Risk = "destructive",
        toolkit: str | None = None,
    ) -> str:
        """Store a call waiting for approval; returns its id (the buttons' value)."""
        ttl = self.ttl if ttl is None else ttl
        if ttl <= timedelta(0):
            raise ValueError("an approval needs a positive time to live")
        approval_id = new_approval_id()
        await self._pool.execute(
            "INSERT INTO pending_actions (id, workspace_id, kind, channel, thread_ts, slack_user, tool, toolkit, "
            "arguments, state, reason, risk, turn_id, expires_at) "
            "VALUES ($1, $2, 'approval', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now() + $13::interval)",
            approval_id, turn.workspace, turn.channel, turn.thread_ts, turn.user, tool, toolkit,
            arguments, _jsonable(state), reason, risk, turn.turn_id or None, ttl,
        )
        return approval_id

    async def attach_message(self, approval_id: str, message_ts: str) -> None:
        """Remember the Slack message that shows the request, to update it on expiry."""
        await self._pool.execute("UPDATE pending_actions SET message_ts = $2 WHERE id = $1", approval_id, message_ts)

    async def get(self, approval_id: str, *, workspace: str | None = None) -> Approval | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM pending_actions WHERE id = $1 AND kind = 'approval'", approval_id
        )
        if row is None or (workspace is not None and row["workspace_id"] != workspace):
            return None
        return _approval(row)

    async def list_pending(self, workspace: str) -> list[Approval]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM pending_actions WHERE workspace_id = $1 AND kind = 'approval' "
            "AND status = 'pending' AND expires_at > now() ORDER BY created_at",
            workspace,
        )
        return [_approval(r) for r in rows]

    async def decide(
        self, approval_id: str, decider: str, approve: bool, is_admin: bool, *, workspace: str
    ) -> Decision:
        """Approve or deny once. ``workspace`` is the clicker's: another workspace finds nothing."""
        current = await self.get(approval_id, workspace=workspace)
        if current is None:
            return Decision("not_found", None, "I can't find that request any more.")
        if decider != current.requester and not is_admin:
            verb = "approve" if approve else "deny"
            sentence = f"Only <@{current.requester}> or a workspace admin can {verb} this."
            return Decision("not_allowed", current, sentence)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE pending_actions SET status = $2, decided_by = $3, decided_at = now() "
                f"WHERE id = $1 AND status = 'pending' AND expires_at > now() RETURNING {_COLUMNS}",
                approval_id, "approved" if approve else "denied", decider,
            )
            if row is not None:
                won = _approval(row)
                if not approve:
                    await _audit(conn, won, "denied")
                verb = "Approved" if approve else "Denied"
                return Decision("approved" if approve else "denied", won, f"{verb} by <@{decider}>.", changed=True)
            expired = await _expire_one(conn, approval_id)
        if expired is not None:
            return Decision("expired", expired, expired_sentence(expired), changed=True)
        latest = await self.get(approval_id, workspace=workspace)
        assert latest is not None  # rows are never deleted while someone can click
        if latest.status == "expired":
            return Decision("expired", latest, expired_sentence(latest))
        return Decision("already_decided", latest, already_sentence(latest))

    async def finish(self, approval_id: str, *, ok: bool) -> bool:
        """Record that the approved call ran (``done``) or failed; False unless it was approved."""
        done = await self._pool.fetchval(
            "UPDATE pending_actions SET status = $2, finished_at = now() "
            "WHERE id = $1 AND status = 'approved' RETURNING true",
            approval_id, "done" if ok else "failed",
        )
        return bool(done)

    async def expire_due(self, limit: int = 100) -> list[Approval]:
        """Expire every pending request past its time (each exactly once, even with several
        instances sweeping); returns them so the caller can update their Slack messages."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE pending_actions SET status = 'expired', decided_at = now() WHERE id IN ("
                "  SELECT id FROM pending_actions WHERE kind = 'approval' AND status = 'pending' "
                "  AND expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED"
                f") AND status = 'pending' RETURNING {_COLUMNS}",
                limit,
            )
            expired = [_approval(r) for r in rows]
            for approval in expired:
                await _audit(conn, approval, "expired")
        return expired

    async def fail_interrupted(self, older_than: timedelta, limit: int = 100) -> list[Approval]:
        """Approved requests that never finished (the process died between Approve and the end
        of the call): mark them failed, once, with an audit row. Nobody can know whether the
        call ran, so they are not run again; the thread is told instead."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE pending_actions SET status = 'failed', finished_at = now() WHERE id IN ("
                "  SELECT id FROM pending_actions WHERE kind = 'approval' AND status = 'approved' "
                "  AND decided_at < now() - $1::interval ORDER BY decided_at LIMIT $2 FOR UPDATE SKIP LOCKED"
                f") AND status = 'approved' RETURNING {_COLUMNS}",
                older_than, limit,
            )
            failed = [_approval(r) for r in rows]
            for approval in failed:
                await audit.record(
                    conn, workspace=approval.workspace, tool=approval.tool, status="failed", user=approval.requester,
                    arguments=approval.arguments, decision="approved", decided_by=approval.decided_by,
                    error=INTERRUPTED, turn_id=approval.turn_id, approval_id=approval.id,
                )
        return failed

    # --- a turn's approvals as one group -----------------------------------------------------
    #
    # A model may ask for several risky calls in one step. Each gets its own request (and
    # message); the turn continues once, when the last of them is decided. The group lives in
    # the rows' ``state``: ``group`` (ids), ``leader`` (the row holding the turn's state),
    # ``result`` (what the model reads about that call) and ``resumed`` (claimed once).

    async def hold(self, leader_id: str, *, call_ids: Sequence[str], extra: JSON, leader_extra: JSON
                   ) -> list[Approval]:
        """Group ``leader_id`` with the turn's other pending requests (by call id); ``extra``
        goes into every row's state, ``leader_extra`` (the turn's state) into the leader's."""
        leader = await self.get(leader_id)
        if leader is None:
            return []
        ids = [leader_id]
        if leader.turn_id and call_ids:
            rows = await self._pool.fetch(
                "SELECT id FROM pending_actions WHERE workspace_id = $1 AND kind = 'approval' AND turn_id = $2 "
                "AND status = 'pending' AND state->>'call_id' = ANY($3::text[]) AND id <> $4 ORDER BY created_at",
                leader.workspace, leader.turn_id, list(call_ids), leader_id,
            )
            ids += [r["id"] for r in rows]
        group = {"group": ids, "leader": leader_id, **_jsonable(extra)}
        rows = await self._pool.fetch(
            "UPDATE pending_actions SET state = coalesce(state, '{}'::jsonb) || $2::jsonb "
            "|| CASE WHEN id = $3 THEN $4::jsonb ELSE '{}'::jsonb END "
            f"WHERE id = ANY($1::text[]) AND workspace_id = $5 RETURNING {_COLUMNS}",
            ids, group, leader_id, _jsonable(leader_extra), leader.workspace,
        )
        by_id = {r["id"]: _approval(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def record_result(self, approval_id: str, result: JSON) -> None:
        """What the model will read about this call when the turn continues."""
        await self._pool.execute(
            "UPDATE pending_actions SET state = coalesce(state, '{}'::jsonb) "
            "|| jsonb_build_object('result', $2::jsonb) WHERE id = $1",
            approval_id, _jsonable(result),
        )

    async def claim_resume(self, approval: Approval) -> list[Approval] | None:
        """Once every request of ``approval``'s group has a result, exactly one caller gets the
        group (leader first) to continue the turn with; everyone else, and anyone earlier, None."""
        leader_id = str(approval.state.get("leader") or approval.id)
        row = await self._pool.fetchrow(
            "UPDATE pending_actions p SET state = p.state || '{\"resumed\": true}'::jsonb "
            "WHERE p.id = $1 AND p.workspace_id = $2 AND p.state ? 'result' AND NOT (p.state ? 'resumed') "
            "AND NOT EXISTS (SELECT 1 FROM pending_actions q WHERE q.workspace_id = p.workspace_id "
            "  AND q.id IN (SELECT jsonb_array_elements_text(coalesce(p.state->'group', jsonb_build_array(p.id)))) "
            "  AND NOT (coalesce(q.state, '{}'::jsonb) ? 'result')) "
            "RETURNING p.id, coalesce(p.state->'group', jsonb_build_array(p.id)) AS grp",
            leader_id, approval.workspace,
        )
        if row is None:
            return None
        ids = [str(i) for i in row["grp"]]
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM pending_actions WHERE id = ANY($1::text[]) AND workspace_id = $2",
            ids, approval.workspace,
        )
        by_id = {r["id"]: _approval(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]


INTERRUPTED = "Lucy was interrupted between the approval and the end of the call; it may or may not have run."


async def _expire_one(conn: Conn, approval_id: str) -> Approval | None:
    row = await conn.fetchrow(
        "UPDATE pending_actions SET status = 'expired', decided_at = now() "
        f"WHERE id = $1 AND status = 'pending' AND expires_at <= now() RETURNING {_COLUMNS}",
        approval_id,
    )
    if row is None:
        return None
    approval = _approval(row)
    await _audit(conn, approval, "expired")
    return approval


async def _audit(conn: Conn, approval: Approval, outcome: Literal["denied", "expired"]) -> None:
    await audit.record(
        conn, workspace=approval.workspace, tool=approval.tool, status=outcome, user=approval.requester,
        arguments=approval.arguments, decision=outcome, decided_by=approval.decided_by if outcome == "denied" else None,
        turn_id=approval.turn_id, approval_id=approval.id,
    )


def _jsonable(state: JSON) -> JSON:
    # Fail here, with the offending type named, rather than inside asyncpg's codec.
    json.dumps(state)
    return state


# --- sentences -----------------------------------------------------------------------------


def slack_date(moment: datetime, fmt: str = "{date_short_pretty} at {time}") -> str:
    """A Slack date token: each reader sees it in their own time zone."""
    utc = moment.astimezone(UTC)
    fallback = utc.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(utc.timestamp())}^{fmt}|{fallback}>"


def expired_sentence(approval: Approval) -> str:
    return f"This request expired {slack_date(approval.expires_at)}. Ask me again if you still want it."


def already_sentence(approval: Approval) -> str:
    verb = {"approved": "approved", "done": "approved", "failed": "approved", "denied": "denied"}.get(
        approval.status, approval.status
    )
    when = f" {slack_date(approval.decided_at)}" if approval.decided_at else ""
    who = f"<@{approval.decided_by}>" if approval.decided_by else "Someone"
    return f"{who} already {verb} this{when}."


# --- what will run, in words ------------------------------------------------------------------

TOOLKIT_NAMES = {
    "github": "GitHub", "gmail": "Gmail", "googlecalendar": "Google Calendar", "googledrive": "Google Drive",
    "googledocs": "Google Docs", "googletasks": "Google Tasks", "googlesheets": "Google Sheets",
    "linkedin": "LinkedIn", "youtube": "YouTube", "elevenlabs": "ElevenLabs", "heygen": "HeyGen",
    "perplexityai": "Perplexity AI", "browseai": "Browse AI", "mem0": "Mem0", "figma": "Figma",
    "notion": "Notion", "slack": "Slack", "facebook": "Facebook", "instagram": "Instagram",
    "firecrawl": "Firecrawl", "hyperbrowser": "Hyperbrowser", "browser_tool": "Browser",
    "browserbase_tool": "Browserbase",
}
INLINE_CHARS = 80  # longer (or multi-line) values go on their own quoted lines
VALUE_CHARS = 500  # each value is cut here
TEXT_CHARS = 2800  # the whole text stays under Slack's 3,000 per section


def toolkit_name(toolkit: str) -> str:
    return TOOLKIT_NAMES.get(toolkit.lower(), toolkit.replace("_", " ").title())


def humanise_tool(tool: str, *, toolkit: str | None = None, title: str | None = None) -> str:
    """GITHUB_DELETE_A_REPOSITORY → 'Delete a repository (GitHub)'."""
    slug = tool.upper()
    if toolkit is None:
        toolkit = next((t for t in sorted(TOOLKIT_NAMES, key=len, reverse=True) if slug.startswith(t.upper() + "_")),
                       slug.split("_", 1)[0].lower())
    rest = slug[len(toolkit) + 1:] if slug.startswith(toolkit.upper() + "_") else slug
    words = title or rest.replace("_", " ").lower().capitalize()
    return f"{words} ({toolkit_name(toolkit)})"


def humanise_key(key: str) -> str:
    spaced = "".join(f" {c}" if c.isupper() and i and not key[i - 1].isupper() else c for i, c in enumerate(key))
    words = spaced.replace("_", " ").replace("-", " ").split()
    return " ".join(words).capitalize() if words else key


def escape_mrkdwn(text: str) -> str:
    # Slack's three control characters; escaping them also stops <!channel> and <@U…> tricks.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"… ({len(text) - limit} more characters)"


def _render_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if value.strip() else "(empty)"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value) if value else "(none)"
    return json.dumps(value, ensure_ascii=False, default=str)


def _argument_line(key: str, value: Any) -> str:
    name = escape_mrkdwn(humanise_key(str(key)))
    text = escape_mrkdwn(_cut(_render_value(value), VALUE_CHARS))
    if len(text) <= INLINE_CHARS and "\n" not in text:
        return f"• *{name}:* {text}"
    quoted = "\n".join(f">{line}" for line in text.splitlines() or [""])
    return f"• *{name}:*\n{quoted}"


RISK_WORDS = {
    "destructive": "This can't be undone.",
    "write": "This changes data.",
    "read": "This only reads.",
}


def approval_text(
    tool: str, arguments: Mapping[str, Any], risk: Risk, *, toolkit: str | None = None, title: str | None = None
) -> str:
    """What will run, for a person: the tool's name, then one line per argument (secrets hidden)."""
    head = f"*{escape_mrkdwn(humanise_tool(tool, toolkit=toolkit, title=title))}*. {RISK_WORDS[risk]}"
    shown = redact_value(dict(arguments))
    lines = [_argument_line(k, v) for k, v in shown.items()] or ["_No arguments._"]
    text = head
    for index, line in enumerate(lines):
        if len(text) + len(line) + 1 > TEXT_CHARS:
            text += f"\n_…and {len(lines) - index} more argument(s), not shown._"
            break
        text += "\n" + line
    return text + f"\n`{escape_mrkdwn(tool)}`"


# --- Block Kit -------------------------------------------------------------------------------

BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
SECTION_TEXT_MAX = 3000


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_TEXT_MAX - 40)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text, SECTION_TEXT_MAX - 40)}]}


def _button(text: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    if len(value) > BUTTON_VALUE_MAX:
        raise ValueError("an approval id must fit in a button value")
    return {
        "type": "button", "action_id": action_id, "value": value, "style": style,
        "text": {"type": "plain_text", "text": text[:BUTTON_TEXT_MAX], "emoji": True},
    }


def approval_blocks(
    approval_id: str,
    tool: str,
    arguments: Mapping[str, Any],
    risk: Risk,
    *,
    requester: str,
    reason: str,
    expires_at: datetime,
    toolkit: str | None = None,
    title: str | None = None,
) -> list[dict[str, Any]]:
    """The message asking for approval: why, what will run, who may decide, two buttons."""
    approve = _button("Approve", APPROVE_ACTION, approval_id, "primary")
    if risk == "destructive":
        approve["confirm"] = {
            "title": {"type": "plain_text", "text": "Run it?"},
            "text": {"type": "plain_text", "text": _cut(f"{humanise_tool(tool, toolkit=toolkit, title=title)}. "
                                                        "This can't be undone.", 290)},
            "confirm": {"type": "plain_text", "text": "Run it"},
            "deny": {"type": "plain_text", "text": "Not yet"},
            "style": "danger",
        }
    return [
        _section(f":raised_hand: *I need a yes before I do this.* {escape_mrkdwn(reason)}".rstrip()),
        _section(approval_text(tool, arguments, risk, toolkit=toolkit, title=title)),
        _context(f"Only <@{requester}> or a workspace admin can decide. "
                 f"This request expires {slack_date(expires_at, '{time}')}."),
        {"type": "actions", "block_id": "lucy_approval", "elements": [
            approve, _button("Deny", DENY_ACTION, approval_id, "danger"),
        ]},
    ]


def approval_blocks_for(approval: Approval, *, title: str | None = None) -> list[dict[str, Any]]:
    """:func:`approval_blocks` for a stored request."""
    return approval_blocks(
        approval.id, approval.tool, approval.arguments, approval.risk, requester=approval.requester,
        reason=approval.reason, expires_at=approval.expires_at, toolkit=approval.toolkit, title=title,
    )


def decision_line(approval: Approval, *, error: str | None = None) -> str:
    """"Approved by <@U> at …", "Denied by …", "Expired at … (nobody decided)", or a failure."""
    when = slack_date(approval.decided_at) if approval.decided_at else ""
    by = f"<@{approval.decided_by}>" if approval.decided_by else "someone"
    if approval.status == "pending":
        return f":hourglass_flowing_sand: Waiting for <@{approval.requester}> or a workspace admin."
    if approval.status == "expired":
        return f":hourglass: Expired {slack_date(approval.expires_at)}; nobody decided in time."
    if approval.status == "denied":
        return f":no_entry_sign: Denied by {by} {when}."
    if approval.status == "failed":
        detail = f": {escape_mrkdwn(_cut(error, 300))}" if error else "."
        return f":warning: Approved by {by} {when}, but it failed{detail}"
    done = " Done." if approval.status == "done" else ""
    return f":white_check_mark: Approved by {by} {when}.{done}"


def decided_blocks(approval: Approval, *, error: str | None = None, title: str | None = None) -> list[dict[str, Any]]:
    """The request after the decision: what ran (or would have), who decided and when, no buttons."""
    return [
        _section(approval_text(approval.tool, approval.arguments, approval.risk, toolkit=approval.toolkit,
                               title=title)),
        _context(decision_line(approval, error=error)),
    ]
