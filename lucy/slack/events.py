"""Reading Slack events: which messages are a person talking, and what they said to Lucy."""

from __future__ import annotations

import re
from typing import Any

from lucy.core.types import Turn

# Subtypes that are still a person writing; everything else (edits, deletions, joins, bot
# messages, channel topic changes, …) is noise Lucy never answers.
PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def is_person_message(event: dict[str, Any]) -> bool:
    """A message a human wrote (not a bot, not an edit, deletion or other subtype)."""
    if event.get("subtype") not in PERSON_SUBTYPES:
        return False
    if event.get("bot_id") or event.get("bot_profile") or not event.get("user"):
        return False
    if event.get("hidden"):
        return False
    return bool((event.get("text") or "").strip() or event.get("files"))


def mentioned_users(text: str) -> set[str]:
    return set(_MENTION.findall(text or ""))


def mentions(text: str, user_id: str | None) -> bool:
    return user_id is not None and user_id in mentioned_users(text)


def addressed_to_others(text: str, bot_user_id: str | None) -> bool:
    """Mentions people but not Lucy: in Lucy's thread, that is a message for them."""
    found = mentioned_users(text)
    return bool(found) and bot_user_id not in found


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """Remove Lucy's own mention(s); other people's mentions stay, the model may need them."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def thread_of(event: dict[str, Any]) -> str:
    """The thread Lucy answers in: the existing thread, or a new one under this message."""
    return str(event.get("thread_ts") or event["ts"])


def turn_from_event(event: dict[str, Any], *, workspace: str, bot_user_id: str | None, turn_id: str) -> Turn:
    text = strip_mention(event.get("text") or "", bot_user_id)
    files = event.get("files") or []
    if files:
        names = ", ".join(str(f.get("name") or f.get("title") or "file") for f in files)
        text = f"{text}\n(attached: {names})".strip()
    return Turn(
        workspace=workspace, user=str(event["user"]), channel=str(event["channel"]),
        thread_ts=thread_of(event), text=text, ts=str(event["ts"]), turn_id=turn_id,
    )
