"""After a person decides: run the approved call once, tell the model about a denial or an
expiry, and hand the waiting turn back to whoever continues it (the Slack layer, `lucy chat`).

Nothing here knows Slack. The flow, for one turn that stopped at risky calls:

1. :meth:`ApprovalRunner.hold` — the turn stopped (``ApprovalRequired``): its state goes into the
   requests in PostgreSQL, grouped, so any instance (or this one after a restart) can continue it.
2. :meth:`ApprovalRunner.decide` — a click: only the requester or an admin, once (compare-and-set).
3. :meth:`ApprovalRunner.settle` — the one caller whose decision changed the request runs the call
   (approve) or records why it did not (deny, expiry), then, when every request of the turn has an
   answer, exactly one caller gets a :class:`Resume` to continue the turn with.
4. :meth:`ApprovalRunner.sweep` — expiry and requests orphaned by a crash, from a periodic task.

:func:`install_guards` wires the approval policy and the rate limiter into the worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lucy.approvals import INTERRUPTED, Approval, ApprovalStore, Decision
from lucy.core.types import (
    JSON,
    ApprovalRequired,
    ExecuteResult,
    NeedsApproval,
    NeedsConnection,
    ToolCall,
    ToolResult,
    Turn,
)
from lucy.errors import LucyError
from lucy.integrations.policy import ApprovalGate, ApprovalPolicy, HistoryLoader, WorkerPolicy
from lucy.log import get_logger
from lucy.ratelimit import RateLimiter

if TYPE_CHECKING:
    from lucy.config import Settings
    from lucy.integrations.worker import Integrations

log = get_logger("lucy.approvals")

Ending = Literal["done", "failed", "denied", "expired", "interrupted"]


class ApprovedExecutor(Protocol):
    """What the runner needs of the worker (IntegrationWorker has it)."""

    async def execute_approved(
        self, turn: Turn, call: ToolCall, *, decided_by: str, approval_id: str | None = None
    ) -> ExecuteResult: ...


@dataclass(frozen=True)
class Resume:
    """Continue this turn (``LucyAgent.resume_turn``) with one result per call it waited for."""

    turn: Turn
    state: JSON
    results: list[ToolResult]


@dataclass(frozen=True)
class Settled:
    """A request that reached its end: what to show under it, and maybe the turn to continue."""

    approval: Approval  # as it ended: done, failed, denied or expired
    error: str | None = None  # why an approved call failed (shown under the request)
    resume: Resume | None = None


def denied_note(approval: Approval) -> str:
    who = f"<@{approval.decided_by}>" if approval.decided_by else "The person"
    return f"{who} denied this, so it did not run. Do not try it again unless they ask."


def expired_note(approval: Approval) -> str:
    return "Nobody approved this in time, so it did not run. The person can ask again if they still want it."


class ApprovalRunner:
    """Decisions → executions → resumed turns, over an :class:`ApprovalStore`."""

    def __init__(
        self,
        store: ApprovalStore,
        gate: ApprovalGate,
        worker: ApprovedExecutor,
        *,
        orphan_after: timedelta = timedelta(minutes=5),
    ) -> None:
        self.store = store
        self.gate = gate
        self._worker = worker
        self._orphan_after = orphan_after

    # --- 1. the turn stopped -----------------------------------------------------------------

    async def hold(self, turn: Turn, outcome: ApprovalRequired) -> list[Approval]:
        """Store what the turn needs to continue in its requests; returns them (to show), first first."""
        leader = await self.store.get(outcome.approval.approval_id, workspace=turn.workspace)
        if leader is None:
            return []
        turn = replace(turn, turn_id=leader.turn_id or turn.turn_id)
        # Everything the turn read before it stopped, also by calls that finished after the check.
        sources = list(dict.fromkeys([*map(str, leader.state.get("tainted_by") or []),
                                      *self.gate.taint.sources(turn)]))
        state = outcome.state or {}
        return await self.store.hold(
            leader.id, call_ids=[str(c) for c in state.get("pending") or []], extra={"tainted_by": sources},
            leader_extra={"turn": state, "turn_info": asdict(turn)},
        )

    # --- 2. a click --------------------------------------------------------------------------

    async def decide(
        self, approval_id: str, decider: str, approve: bool, *, workspace: str,
        is_admin: Callable[[], Awaitable[bool]],
    ) -> Decision:
        """Approve or deny for ``decider``; ``is_admin`` is asked only when they are not the requester."""
        current = await self.store.get(approval_id, workspace=workspace)
        admin = current is not None and decider != current.requester and await is_admin()
        return await self.store.decide(approval_id, decider, approve, admin, workspace=workspace)

    # --- 3. carry it out ---------------------------------------------------------------------

    async def settle(self, decision: Decision) -> Settled | None:
        """Run an approved call, or record a denial or expiry. None when the decision changed nothing."""
        approval = decision.approval
        if not decision.changed or approval is None:
            return None
        if decision.executes:
            return await self._run(approval)
        return await self._close(approval, "denied" if decision.outcome == "denied" else "expired")

    async def _run(self, approval: Approval) -> Settled:
        turn = turn_of(approval)
        self.gate.restore(turn, approval.state)
        call = ToolCall(str(approval.state.get("call_id") or ""), str(approval.state.get("call_name") or approval.tool),
                        dict(approval.arguments))
        try:
            result = await self._worker.execute_approved(turn, call, decided_by=approval.decided_by or "",
                                                         approval_id=approval.id)
        except LucyError as exc:  # e.g. the database: the call did not start
            log.warning("approved call could not run", approval=approval.id, error=str(exc))
            result = ToolResult(call.id, call.name, {"error": exc.user_message}, ok=False)
        ok, content = _read(result)
        if not await self.store.finish(approval.id, ok=ok):
            log.warning("approved call finished after it was given up on", approval=approval.id)
        ending: Literal["done", "failed"] = "done" if ok else "failed"
        await self.store.record_result(approval.id, {"ending": ending, "ok": ok, "content": content})
        ended = replace(approval, status=ending)
        error = None if ok else _error_text(content)
        return Settled(ended, error, await self._resume(ended))

    async def _close(self, approval: Approval, ending: Ending) -> Settled:
        note = {"denied": denied_note, "expired": expired_note}.get(ending, lambda _a: INTERRUPTED)(approval)
        await self.store.record_result(approval.id, {"ending": ending, "ok": False, "content": {"error": note}})
        return Settled(approval, INTERRUPTED if ending == "interrupted" else None, await self._resume(approval))

    async def _resume(self, approval: Approval) -> Resume | None:
        group = await self.store.claim_resume(approval)
        if not group:
            return None
        leader = group[0]
        state, info = leader.state.get("turn"), leader.state.get("turn_info")
        results = [_result_of(a) for a in group]
        endings = {str((a.state.get("result") or {}).get("ending")) for a in group}
        if not isinstance(state, dict) or endings == {"expired"}:
            # Nothing ran and nobody decided: the request's message says it expired; no new answer.
            return None
        turn = turn_from_info(info) if isinstance(info, Mapping) else turn_of(leader)
        return Resume(turn, state, results)

    # --- 4. the sweeper ----------------------------------------------------------------------

    async def sweep(self) -> list[Settled]:
        """Expire requests past their time and give up on approved calls a crash orphaned."""
        settled = [await self._close(a, "expired") for a in await self.store.expire_due()]
        for approval in await self.store.fail_interrupted(self._orphan_after):
            log.warning("approved call was interrupted", approval=approval.id, tool=approval.tool)
            settled.append(await self._close(approval, "interrupted"))
        return settled


# --- helpers ---------------------------------------------------------------------------------


def turn_of(approval: Approval) -> Turn:
    """The turn a request belongs to (the one stored when it was held, else rebuilt from the row)."""
    info = approval.state.get("turn_info")
    if isinstance(info, Mapping):
        return turn_from_info(info)
    return Turn(workspace=approval.workspace, user=approval.requester, channel=approval.channel,
                thread_ts=approval.thread_ts, text="", turn_id=approval.turn_id or "")


_TURN_FIELDS = frozenset(f.name for f in fields(Turn))


def turn_from_info(info: Mapping[str, Any]) -> Turn:
    return Turn(**{k: v for k, v in info.items() if k in _TURN_FIELDS})


def _read(result: ExecuteResult) -> tuple[bool, Any]:
    if isinstance(result, ToolResult):
        return result.ok, result.content
    if isinstance(result, NeedsConnection):
        return False, {"error": f"{result.toolkit} is not connected any more, so it did not run. "
                                f"Reconnect it with /lucy-connect {result.toolkit}."}
    assert isinstance(result, NeedsApproval)  # execute_approved never asks again
    return False, {"error": "It still needs approval, so it did not run."}


def _error_text(content: Any) -> str:
    if isinstance(content, Mapping) and isinstance(content.get("error"), str):
        return str(content["error"])
    return "The app reported a failure."


def _result_of(approval: Approval) -> ToolResult:
    stored = approval.state.get("result") or {}
    return ToolResult(str(approval.state.get("call_id") or ""), str(approval.state.get("call_name") or approval.tool),
                      stored.get("content"), ok=bool(stored.get("ok")))


# --- wiring ----------------------------------------------------------------------------------


@dataclass
class Guards:
    """One process's approval policy, requests, gate, runner and rate limiter."""

    policy: ApprovalPolicy
    store: ApprovalStore
    gate: ApprovalGate
    runner: ApprovalRunner
    limiter: RateLimiter
    audit_retention_days: int = 90
    owns_limiter: bool = True  # False when the caller passed its own (and closes it)

    async def aclose(self) -> None:
        if self.owns_limiter:
            await self.limiter.close()


def install_guards(
    settings: Settings, pool: Any, integrations: Integrations, *, history: HistoryLoader | None = None,
    limiter: RateLimiter | None = None,
) -> Guards:
    """Put the approval policy and the tool rate limit in front of ``integrations.worker``.

    ``history`` loads a turn's thread so earlier tool output taints it too (``memory.load``).
    """
    store = ApprovalStore(pool, ttl=timedelta(minutes=settings.approval_ttl_minutes))
    policy = ApprovalPolicy(pool)
    gate = ApprovalGate(policy, store, history=history)
    owns_limiter = limiter is None
    limiter = limiter or RateLimiter.from_settings(settings)
    integrations.worker.policy = WorkerPolicy(gate, raw_tools=integrations.schemas.raw_tool, limiter=limiter)
    # An approved call takes at most the tool timeout; well past that, nobody is running it.
    orphan_after = timedelta(seconds=2 * settings.tool_timeout_seconds + 60)
    runner = ApprovalRunner(store, gate, integrations.worker, orphan_after=orphan_after)
    return Guards(policy, store, gate, runner, limiter, settings.audit_retention_days, owns_limiter)


def history_of(load: Callable[..., Awaitable[Sequence[Mapping[str, Any]]]]) -> HistoryLoader:
    """A :data:`HistoryLoader` over a thread memory's ``load(workspace, channel, thread_ts)``."""

    async def loader(turn: Turn) -> Sequence[Mapping[str, Any]]:
        return await load(turn.workspace, turn.channel, turn.thread_ts)

    return loader
