"""What to tell the person while a tool runs: ``GITHUB_CREATE_AN_ISSUE`` → "Creating the GitHub issue"."""

from __future__ import annotations

from lucy.core.types import CONNECT_APP, SEARCH_TOOLS, ToolCall
from lucy.slack.apps import display_name

_VERBS: dict[str, str] = {
    "create": "Creating", "add": "Adding", "get": "Getting", "fetch": "Fetching", "list": "Listing",
    "find": "Finding", "search": "Searching", "send": "Sending", "update": "Updating", "edit": "Editing",
    "delete": "Deleting", "remove": "Removing", "move": "Moving", "copy": "Copying", "star": "Starring",
    "merge": "Merging", "close": "Closing", "open": "Opening", "reply": "Replying to", "draft": "Drafting",
    "insert": "Inserting", "patch": "Updating", "upload": "Uploading", "download": "Downloading",
    "check": "Checking", "read": "Reading", "query": "Querying", "retrieve": "Retrieving",
    "run": "Running", "trigger": "Triggering", "comment": "Commenting on", "assign": "Assigning",
    "invite": "Inviting", "schedule": "Scheduling", "cancel": "Cancelling", "set": "Setting",
    "fork": "Forking", "lock": "Locking", "unlock": "Unlocking", "approve": "Approving",
}
_SKIP = {"a", "an", "the", "for", "of", "to", "by", "with", "from", "in", "on"}
_MAX_WORDS = 4

# Toolkit slugs that contain an underscore; the slug's first word is the toolkit otherwise.
_MULTIWORD_TOOLKITS = ("microsoft_teams", "browser_tool", "browserbase_tool")


def describe_call(call: ToolCall) -> str:
    """A short present-participle sentence without the trailing ellipsis."""
    if call.name == SEARCH_TOOLS:
        return "Looking for the right tool"
    if call.name == CONNECT_APP:
        app = call.arguments.get("toolkit") or call.arguments.get("app")
        return f"Preparing a link to connect {display_name(str(app))}" if app else "Preparing a connect link"
    return describe_slug(call.name)


def describe_slug(slug: str) -> str:
    lowered = slug.lower()
    toolkit = next((t for t in _MULTIWORD_TOOLKITS if lowered.startswith(t + "_")), lowered.split("_", 1)[0])
    words = [w for w in lowered[len(toolkit):].split("_") if w]
    app = display_name(toolkit)
    if not words:
        return f"Using {app}"
    verb = _VERBS.get(words[0])
    if verb is None:
        return f"Using {app}: {' '.join(words[:_MAX_WORDS + 1])}"
    rest = [w for w in words[1:] if w not in _SKIP][:_MAX_WORDS]
    if not rest:
        return f"{verb} in {app}"
    return f"{verb} the {app} {' '.join(rest)}"
