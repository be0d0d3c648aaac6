"""Block Kit builders. Pure functions from values to the JSON Slack expects, tested as data.

Limits kept here (Slack rejects the message otherwise): section text ≤ 3,000 characters, button text
≤ 75, button URL ≤ 3,000, button value ≤ 2,000, ≤ 25 elements per actions block, ≤ 50 blocks.
"""

from __future__ import annotations

import json
from typing import Any

from lucy.core.types import NeedsApproval, ToolkitConnection
from lucy.slack.apps import display_name
from lucy.slack.markdown import escape

Block = dict[str, Any]

SECTION_LIMIT = 3_000
BUTTON_TEXT_LIMIT = 75
BUTTON_URL_LIMIT = 3_000
ACTIONS_LIMIT = 25

CONNECT_ACTION_PREFIX = "lucy_connect_"
APPROVE_ACTION = "lucy_approve"
DENY_ACTION = "lucy_deny"

SUGGESTED_PROMPTS: list[dict[str, str]] = [
    {"title": "What can you do?", "message": "What can you do, and which apps are connected?"},
    {"title": "Connect an app", "message": "Connect GitHub"},
    {"title": "Summarise my open PRs", "message": "Summarise my open pull requests"},
    {"title": "Plan my day", "message": "What's on my calendar today?"},
]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section(mrkdwn: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, SECTION_LIMIT)}}


def context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(mrkdwn, SECTION_LIMIT)}]}


def connect_button(toolkit: str, url: str, label: str | None = None) -> Block:
    """A URL button; Slack still sends a block_actions payload for it, which Lucy acks."""
    return {
        "type": "button",
        "action_id": f"{CONNECT_ACTION_PREFIX}{toolkit}"[:255],
        "text": {"type": "plain_text", "text": _clip(label or f"Connect {display_name(toolkit)}", BUTTON_TEXT_LIMIT)},
        "url": url,
        "value": toolkit[:2000],
        "style": "primary",
    }


def connect_blocks(toolkit: str, url: str | None, text: str) -> list[Block]:
    """The message when an app must be connected first (mid-conversation or `/lucy-connect app`)."""
    return [section(text), *connect_actions(toolkit, url)]


def connect_actions(toolkit: str, url: str | None) -> list[Block]:
    """Just the Connect button (for a streamed answer, whose text is already in the message)."""
    if url and len(url) <= BUTTON_URL_LIMIT:
        return [{"type": "actions", "block_id": f"connect_{toolkit}"[:255], "elements": [connect_button(toolkit, url)]}]
    # No link (or one Slack cannot carry): the slash command gets a fresh one.
    return [context(f"Try `/lucy-connect {toolkit}` to get a connect link.")]


def _status_line(conn: ToolkitConnection) -> str:
    name = escape(display_name(conn.toolkit))
    if conn.status == "active":
        return f":white_check_mark: *{name}* — connected"
    return f":warning: *{name}* — not working, connect it again"


def connections_blocks(connections: list[ToolkitConnection], offers: list[tuple[str, str]]) -> list[Block]:
    """/lucy-connect without an argument: what is connected, and Connect buttons for popular apps."""
    blocks: list[Block] = []
    if connections:
        lines = "\n".join(_status_line(c) for c in sorted(connections, key=lambda c: display_name(c.toolkit)))
        blocks.append(section(f"*Apps connected to this workspace*\n{lines}"))
    else:
        blocks.append(section("*No apps are connected to this workspace yet.*"))
    if offers:
        blocks.append(section("Connect another app:"))
        buttons = [connect_button(slug, url) for slug, url in offers if len(url) <= BUTTON_URL_LIMIT]
        for start in range(0, len(buttons), ACTIONS_LIMIT):
            blocks.append({"type": "actions", "elements": buttons[start:start + ACTIONS_LIMIT]})
    blocks.append(context("Connect any other app with `/lucy-connect <app name>`, for example `/lucy-connect jira`."))
    return blocks


def no_match_blocks(query: str, candidates: list[tuple[str, str | None]]) -> list[Block]:
    """An app name that matched nothing clearly: the closest matches, with buttons where we have links."""
    shown = escape(query.strip())
    if not candidates:
        return [section(f"I don't know an app called *{shown}*. Try `/lucy-connect` to see popular apps.")]
    names = ", ".join(f"*{escape(display_name(slug))}*" for slug, _ in candidates)
    blocks = [section(f"I don't know an app called *{shown}*. Did you mean {names}?")]
    buttons = [connect_button(slug, url) for slug, url in candidates if url and len(url) <= BUTTON_URL_LIMIT]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


def approval_blocks(approval: NeedsApproval, text: str | None = None) -> list[Block]:
    """Approve / Deny buttons for a call that needs a person's go-ahead (decided in issue 7).
    Without ``text`` the leading sentence is left out (a streamed answer already shows it)."""
    args = json.dumps(approval.arguments, ensure_ascii=False, indent=1, sort_keys=True)
    approve: Block = {
        "type": "button", "action_id": APPROVE_ACTION, "style": "primary",
        "text": {"type": "plain_text", "text": "Approve"}, "value": approval.approval_id[:2000],
    }
    if approval.risk == "destructive":
        approve["confirm"] = {
            "title": {"type": "plain_text", "text": "Run this action?"},
            "text": {"type": "mrkdwn", "text": _clip(f"This can't be undone: {escape(approval.reason)}", 300)},
            "confirm": {"type": "plain_text", "text": "Approve"},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": "danger",
        }
    deny: Block = {
        "type": "button", "action_id": DENY_ACTION, "style": "danger",
        "text": {"type": "plain_text", "text": "Deny"}, "value": approval.approval_id[:2000],
    }
    return [
        *([section(text)] if text else []),
        section(f"*{escape(approval.tool)}*\n```\n{_clip(escape(args), SECTION_LIMIT - 200)}\n```"),
        context(escape(approval.reason)),
        {"type": "actions", "block_id": f"approval_{approval.approval_id}"[:255], "elements": [approve, deny]},
    ]


def connected_text(toolkit: str) -> str:
    return f"{display_name(toolkit)} is connected."


GREETING = (
    "Hi, I'm Lucy. Ask me anything, or ask me to act in your workspace's connected apps — "
    "GitHub, Gmail, Google Calendar, Notion and more. Use `/lucy-connect` to connect an app."
)
