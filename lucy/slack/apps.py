"""App (Composio toolkit) names as people write them: display names and loose matching.

``/lucy-connect gh``, ``/lucy-connect google calendar`` and ``/lucy-connect Gmail`` all have to land
on a toolkit slug; a name that matches nothing gets the closest few instead.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

_DISPLAY: dict[str, str] = {
    "github": "GitHub", "gitlab": "GitLab", "gmail": "Gmail", "googlecalendar": "Google Calendar",
    "googledocs": "Google Docs", "googledrive": "Google Drive", "googlesheets": "Google Sheets",
    "googletasks": "Google Tasks", "googlemeet": "Google Meet", "notion": "Notion", "linear": "Linear",
    "jira": "Jira", "slack": "Slack", "linkedin": "LinkedIn", "youtube": "YouTube", "figma": "Figma",
    "hubspot": "HubSpot", "salesforce": "Salesforce", "asana": "Asana", "trello": "Trello",
    "outlook": "Outlook", "microsoft_teams": "Microsoft Teams", "dropbox": "Dropbox", "zoom": "Zoom",
    "perplexityai": "Perplexity AI", "elevenlabs": "ElevenLabs", "heygen": "HeyGen", "mem0": "Mem0",
    "browseai": "Browse AI", "firecrawl": "Firecrawl", "hyperbrowser": "Hyperbrowser",
    "facebook": "Facebook", "instagram": "Instagram", "confluence": "Confluence", "airtable": "Airtable",
}

# Short names people use for the same app.
_ALIASES: dict[str, str] = {
    "gh": "github", "git": "github", "gcal": "googlecalendar", "calendar": "googlecalendar",
    "gcalendar": "googlecalendar", "mail": "gmail", "email": "gmail", "googlemail": "gmail",
    "gdrive": "googledrive", "drive": "googledrive", "gdocs": "googledocs", "docs": "googledocs",
    "sheets": "googlesheets", "gsheets": "googlesheets", "tasks": "googletasks", "teams": "microsoft_teams",
    "msteams": "microsoft_teams", "yt": "youtube", "perplexity": "perplexityai", "meet": "googlemeet",
}

# Shown with Connect buttons when /lucy-connect has no argument, in this order.
POPULAR = ["github", "gmail", "googlecalendar", "notion", "googledrive", "linear", "jira", "googledocs"]


def display_name(slug: str) -> str:
    """'googlecalendar' → 'Google Calendar'; unknown slugs are title-cased."""
    if slug in _DISPLAY:
        return _DISPLAY[slug]
    return " ".join(part.capitalize() for part in re.split(r"[_\-\s]+", slug) if part) or slug


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass(frozen=True)
class AppMatch:
    """Either one toolkit, or the closest candidates when the name was not clear."""

    slug: str | None
    candidates: list[str] = field(default_factory=list)


def match_app(query: str, known: list[str], limit: int = 3) -> AppMatch:
    """Match what a person typed against the known toolkit slugs."""
    q = _norm(query)
    if not q:
        return AppMatch(None, [])
    by_key: dict[str, str] = {}
    for slug in known:
        by_key.setdefault(_norm(slug), slug)
        by_key.setdefault(_norm(display_name(slug)), slug)
    alias = _ALIASES.get(q)
    if alias is not None and alias in known:
        return AppMatch(alias)
    if q in by_key:
        return AppMatch(by_key[q])
    prefixed = sorted({slug for key, slug in by_key.items() if key.startswith(q)})
    if len(prefixed) == 1 and len(q) >= 3:
        return AppMatch(prefixed[0])
    scored = sorted(
        ((difflib.SequenceMatcher(None, q, key).ratio(), slug) for key, slug in by_key.items()),
        key=lambda pair: (-pair[0], pair[1]),
    )
    if scored and scored[0][0] >= 0.85 and (len(scored) == 1 or scored[1][0] < scored[0][0] or
                                             scored[1][1] == scored[0][1]):
        return AppMatch(scored[0][1])
    candidates: list[str] = []
    for slug in prefixed + [s for score, s in scored if score >= 0.45]:
        if slug not in candidates:
            candidates.append(slug)
    return AppMatch(None, candidates[:limit])
