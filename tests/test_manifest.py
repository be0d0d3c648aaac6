"""manifest.yml is a valid Slack app manifest, and every scope and event is one Slack knows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "slack" / "manifest.schema.1.0.0.json"

# From Slack's scope and event reference pages (docs.slack.dev/reference/scopes, /reference/events):
# the schema does not know names, so these are checked here.
KNOWN_BOT_SCOPES = {
    "app_mentions:read", "assistant:write", "chat:write", "chat:write.public", "commands", "im:history",
    "im:read", "im:write", "mpim:history", "mpim:read", "channels:history", "channels:read", "groups:history",
    "groups:read", "reactions:read", "reactions:write", "users:read", "users:read.email", "team:read",
}
KNOWN_EVENTS = {
    "app_home_opened", "app_context_changed", "app_mention", "message.im", "message.channels", "message.groups",
    "message.mpim", "app_uninstalled", "tokens_revoked", "assistant_thread_started",
    "assistant_thread_context_changed", "reaction_added",
}
EVENT_NEEDS_SCOPE = {
    "app_mention": "app_mentions:read", "message.im": "im:history", "message.channels": "channels:history",
    "message.groups": "groups:history", "app_context_changed": "assistant:write",
}


def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_manifest_validates_against_slacks_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(manifest(), schema, cls=jsonschema.Draft7Validator)


def test_scopes_and_events_are_real_and_consistent() -> None:
    m = manifest()
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    events = set(m["settings"]["event_subscriptions"]["bot_events"])
    assert scopes <= KNOWN_BOT_SCOPES
    assert events <= KNOWN_EVENTS
    for event in events:
        if event in EVENT_NEEDS_SCOPE:
            assert EVENT_NEEDS_SCOPE[event] in scopes, event


def test_every_scope_says_why() -> None:
    text = (ROOT / "manifest.yml").read_text()
    block = text.split("    bot:\n", 1)[1].split("settings:", 1)[0]
    lines = [line for line in block.splitlines() if re.match(r"^\s+- ", line)]
    assert lines and all("#" in line and len(line.split("#", 1)[1].strip()) > 10 for line in lines)


def test_lucy_features_are_switched_on() -> None:
    m = manifest()
    assert m["features"]["app_home"]["messages_tab_enabled"] is True
    assert "agent_view" in m["features"]
    assert [c["command"] for c in m["features"]["slash_commands"]] == ["/lucy-connect", "/lucy-policy"]
    assert m["settings"]["interactivity"]["is_enabled"] is True
    assert m["settings"]["socket_mode_enabled"] is True
    assert {"app_uninstalled", "tokens_revoked"} <= set(m["settings"]["event_subscriptions"]["bot_events"])
