"""Runs the model's tool calls for one workspace: resolve → connection → validate → policy →
execute → audit.

:class:`IntegrationWorker` implements :class:`lucy.core.types.ToolExecutor`. What the model gets
back is always a value it can read: ``ToolResult(ok=False, content={"error": "..."})`` for an
unknown tool, bad arguments, an app's refusal, a timeout or an outage, or a
:class:`~lucy.core.types.NeedsConnection` (with the Composio connect link) when the tool's app
is not connected — also the answer to the ``connect_app`` meta-tool. Nothing reaches Composio
before the arguments pass the tool's JSON schema. Every attempt leaves one ``audit_log`` row
(arguments redacted).

Approval (issue 7) plugs in as a :class:`CallPolicy`: ``before_execute`` sees the validated call
and may answer ``Allow``, ``Deny`` or a ``NeedsApproval``; ``after_execute`` sees every result
(e.g. to notice untrusted text). :meth:`IntegrationWorker.execute_approved` runs a call a person
approved without asking the policy again. The default policy allows everything.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from lucy import audit
from lucy.core.types import (
    CONNECT_APP,
    JSON,
    ExecuteResult,
    NeedsApproval,
    NeedsConnection,
    ToolCall,
    ToolkitConnection,
    ToolResult,
    Turn,
)
from lucy.errors import (
    ConnectionMissingError,
    IntegrationError,
    IntegrationTimeoutError,
    IntegrationUnavailableError,
)
from lucy.integrations.caching import database_errors
from lucy.log import get_logger

if TYPE_CHECKING:
    from lucy.cache import Cache
    from lucy.config import Settings
    from lucy.core.llm import LLM
    from lucy.integrations.composio_client import ComposioAPI, ComposioClient
    from lucy.integrations.connections import ComposioConnections
    from lucy.integrations.registry import IntegrationRegistry
    from lucy.integrations.schemas import SanitizedTool, ToolSchemaCache
    from lucy.integrations.toolset import Selector, WorkspaceToolset
    from lucy.web.metrics import Metrics

log = get_logger("lucy.integrations.worker")

MAX_VALIDATION_ERRORS = 5


# --- the approval seam ---------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedCall:
    """A call that resolved to a connected tool and passed its schema; about to run."""

    turn: Turn
    call: ToolCall
    tool: SanitizedTool
    arguments: JSON  # as the model sent them (model-facing argument names)
    connection: ToolkitConnection


@dataclass(frozen=True)
class Allow:
    decision: str = "auto"  # written to audit_log.decision


@dataclass(frozen=True)
class Deny:
    reason: str  # one sentence; the model reads it and tells the person
    status: str = "denied"  # written to audit_log.status ("rate_limited" for a reached limit)


Decision = Allow | Deny | NeedsApproval


class CallPolicy(Protocol):
    async def before_execute(self, prepared: PreparedCall) -> Decision: ...

    async def after_execute(self, prepared: PreparedCall, result: ToolResult) -> None: ...


class AllowAll:
    """The default policy: every validated call runs."""

    async def before_execute(self, prepared: PreparedCall) -> Decision:
        return Allow()

    async def after_execute(self, prepared: PreparedCall, result: ToolResult) -> None:
        return None


# --- audit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    workspace: str
    slack_user: str | None
    tool: str
    arguments: Any
    status: str  # executed | failed | denied | needs_connection | needs_approval | invalid | timeout | rate_limited
    decision: str | None = None
    decided_by: str | None = None
    error: str | None = None
    duration_ms: float | None = None
    turn_id: str | None = None
    approval_id: str | None = None


class AuditLog:
    """Writes ``audit_log`` rows. A database failure is logged, never raised: the call itself
    already happened (or did not), and the person must still get their answer."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def record(self, entry: AuditEntry) -> None:
        try:
            await audit.record(
                self._pool, workspace=entry.workspace, user=entry.slack_user, tool=entry.tool,
                arguments=entry.arguments, status=cast("audit.AuditStatus", entry.status),
                decision=cast("audit.AuditDecision | None", entry.decision), decided_by=entry.decided_by,
                error=entry.error, duration_ms=entry.duration_ms, turn_id=entry.turn_id,
                approval_id=entry.approval_id,
            )
        except database_errors() as exc:
            log.error("audit_write_failed", workspace=entry.workspace, tool=entry.tool, status=entry.status,
                      error=str(exc))


# --- output budget -------------------------------------------------------------------------

_SHRINK_STEPS = ((50, 2000), (20, 1000), (10, 400), (5, 200), (3, 100), (1, 60), (0, 30))


def _dumps(value: Any) -> str:
    # Measured as the agent loop will most likely send it (json.dumps defaults: ", " and ": "),
    # which is never shorter than the compact form.
    return json.dumps(value, ensure_ascii=False, default=str)


def _shrink(value: Any, items: int, chars: int, depth: int = 0) -> Any:
    if depth > 24:
        return "…"
    if isinstance(value, str):
        return value if len(value) <= chars else value[:chars] + "…[cut]"
    if isinstance(value, list):
        return [_shrink(v, items, chars, depth + 1) for v in value[:items]]
    if isinstance(value, dict):
        keep = list(value.items())[: max(items * 4, 20)]
        return {str(k): _shrink(v, items, chars, depth + 1) for k, v in keep}
    return value


def fit_output(data: Any, max_chars: int) -> Any:
    """``data`` if its JSON fits ``max_chars``, else a smaller JSON value that does, saying so.

    Lists keep their first items and long strings their beginning, so what remains is still
    well-formed data the model can use; the note says it was cut and how to get less.
    """
    text = _dumps(data)
    if len(text) <= max_chars:
        return data
    note = (
        f"Output cut from {len(text):,} to fit {max_chars:,} characters: lists keep their first items and long "
        "texts their beginning. If you need what was left out, ask the tool for less (fewer results per page, "
        "a narrower query, specific fields)."
    )
    for items, chars in _SHRINK_STEPS:
        candidate = {"truncated": True, "note": note, "data": _shrink(data, items, chars)}
        if len(_dumps(candidate)) <= max_chars:
            return candidate
    preview = text[: max(0, max_chars - len(note) - 80)]
    while preview and len(_dumps({"truncated": True, "note": note, "preview": preview})) > max_chars:
        overflow = len(_dumps({"truncated": True, "note": note, "preview": preview})) - max_chars
        preview = preview[: max(0, len(preview) - max(overflow, 16))]  # escaping makes some chars count double
    return {"truncated": True, "note": note, "preview": preview}


# --- the worker ----------------------------------------------------------------------------


def _error(message: str, **extra: Any) -> JSON:
    return {"error": message, **extra}


class IntegrationWorker:
    """Implements :class:`lucy.core.types.ToolExecutor` over Composio.

    Args:
        client: Composio (every execute carries ``user_id`` = the turn's workspace).
        registry: connected toolkits per workspace.
        schemas: tool schemas (resolution, validation, version).
        connections: connect links and app names (for ``connect_app`` and NeedsConnection).
        audit: where attempts are recorded.
        policy: the approval seam; default allows everything.
        timeout: seconds one tool call may take (``LUCY_TOOL_TIMEOUT_SECONDS``).
        output_max_chars: budget of one result's JSON (``LUCY_TOOL_OUTPUT_MAX_CHARS``).
    """

    def __init__(
        self,
        client: ComposioAPI,
        registry: IntegrationRegistry,
        schemas: ToolSchemaCache,
        connections: ComposioConnections,
        audit: AuditLog,
        *,
        policy: CallPolicy | None = None,
        timeout: float = 60.0,
        output_max_chars: int = 20000,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self._registry = registry
        self._schemas = schemas
        self._connections = connections
        self._audit = audit
        self.policy: CallPolicy = policy or AllowAll()
        self._timeout = timeout
        self._output_max_chars = output_max_chars
        self._metrics = metrics

    # --- entry points ------------------------------------------------------------------------

    async def execute(self, turn: Turn, call: ToolCall) -> ExecuteResult:
        """The :class:`~lucy.core.types.ToolExecutor` port."""
        return await self._handle(turn, call, approved_by=None)

    async def execute_approved(
        self, turn: Turn, call: ToolCall, *, decided_by: str, approval_id: str | None = None
    ) -> ExecuteResult:
        """Run a call a person approved: validated and audited again, the policy not asked."""
        return await self._handle(turn, call, approved_by=decided_by, approval_id=approval_id)

    async def run(
        self, workspace: str, slack_user: str, tool: str, arguments: JSON, *, call_id: str = "", turn_id: str = ""
    ) -> ExecuteResult:
        """The same as :meth:`execute`, for callers without a Turn (scripts, tests, `lucy chat`)."""
        turn = Turn(workspace=workspace, user=slack_user, channel="", thread_ts="", text="", turn_id=turn_id)
        return await self.execute(turn, ToolCall(id=call_id, name=tool, arguments=arguments))

    # --- one call ------------------------------------------------------------------------------

    async def _handle(
        self, turn: Turn, call: ToolCall, *, approved_by: str | None, approval_id: str | None = None
    ) -> ExecuteResult:
        audit = _Audit(self._audit, turn, call, time.perf_counter(), self._metrics)
        audit.approval_id = approval_id
        if call.name == CONNECT_APP:
            return await self._connect_app(turn, call, audit)
        try:
            connected = await self._registry.active(turn.workspace)
            hints = {*connected.toolkits, *self._connections.known_toolkits()}
            tool = await self._schemas.resolve(call.name, hints)
        except IntegrationError as exc:
            return await audit.done("failed", self._failed(call, exc.user_message), error=str(exc))
        if tool is None:
            message = f"There is no tool called {call.name}. Use only the tools you were given, or search_tools."
            return await audit.done("invalid", self._invalid(call, message), error="unknown tool")
        audit.tool = tool.slug
        connection = connected.connection(tool.toolkit)
        if connection is None:
            return await audit.done("needs_connection", await self._needs_connection(turn, call, tool.toolkit))
        return await self._validate_and_run(PreparedCall(turn, call, tool, dict(call.arguments), connection),
                                            audit, approved_by)

    async def _validate_and_run(self, prepared: PreparedCall, audit: _Audit, approved_by: str | None) -> ExecuteResult:
        problems = self._validate(prepared.tool, prepared.arguments)
        if problems:
            result = self._invalid_arguments(prepared.call, prepared.tool, problems)
            return await audit.done("invalid", result, error="; ".join(problems))
        return await self._decide_and_run(prepared, audit, approved_by)

    async def _decide_and_run(self, prepared: PreparedCall, audit: _Audit, approved_by: str | None) -> ExecuteResult:
        decision_name = "approved"
        if approved_by is None:
            decision = await self.policy.before_execute(prepared)
            if isinstance(decision, NeedsApproval):
                audit.approval_id = decision.approval_id
                return await audit.done("needs_approval", decision)
            if isinstance(decision, Deny):
                result = ToolResult(prepared.call.id, prepared.call.name, _error(decision.reason), ok=False)
                verdict = "denied" if decision.status == "denied" else None
                return await audit.done(decision.status, result, decision=verdict, error=decision.reason)
            decision_name = decision.decision
        outcome, status, error = await self._run(prepared)
        if isinstance(outcome, ToolResult):
            await self.policy.after_execute(prepared, outcome)
        return await audit.done(status, outcome, decision=decision_name, decided_by=approved_by, error=error)

    async def _run(self, prepared: PreparedCall) -> tuple[ToolResult | NeedsConnection, str, str | None]:
        """Execute once; map every outcome to what the model reads, an audit status and an error."""
        tool, call, turn = prepared.tool, prepared.call, prepared.turn
        version = self._client.version_for(tool.toolkit) or tool.version
        try:
            # The client enforces the limit on the HTTP exchange; this one covers everything else.
            async with asyncio.timeout(self._timeout + 1.0):
                execution = await self._client.execute(
                    tool.slug,
                    tool.to_composio_arguments(prepared.arguments),
                    user_id=turn.workspace,
                    version=version,
                    connected_account_id=prepared.connection.connected_account_id,
                    time_limit=self._timeout,
                )
        except (TimeoutError, IntegrationTimeoutError) as exc:
            message = (
                f"{tool.name} did not answer within {self._timeout:g} seconds, so I stopped waiting. It may still "
                "have taken effect: check before trying again."
            )
            return self._failed(call, message), "timeout", str(exc) or "timeout"
        except ConnectionMissingError as exc:
            # Composio lost the account since our last sync (revoked or expired): resync, ask to reconnect.
            await self._registry.invalidate(turn.workspace)
            return await self._needs_connection(turn, call, tool.toolkit), "needs_connection", str(exc)
        except IntegrationError as exc:  # unavailable, rate-limited, auth, tool refused or unknown
            return self._failed(call, self._outage_sentence(tool, exc)), "failed", str(exc)
        if not execution.successful:
            message = execution.error or "The app reported a failure without saying why."
            content = _error(f"{tool.name} failed: {message}")
            if execution.data:
                content["data"] = fit_output(execution.data, self._output_max_chars // 2)
            return ToolResult(call.id, call.name, content, ok=False), "failed", message
        data = execution.data if execution.data is not None else {}
        return ToolResult(call.id, call.name, fit_output(data, self._output_max_chars)), "executed", None

    @staticmethod
    def _outage_sentence(tool: SanitizedTool, exc: IntegrationError) -> str:
        if isinstance(exc, IntegrationUnavailableError):
            return (
                f"{exc.user_message} {tool.name} may not have run; if it changes something, check before "
                "trying again."
            )
        return exc.user_message

    # --- pieces ----------------------------------------------------------------------------

    def _validate(self, tool: SanitizedTool, arguments: JSON) -> list[str]:
        validator = self._schemas.validator(tool)
        errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.path)), e.message))
        return [
            f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors[:MAX_VALIDATION_ERRORS]
        ]

    def _invalid_arguments(self, call: ToolCall, tool: SanitizedTool, problems: list[str]) -> ToolResult:
        params = tool.parameters
        content = _error(
            f"The arguments for {tool.name} are not valid, so it did not run. Fix them and call it again.",
            problems=problems,
            required=list(params.get("required", [])),
            allowed=sorted(params.get("properties", {})),
        )
        return ToolResult(call.id, call.name, content, ok=False)

    @staticmethod
    def _invalid(call: ToolCall, message: str) -> ToolResult:
        return ToolResult(call.id, call.name, _error(message), ok=False)

    @staticmethod
    def _failed(call: ToolCall, message: str) -> ToolResult:
        return ToolResult(call.id, call.name, _error(message), ok=False)

    async def _needs_connection(self, turn: Turn, call: ToolCall, toolkit: str) -> NeedsConnection:
        url: str | None
        try:
            url = await self._connections.connect_link(turn.workspace, toolkit)
        except IntegrationError as exc:
            log.warning("connect_link_failed", workspace=turn.workspace, toolkit=toolkit, error=str(exc))
            url = None
        return NeedsConnection(toolkit=toolkit, connect_url=url, call_id=call.id, tool=call.name)

    async def _connect_app(self, turn: Turn, call: ToolCall, audit: _Audit) -> ExecuteResult:
        app = call.arguments.get("app") if isinstance(call.arguments, Mapping) else None
        if not isinstance(app, str) or not app.strip():
            return await audit.done("invalid", self._invalid(call, "connect_app needs 'app': the app's toolkit slug."))
        try:
            toolkit = await self._connections.resolve_toolkit(app)
            connected = await self._registry.active_toolkits(turn.workspace)
        except IntegrationError as exc:
            return await audit.done("failed", self._failed(call, exc.user_message), error=str(exc))
        if toolkit is None:
            known = ", ".join(self._connections.known_toolkits()[:30])
            hint = f" Apps I know include: {known}." if known else ""
            return await audit.done("invalid", self._invalid(call, f"There is no app called {app!r}.{hint}"))
        audit.arguments = {"app": toolkit}
        if toolkit in connected:
            content = {"connected": True, "app": toolkit,
                       "message": f"{toolkit} is already connected for this workspace; use its tools."}
            return await audit.done("executed", ToolResult(call.id, call.name, content))
        return await audit.done("needs_connection", await self._needs_connection(turn, call, toolkit))


class _Audit:
    """Collects what one attempt's audit row needs, then writes it when the result is known."""

    def __init__(self, log_: AuditLog, turn: Turn, call: ToolCall, started: float, metrics: Metrics | None) -> None:
        self._log = log_
        self._metrics = metrics
        self._turn = turn
        self._started = started
        self.tool = call.name
        self.arguments: Any = call.arguments
        self.approval_id: str | None = None

    async def done(
        self,
        status: str,
        result: ExecuteResult,
        *,
        decision: str | None = None,
        decided_by: str | None = None,
        error: str | None = None,
    ) -> ExecuteResult:
        duration_ms = (time.perf_counter() - self._started) * 1000
        await self._log.record(AuditEntry(
            workspace=self._turn.workspace,
            slack_user=self._turn.user or None,
            tool=self.tool,
            arguments=self.arguments,
            status=status,
            decision=decision,
            decided_by=decided_by,
            error=error,
            duration_ms=round(duration_ms, 3),
            turn_id=self._turn.turn_id,
            approval_id=self.approval_id,
        ))
        log.info("tool_call", workspace=self._turn.workspace, tool=self.tool, status=status,
                 duration_ms=round(duration_ms, 1))
        if self._metrics is not None:
            self._metrics.tool_executions.labels(status=status).inc()
        return result


# --- wiring --------------------------------------------------------------------------------


@dataclass
class Integrations:
    """The integrations layer, built once per process by :func:`build_integrations`."""

    client: ComposioClient
    registry: IntegrationRegistry
    schemas: ToolSchemaCache
    connections: ComposioConnections
    toolset: WorkspaceToolset
    worker: IntegrationWorker
    audit: AuditLog | None = None

    async def aclose(self) -> None:
        await self.toolset.aclose()
        await self.client.aclose()


def build_integrations(
    settings: Settings,
    pool: Any,
    cache: Cache,
    *,
    client: ComposioClient | None = None,
    selector: Selector | None = None,
    policy: CallPolicy | None = None,
    metrics: Metrics | None = None,
    audit_pool: Any = None,
    llm: LLM | None = None,
) -> Integrations:
    """Wire client → registry → schemas → connections → toolset → worker from settings.

    ``client`` defaults to :func:`~lucy.integrations.composio_client.client_from_settings`
    (which imports the SDK: build at start-up, or in ``asyncio.to_thread``). ``audit_pool``
    (default ``pool``) takes the audit rows: ``serve`` passes its records pool. With ``llm`` (and
    ``LUCY_PHRASEBOOK_AUTO``), toolkits without a phrasebook get one written in the background.
    """
    from lucy.integrations.composio_client import client_from_settings
    from lucy.integrations.connections import ComposioConnections
    from lucy.integrations.registry import IntegrationRegistry
    from lucy.integrations.schemas import ToolSchemaCache
    from lucy.integrations.toolset import WorkspaceToolset

    client = client or client_from_settings(settings)
    registry = IntegrationRegistry(client, pool, cache, ttl=settings.cache_ttl_seconds, metrics=metrics)
    schemas = ToolSchemaCache(client, cache, ttl=settings.tool_schema_ttl_seconds)
    connections = ComposioConnections(client, registry, public_url=settings.public_url)
    if selector is None:
        from lucy.integrations.selection import selector_from_settings

        selector = selector_from_settings(settings)  # every turn gets the best few tools, not 128
    writer = None
    if llm is not None and settings.phrasebook_auto:
        from lucy.integrations.phrasebook import local_dir
        from lucy.integrations.phrasebook_writer import PhrasebookWriter

        writer = PhrasebookWriter(llm, local_dir(settings.data_dir), settings.llm_model)
    toolset = WorkspaceToolset(registry, schemas, selector=selector, connectable=connections.known_toolkits,
                               phrasebook_writer=writer)
    audit = AuditLog(audit_pool or pool)
    worker = IntegrationWorker(
        client, registry, schemas, connections, audit, policy=policy, timeout=settings.tool_timeout_seconds,
        output_max_chars=settings.tool_output_max_chars, metrics=metrics,
    )
    return Integrations(client, registry, schemas, connections, toolset, worker, audit)


if TYPE_CHECKING:
    from lucy.core.types import Connections, ToolCatalog, ToolExecutor, Toolset

    def _ports(
        worker: IntegrationWorker, toolset: WorkspaceToolset, connections: ComposioConnections, client: ComposioClient
    ) -> tuple[ToolExecutor, Toolset, ToolCatalog, Connections, ComposioAPI]:
        """mypy checks here that every adapter satisfies the Protocol it is used as."""
        return worker, toolset, toolset, connections, client
