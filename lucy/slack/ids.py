"""Workspace ids: a Slack team, or ``enterprise_id:team_id`` on Enterprise Grid (see DESIGN.md)."""

from __future__ import annotations

from typing import Any


def workspace_id(enterprise_id: str | None, team_id: str | None) -> str:
    """The id every row, cache key and Composio call of this workspace uses."""
    if enterprise_id and team_id:
        return f"{enterprise_id}:{team_id}"
    if team_id:
        return team_id
    if enterprise_id:  # an org-wide install, before any team is known
        return enterprise_id
    raise ValueError("a Slack request without team_id or enterprise_id")


def split_workspace_id(workspace: str) -> tuple[str | None, str | None]:
    """``(enterprise_id, team_id)`` back from :func:`workspace_id`."""
    if ":" in workspace:
        enterprise, team = workspace.split(":", 1)
        return enterprise, team
    if workspace.startswith("E"):
        return workspace, None
    return None, workspace


def workspace_of_body(body: dict[str, Any]) -> str | None:
    """The workspace of an Events API envelope, command or interaction payload (None if absent)."""
    team = body.get("team_id")
    if not team and isinstance(body.get("team"), dict):
        team = body["team"].get("id")
    enterprise = body.get("enterprise_id")
    if not enterprise and isinstance(body.get("enterprise"), dict):
        enterprise = body["enterprise"].get("id")
    if not (team or enterprise):
        return None
    return workspace_id(enterprise, team)
