"""The two meta-tools the model always gets beside the app tools of a turn.

``search_tools`` widens the turn's tool list in the model's own words; ``connect_app`` produces a
Connect button for an app the workspace has not connected. The agent handles the first, the
integration worker the second.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lucy.core.types import CONNECT_APP, SEARCH_TOOLS, ToolDef

# Past this many apps an enum costs more tokens than it saves mistakes (Composio has 1,000+
# toolkits); the model then gets a free-text slug and the worker resolves it loosely.
MAX_CONNECT_ENUM = 50


def meta_tools(unconnected: Iterable[str]) -> list[ToolDef]:
    """OpenAI-format definitions of ``search_tools`` and ``connect_app``.

    Args:
        unconnected: toolkit slugs the workspace could connect but has not; they become the enum
            of ``connect_app.app`` when there are at most :data:`MAX_CONNECT_ENUM` of them.
    """
    apps = sorted(set(unconnected))
    app_schema: dict[str, Any] = {
        "type": "string",
        "description": "The app's toolkit slug, lower case (for example github, gmail, notion, googledrive).",
    }
    if apps and len(apps) <= MAX_CONNECT_ENUM:
        app_schema["enum"] = apps
    return [
        {
            "type": "function",
            "function": {
                "name": SEARCH_TOOLS,
                "description": (
                    "Find more tools of the connected apps when none of the tools you have fits the request. "
                    "Describe the action in plain words (for example 'cancel a workflow run' or 'share a file "
                    "with someone'); matching tools are added for the rest of this turn."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "The action you need, in a few words."}
                    },
                    "required": ["query"],
                    "additionalProperties": False,
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": CONNECT_APP,
                "description": (
                    "Ask the person to connect an app this workspace has not connected yet, when the request "
                    "needs it. Shows them a Connect button; do not use it for apps you already have tools for."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {"app": app_schema},
                    "required": ["app"],
                    "additionalProperties": False,
                },
            },
        },
    ]


