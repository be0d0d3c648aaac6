"""The values that flow between the Slack layer, the agent loop and the integrations layer.

These are the contracts between modules: a Turn goes in, an Outcome comes out, and tool calls
in between produce ToolResults (or a value saying a connection or an approval is needed) that
the Slack layer renders. Keep them plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

JSON = dict[str, Any]
ToolDef = dict[str, Any]  # an OpenAI-format tool: {"type": "function", "function": {...}}


@dataclass(frozen=True)
class Turn:
    """One person's message that Lucy must answer."""

    workspace: str  # 'T…', or 'E…:T…' on Enterprise Grid; also the Composio user_id
    user: str  # Slack user id of the person who wrote
    channel: str
    thread_ts: str  # the thread Lucy answers in (the message's own ts for a new thread)
    text: str
    ts: str = ""  # the message's own ts
    user_name: str | None = None
    user_tz: str | None = None  # IANA name, e.g. 'Europe/Oslo'
    workspace_name: str | None = None
    turn_id: str = ""


# --- tool calls ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: JSON


@dataclass(frozen=True)
class ToolResult:
    """What the model reads back for one tool call. ``content`` is a JSON-serialisable value."""

    call_id: str
    name: str
    content: Any
    ok: bool = True


@dataclass(frozen=True)
class NeedsConnection:
    """The tool belongs to an app this workspace has not connected; show a Connect button."""

    toolkit: str
    connect_url: str | None
    call_id: str = ""
    tool: str = ""


@dataclass(frozen=True)
class NeedsApproval:
    """A person must approve this call before it runs."""

    approval_id: str
    tool: str
    arguments: JSON
    reason: str
    call_id: str = ""
    risk: Literal["write", "destructive"] = "destructive"


ExecuteResult = ToolResult | NeedsConnection | NeedsApproval


# --- outcomes of a turn --------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""


@dataclass(frozen=True)
class Answer:
    text: str
    usage: Usage = field(default_factory=Usage)
    tool_calls: int = 0


@dataclass(frozen=True)
class ConnectionRequired:
    """The turn stopped because an app must be connected first; it resumes after the callback."""

    toolkit: str
    connect_url: str | None
    text: str
    pending_id: str | None = None


@dataclass(frozen=True)
class ApprovalRequired:
    """The turn stopped at a call that needs approval; it resumes after the decision."""

    approval: NeedsApproval
    text: str
    # The agent loop's state (plain JSON: this turn's messages, tools, step, usage) so the
    # turn can continue after the decision (LucyAgent.resume_turn).
    state: JSON | None = None


@dataclass(frozen=True)
class Failure:
    """The turn could not finish; ``user_message`` is one plain sentence for the person."""

    user_message: str
    detail: str = ""


Outcome = Answer | ConnectionRequired | ApprovalRequired | Failure


# --- ports ---------------------------------------------------------------------------------


class Toolset(Protocol):
    """Which tool definitions the model gets for this turn of this workspace.

    ``pinned`` names tools called earlier in the thread: they stay available in follow-ups.
    """

    async def tools_for_turn(
        self, workspace: str, request: str, history_text: str = "", *, pinned: Sequence[str] = ()
    ) -> list[ToolDef]: ...


class ToolExecutor(Protocol):
    """Runs one tool call for a workspace: validate → policy → execute → audit."""

    async def execute(self, turn: Turn, call: ToolCall) -> ExecuteResult: ...


class ProgressSink(Protocol):
    """Where the loop reports progress ("Creating the GitHub issue…") and streamed text."""

    async def tool_started(self, call: ToolCall) -> None: ...

    async def tool_finished(self, call: ToolCall, result: ExecuteResult) -> None: ...

    async def text_delta(self, text: str) -> None: ...


# Meta-tools the model always gets next to the selected app tools. The agent loop handles
# SEARCH_TOOLS itself (it widens the turn's tool list through ``ToolCatalog.search``); the
# worker handles CONNECT_APP (it answers with NeedsConnection carrying the connect link).
SEARCH_TOOLS = "search_tools"
CONNECT_APP = "connect_app"


class ToolCatalog(Protocol):
    """Mid-turn tool search: more tool definitions for this workspace, in the model's words."""

    async def search(self, workspace: str, query: str, exclude: frozenset[str] = frozenset()) -> list[ToolDef]: ...


class Agent(Protocol):
    """The agent loop as the Slack layer and `lucy chat` see it."""

    async def run_turn(self, turn: Turn, progress: ProgressSink) -> Outcome: ...

    async def continue_turn(self, turn: Turn, note: str, progress: ProgressSink) -> Outcome:
        """Go on with ``turn``, whose message is already in the thread, after ``note`` from Lucy
        (e.g. "GitHub is now connected"); the message is not stored a second time."""
        ...


@dataclass(frozen=True)
class ToolkitConnection:
    toolkit: str  # Composio toolkit slug, e.g. 'github'
    status: Literal["active", "inactive"]
    connected_account_id: str | None = None


class ConnectedApps(Protocol):
    """The toolkits a workspace has connected, for the prompt ("Connected apps: GitHub, Gmail")."""

    async def active_toolkits(self, workspace: str) -> list[str]: ...


class Connections(Protocol):
    """A workspace's app connections, as `/lucy-connect` and the OAuth callback need them."""

    async def list_connections(self, workspace: str) -> list[ToolkitConnection]: ...

    async def connect_link(self, workspace: str, toolkit: str) -> str:
        """The Composio OAuth URL that connects ``toolkit`` for ``workspace``."""
        ...

    async def confirm_connection(self, workspace: str, connected_account_id: str) -> ToolkitConnection | None:
        """Ask Composio (never trust query parameters) whether this account is ACTIVE and belongs to
        ``workspace``; on success update the registry/database and return it, else None."""
        ...

    def known_toolkits(self) -> list[str]:
        """Toolkit slugs that can be connected (for loose matching of `/lucy-connect gh`)."""
        ...

    async def forget_workspace(self, workspace: str) -> None:
        """Drop what is cached of ``workspace``'s connections (the app was uninstalled)."""
        ...
