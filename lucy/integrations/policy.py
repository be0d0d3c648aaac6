"""Which tool calls may run on their own, which need a person's approval, and which never run.

Three parts, each usable alone:

* :func:`classify` puts every Composio tool in one of three risk classes: ``read`` (changes
  nothing), ``write`` (changes something that can be changed back) or ``destructive`` (cannot be
  undone, or reaches other people: deleting, merging, sending an email, publishing a post).
  Composio's own hints decide where a tool carries them (``readOnlyHint``, ``destructiveHint``,
  ``updateHint``); elsewhere the verb of the slug and the first words of the description do.
* :class:`TaintTracker` remembers, per turn, whether a tool result carried text that someone other
  than the requester may have written (an issue body, an email, a web page). After that, the
  model may be following instructions planted in that text, so nothing that changes state runs
  without asking.
* :class:`ApprovalPolicy` turns (workspace, tool, risk, tainted?) into ``run``, ``ask`` or
  ``deny``, honouring per-workspace overrides an admin sets with ``/lucy-policy``
  (table ``policy_overrides``).

Defaults: reads run; a write the person asked for runs (their request is the consent) unless the
turn is tainted; destructive calls always ask.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from lucy.approvals import ApprovalStore
from lucy.core.types import JSON, NeedsApproval, ToolCall, ToolResult, Turn

if TYPE_CHECKING:
    import asyncpg

    from lucy.integrations.worker import Allow, Deny, PreparedCall
    from lucy.ratelimit import RateLimiter

    WorkerDecision = Allow | Deny | NeedsApproval

Risk = Literal["read", "write", "destructive"]
Rule = Literal["ask", "auto", "deny"]
Action = Literal["run", "ask", "deny"]
Scope = Literal["toolkit", "tool"]

_RANK: dict[Risk, int] = {"read": 0, "write": 1, "destructive": 2}
RULES: tuple[Rule, ...] = get_args(Rule)


def _max_risk(risks: Iterable[Risk | None]) -> Risk | None:
    best: Risk | None = None
    for risk in risks:
        if risk is not None and (best is None or _RANK[risk] > _RANK[best]):
            best = risk
    return best


# --- classification -----------------------------------------------------------------------

# Verbs as they appear in slugs (GITHUB_DELETE_A_REPOSITORY). The sets were checked against the
# 833 tools that carry Composio's hints (see tests/test_policy.py and the report in the module's
# __main__): where a verb's tagged tools disagree, the safer class is taken.
READ_VERBS = frozenset({
    "GET", "LIST", "FETCH", "RETRIEVE", "SEARCH", "FIND", "CHECK", "QUERY", "READ", "VIEW", "SHOW",
    "DESCRIBE", "LOOKUP", "LOAD", "DOWNLOAD", "COUNT", "COMPARE", "VERIFY", "VALIDATE", "RENDER",
    "PARSE", "PREVIEW", "ESTIMATE", "ANALYZE", "ANALYSE", "DETECT", "DISCOVER", "EXTRACT", "SCRAPE",
    "CRAWL", "MAP", "STREAM", "SCREENSHOT", "INSPECT", "IS", "HAS", "CAN", "SUMMARIZE", "EXPLAIN",
    "BROWSE", "AUTH", "RETURN",
})
WRITE_VERBS = frozenset({
    "CREATE", "ADD", "UPDATE", "EDIT", "MODIFY", "PATCH", "SET", "PUT", "INSERT", "APPEND", "UPLOAD",
    "MOVE", "COPY", "DUPLICATE", "CLONE", "RENAME", "ENABLE", "DISABLE", "START", "STOP", "RUN",
    "TRIGGER", "EXECUTE", "RESTORE", "UNTRASH", "UNARCHIVE", "ARCHIVE", "STAR", "UNSTAR", "FOLLOW",
    "UNFOLLOW", "WATCH", "UNWATCH", "SUBSCRIBE", "UNSUBSCRIBE", "LIKE", "UNLIKE", "REACT", "ASSIGN",
    "UNASSIGN", "APPROVE", "CONFIGURE", "CUSTOMIZE", "MARK", "LOCK", "UNLOCK", "HIDE", "UNHIDE",
    "PIN", "UNPIN", "REQUEST", "REREQUEST", "REDELIVER", "RETRY", "RERUN", "PING", "TEST", "FORK",
    "SYNC", "SYNCHRONIZE", "CONVERT", "GENERATE", "TOGGLE", "SCHEDULE", "RESCHEDULE", "IMPORT",
    "EXPORT", "ENCRYPT", "INITIATE", "LAUNCH", "SUBMIT", "DISMISS", "RESOLVE", "REOPEN", "CLOSE",
    "ATTACH", "DETACH", "LINK", "UNLINK", "REORDER", "MANAGE", "SAVE", "STORE", "INTERRUPT", "DUB",
    "TRANSLATE", "ACCEPT", "INVITE", "SHARE", "ACTIVATE", "DEACTIVATE", "REGISTER", "COMMIT",
    "PUSH", "TYPE", "PASTE", "CLICK", "DRAG", "SCROLL", "PRESS", "COMPLETE", "FINALIZE", "RESUME",
    "PAUSE", "BULK", "PLACE", "MAKE", "INVOKE", "NAVIGATE", "UNBLOCK", "UNBAN",
})
# Cannot be undone by anyone: deleting, overwriting, merging, revoking, cancelling ...
DESTRUCTIVE_VERBS = frozenset({
    "DELETE", "REMOVE", "DESTROY", "PURGE", "CLEAR", "ERASE", "WIPE", "EMPTY", "TRUNCATE",
    "REVOKE", "TRANSFER", "MERGE", "RESET", "UNINSTALL", "BLOCK", "BAN", "KICK", "EVICT", "CANCEL",
    "DECLINE", "REJECT", "TERMINATE", "KILL", "OVERWRITE", "REPLACE", "TRASH",
})
# ... and delivering something to other people: a sent email cannot be unsent.
DELIVERY_VERBS = frozenset({
    "SEND", "FORWARD", "REPLY", "PUBLISH", "BROADCAST", "NOTIFY", "CALL", "DIAL", "EMAIL", "TWEET", "SMS",
})
# Verbs whose object names the real action: PERFORM_SEMANTIC_SEARCH searches.
_LIGHT_VERBS = frozenset({"PERFORM", "DO"})
# A creating verb whose object is one of these delivers it (CREATE_PHOTO_POST, SUBMIT_BATCH_CALL).
_CREATING = frozenset({"CREATE", "ADD", "SUBMIT", "INITIATE", "PLACE", "MAKE", "START"})
_DELIVERED_NOUNS = frozenset({"POST", "MESSAGE", "EMAIL", "SMS", "CALL", "TWEET", "DM"})
_PREPOSITIONS = frozenset({"TO", "FOR", "ON", "FROM", "WITH", "BY", "OF", "INTO", "AT", "VIA"})
_CHAIN = frozenset({"OR", "AND"})
# Verbs that are nouns as often: UPDATE_BLOCK updates a block, ADD_EMAIL_ADDRESS adds an address.
_NOUNISH = frozenset({
    "BLOCK", "POST", "EMAIL", "CALL", "MESSAGE", "SMS", "TWEET", "RUN", "TEST", "LINK", "TYPE", "STORE",
    "LOCK", "PIN", "COMMIT", "PUSH", "MAP", "STREAM", "SCHEDULE", "REQUEST", "MARK", "LIKE", "STAR",
    "SHARE", "STOP", "EMPTY", "BAN", "CLOSE", "REPLY", "FORWARD", "TRASH", "CLEAR", "EXPORT",
    "IMPORT", "MERGE", "TRANSFER", "REPLACE", "RESET", "CANCEL", "SAVE", "SET",
})


def _verb_risk(verb: str) -> Risk | None:
    if verb in DESTRUCTIVE_VERBS or verb in DELIVERY_VERBS:
        return "destructive"
    if verb in WRITE_VERBS:
        return "write"
    if verb in READ_VERBS:
        return "read"
    return None


# Composio's hint tags, as the catalog spells them.
READ_ONLY_TAG = "readOnlyHint"
DESTRUCTIVE_TAG = "destructiveHint"
UPDATE_TAG = "updateHint"


def classify_by_tags(tags: Iterable[Any]) -> Risk | None:
    """The risk Composio's hints state, or None when the tool carries none of them."""
    present = {str(t) for t in tags}
    if DESTRUCTIVE_TAG in present:
        return "destructive"
    if READ_ONLY_TAG in present:
        return "read"
    if UPDATE_TAG in present:
        return "write"
    return None


def toolkit_of(raw_tool: Mapping[str, Any]) -> str:
    """The toolkit slug of a Composio tool object (``toolkit`` is a dict or a string)."""
    toolkit = raw_tool.get("toolkit")
    if isinstance(toolkit, Mapping):
        toolkit = toolkit.get("slug")
    if isinstance(toolkit, str) and toolkit:
        return toolkit.lower()
    slug = str(raw_tool.get("slug") or "")
    return slug.split("_", 1)[0].lower()


def slug_tokens(slug: str, toolkit: str | None = None) -> list[str]:
    """The words of a slug after the toolkit prefix: GITHUB_DELETE_A_REPO → [DELETE, A, REPO]."""
    upper = slug.upper()
    prefix = f"{toolkit.upper()}_" if toolkit else ""
    if prefix and upper.startswith(prefix):
        upper = upper[len(prefix):]
    elif not prefix:
        upper = upper.split("_", 1)[1] if "_" in upper else upper
    return [t for t in upper.split("_") if t]


def slug_risk(slug: str, toolkit: str | None = None) -> Risk | None:
    """Risk from the slug's verb phrase, or None when the slug names no verb we know.

    The first known verb decides; verbs chained to it (CREATE_OR_UPDATE, CREATE_MODIFY_DELETE)
    count too, and a creating verb whose object is a post, message, email or call delivers it.
    """
    tokens = slug_tokens(slug, toolkit)
    for index, token in enumerate(tokens):
        risk = None if token in _LIGHT_VERBS else _verb_risk(token)
        if risk is None:
            continue
        chained: list[Risk | None] = [risk]
        if risk != "read":
            chained += _chained_risks(tokens[index + 1:])
        if token in _CREATING and _object_head(tokens[index + 1:]) in _DELIVERED_NOUNS:
            chained.append("destructive")
        return _max_risk(chained)
    return None


def _chained_risks(rest: Sequence[str]) -> Iterator[Risk]:
    """Verbs joined to a changing verb: CREATE_OR_UPDATE, CREATE_MODIFY_DELETE (not UPDATE_BLOCK)."""
    joined = False
    for token in rest:
        if token in _CHAIN:
            joined = True
            continue
        risk = _verb_risk(token)
        if risk is None or risk == "read" or (token in _NOUNISH and not joined):
            return
        joined = False
        yield risk


def _object_head(rest: Sequence[str]) -> str:
    """The last word of the object phrase: [PHOTO, POST] → POST; [LABEL, TO, EMAIL] → LABEL."""
    phrase: list[str] = []
    for token in rest:
        if token in _PREPOSITIONS:
            break
        phrase.append(token)
    return phrase[-1] if phrase else ""


# Boilerplate before the description's first verb: deprecation notes, bracketed labels,
# SHOUTED LABELS:, and "Tool to", "This tool allows users to", "Use to", ...
_DESCRIPTION_NOISE = [
    re.compile(r"^[\s()\[\]:;,.<>-]+"),
    re.compile(r"^deprecated\b\s*:?", re.I),
    re.compile(r"^(?:please\s+)?(?:use|prefer)\b[^.;)]*?\binstead\b[^.;)]*[.;)]?", re.I),
    re.compile(r"^\[[^\]]*\]"),
    re.compile(r"^(?:[A-Z0-9🚨⚠️]+\s*){1,4}:"),
    re.compile(
        r"^(?:this|the)?\s*(?:tool|action|endpoint|api|[\w.]+ endpoint)?\s*"
        r"(?:allows?|lets|enables|is used|can be used|is|helps)\s+(?:you|users|the user)?\s*(?:to\s+)?",
        re.I,
    ),
    re.compile(r"^(?:tool|used|(?:use|call)(?: this)?(?: action| tool| endpoint)?)\s+to\s+", re.I),
    re.compile(r"^(?:please\s+)?(?:use|call)\s+(?:this\s+)?(?:when|to)\b[^.]*?\bto\s+", re.I),
]
_WORD = re.compile(r"[A-Za-z]+")


def description_verb(description: str) -> str | None:
    """The verb the description opens with, in slug form ('Retrieves a list…' → 'RETRIEVE')."""
    text = re.sub(r"`[^`]*`", " ", description or "")
    for _ in range(8):  # a few layers of boilerplate at most
        before = text
        for pattern in _DESCRIPTION_NOISE:
            text = pattern.sub("", text, count=1).lstrip()
        if text == before:
            break
    words = _WORD.findall(text[:60])[:4]
    if not words:
        return None
    first = words[0].upper()
    if _verb_base(first) is None and first.rstrip("S") in _LIGHT_VERBS:
        return next((v for v in map(_verb_base, (w.upper() for w in words[1:])) if v), None)
    return _verb_base(first)


def _verb_base(word: str) -> str | None:
    """RETRIEVES → RETRIEVE, CREATES → CREATE, LISTS → LIST, FETCHES → FETCH, COPIES → COPY."""
    candidates = [word]
    if word.endswith("IES"):
        candidates.append(word[:-3] + "Y")
    if word.endswith("ES"):
        candidates.append(word[:-2])
    if word.endswith("S"):
        candidates.append(word[:-1])
    if word.endswith("ING"):
        candidates += [word[:-3], word[:-3] + "E"]
    for candidate in candidates:
        if _verb_risk(candidate) is not None:
            return candidate
    return None


# Words that say the change is final. They raise a write to destructive, never a read.
_IRREVERSIBLE = re.compile(
    r"\b(?:permanent(?:ly)?|irreversibl[ey]|irrevocabl[ey]|cannot be (?:undone|recovered|reversed|restored)"
    r"|can ?not be (?:undone|recovered)|can't be (?:undone|recovered)|not (?:be )?recoverable)\b",
    re.I,
)


def rules_risk(slug: str, description: str = "", toolkit: str | None = None) -> Risk:
    """Risk from the slug's verb and the description alone (no tags).

    The higher of the two verbs wins, so a tool called GET_… that "Deletes …" is destructive;
    a tool with no verb we know is a write (it might change something); a write whose
    description says the change is permanent or irreversible is destructive.
    """
    verb = description_verb(description)
    # "Sends a ping event", "Publishes the codespace": in prose, delivery verbs are often
    # technical, so only the slug's own SEND/REPLY/CALL… make a tool destructive by delivery.
    described = None if verb is None else "write" if verb in DELIVERY_VERBS else _verb_risk(verb)
    risk = _max_risk([slug_risk(slug, toolkit), described]) or "write"
    if risk == "write" and _IRREVERSIBLE.search(description or ""):
        return "destructive"
    return risk


@dataclass(frozen=True)
class Classification:
    risk: Risk
    source: Literal["tags", "rules"]  # "rules" also when the rules raised a tagged write
    rules: Risk  # what the rules alone say
    tags: Risk | None = None  # what Composio's hints say, if anything


def explain(raw_tool: Mapping[str, Any]) -> Classification:
    """:func:`classify` with its reasons, for reports and doubtful-case reviews."""
    toolkit = toolkit_of(raw_tool)
    rules = rules_risk(str(raw_tool.get("slug") or ""), str(raw_tool.get("description") or ""), toolkit)
    tagged = classify_by_tags(raw_tool.get("tags") or [])
    if tagged is None:
        return Classification(rules, "rules", rules)
    # A hint can understate: an "update" that overwrites a list or force-cancels a run is still
    # final. Asking costs one click; the opposite mistake can cost a repository.
    if tagged == "write" and rules == "destructive":
        return Classification("destructive", "rules", rules, tagged)
    return Classification(tagged, "tags", rules, tagged)


def classify(raw_tool: Mapping[str, Any]) -> Risk:
    """``read``, ``write`` or ``destructive`` for a Composio tool object.

    Composio's hints decide where present; the slug's verb and the description otherwise.
    """
    return explain(raw_tool).risk


# --- untrusted content --------------------------------------------------------------------

# A "word" is a run of two or more letters between whitespace or punctuation; three of them
# in one string is free text someone wrote. URLs and e-mail addresses are removed first so a
# link is not prose; hashes and ids contain digits, so they are not words.
_URLISH = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+|\S+@\S+\.\S+", re.I)
_SPLIT = re.compile(r"[\s,.;:!?()\[\]{}\"'`*_=+|<>~/\\#-]+")
_LETTERS = re.compile(r"^[^\W\d_]{2,}$")
PROSE_WORDS = 3
_IGNORED_KEYS = frozenset({"error"})  # Composio's envelope: the service's own message


def is_prose(text: str) -> bool:
    words = 0
    for token in _SPLIT.split(_URLISH.sub(" ", text)):
        if _LETTERS.match(token):
            words += 1
            if words >= PROSE_WORDS:
                return True
    return False


def untrusted_text(content: Any, arguments: Any = None) -> str | None:
    """The first piece of free text in a tool result that did not come from the call itself.

    Free text in a result (an issue body, an email, a page, a file, a comment, a description)
    may have been written by anyone, so the model must not take orders from it. Strings that
    repeat the call's own arguments are the requester's words echoed back, not someone else's.
    Returns None when the result holds only ids, numbers, names, dates and links.
    """
    echoed = [s for s in _strings(arguments) if len(s) >= 3]
    for text in _strings(content, top=True):
        if is_prose(text) and not any(text in e for e in echoed):
            return text
    return None


def _strings(value: Any, *, top: bool = False) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if top and key in _IGNORED_KEYS:
                continue
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


@dataclass
class TaintTracker:
    """Which turns have read untrusted content, and from which tools.

    One per process; the agent loop of a turn runs in one process. When a turn waits for an
    approval, put :meth:`sources` in the approval's ``state`` and call :meth:`mark` with them on
    resume, so a restart or another instance keeps the taint. Bounded: the oldest turns are
    forgotten first.
    """

    max_turns: int = 10_000
    _turns: OrderedDict[str, list[str]] = field(default_factory=OrderedDict, init=False, repr=False)

    @staticmethod
    def key(turn: Turn) -> str:
        if turn.turn_id:
            return f"{turn.workspace}\x1f{turn.turn_id}"
        return "\x1f".join((turn.workspace, turn.channel, turn.thread_ts, turn.ts))

    def observe(self, turn: Turn, tool: str, content: Any, *, ok: bool = True, arguments: Any = None) -> bool:
        """Look at one tool result; True when it made the turn tainted.

        A failed call's error text is the service's, so only successful results are inspected.
        Do not pass Lucy's own meta-tools (``search_tools``, ``connect_app``): their output is ours.
        """
        if not ok or untrusted_text(content, arguments) is None:
            return False
        self.mark(turn, tool)
        return True

    def mark(self, turn: Turn, *sources: str) -> None:
        """Taint ``turn`` explicitly (restoring a resumed turn, or history replayed into the prompt)."""
        if not sources:
            return
        key = self.key(turn)
        found = self._turns.pop(key, [])
        found += [s for s in sources if s not in found]
        self._turns[key] = found
        while len(self._turns) > self.max_turns:
            self._turns.popitem(last=False)

    def tainted(self, turn: Turn) -> bool:
        return self.key(turn) in self._turns

    def sources(self, turn: Turn) -> list[str]:
        """The tools whose results tainted the turn, first first."""
        return list(self._turns.get(self.key(turn), []))

    def forget(self, turn: Turn) -> None:
        self._turns.pop(self.key(turn), None)


# Tool output as the agent stores it in the thread (lucy.core.prompt.untrusted): a fence naming
# the tool. Kept here as a pattern so this module does not import the agent's prompt code.
_FENCED = re.compile(r'<untrusted-tool-output tool="([^"]*)">\n(.*?)\n</untrusted-tool-output>', re.S)


def thread_taint_sources(messages: Iterable[Mapping[str, Any]]) -> list[str]:
    """The tools whose output, stored earlier in a thread, holds someone else's free text.

    A follow-up in the same thread puts that output in front of the model again, so an
    instruction planted in an issue read yesterday can still steer today's turn. Lucy's own
    notes (``{"error": ...}`` when a call was denied, expired or failed) do not count.
    """
    found: list[str] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str) or "<untrusted-tool-output" not in content:
            continue
        for match in _FENCED.finditer(content):
            tool, body = match.group(1), match.group(2)
            try:
                value: Any = json.loads(body)
            except ValueError:
                value = body
            if tool not in found and untrusted_text(value) is not None:
                found.append(tool)
    return found


HistoryLoader = Callable[[Turn], Awaitable[Sequence[Mapping[str, Any]]]]


# --- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    workspace: str
    scope: Scope
    target: str  # toolkit slug (lower case) or tool slug (upper case)
    rule: Rule
    set_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    action: Action
    risk: Risk
    reason: str  # one sentence for the approval message (or the model, on deny)
    source: str  # "default", "taint", "toolkit:github", "tool:GITHUB_DELETE_A_REPOSITORY"


def _humanise_toolkit(toolkit: str) -> str:
    return toolkit.replace("_", " ").title()


def _reason_for(risk: Risk) -> str:
    if risk == "destructive":
        return "This can't be undone, or it reaches other people, so I ask before I do it."
    return "This changes something, so I ask before I do it."


def _taint_reason(sources: Sequence[str]) -> str:
    where = f" (from {', '.join(sources[:3])})" if sources else ""
    return (
        "Earlier in this request I read content written by someone else" + where + ", and it could "
        "be trying to steer me, so I'm checking with you before I change anything."
    )


class ApprovalPolicy:
    """Decides ``run`` / ``ask`` / ``deny`` per call; overrides live in ``policy_overrides``.

    Overrides: per toolkit or per tool, rule ``ask`` (always ask, even for reads), ``auto``
    (run without asking, even when destructive) or ``deny`` (never run). A tool override beats
    a toolkit override. A tainted turn asks before every write or destructive call whatever the
    override says, except ``deny``, which always wins.
    """

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def decide(
        self, workspace: str, tool_slug: str, risk: Risk, *, turn_tainted: bool, toolkit: str | None = None
    ) -> Action:
        verdict = await self.evaluate(workspace, tool_slug, risk, turn_tainted=turn_tainted, toolkit=toolkit)
        return verdict.action

    async def evaluate(
        self,
        workspace: str,
        tool_slug: str,
        risk: Risk,
        *,
        turn_tainted: bool,
        toolkit: str | None = None,
        tainted_by: Sequence[str] = (),
    ) -> Verdict:
        override = await self.override_for(workspace, tool_slug, toolkit)
        return verdict_for(tool_slug, risk, override, turn_tainted=turn_tainted, tainted_by=tainted_by)

    async def override_for(self, workspace: str, tool_slug: str, toolkit: str | None = None) -> Override | None:
        """The override that applies: the tool's own, else its toolkit's (longest slug prefix)."""
        rows = await self._pool.fetch(
            "SELECT workspace_id, scope, target, rule, set_by, updated_at FROM policy_overrides "
            "WHERE workspace_id = $1 AND ((scope = 'tool' AND target = $2) OR scope = 'toolkit')",
            workspace, tool_slug.upper(),
        )
        overrides = [_override(r) for r in rows]
        return pick_override(overrides, tool_slug, toolkit)

    async def set_override(self, workspace: str, scope: Scope, target: str, rule: Rule, set_by: str) -> Override:
        if scope not in ("toolkit", "tool") or rule not in RULES:
            raise ValueError(f"bad override {scope}/{rule}")
        row = await self._pool.fetchrow(
            "INSERT INTO policy_overrides (workspace_id, scope, target, rule, set_by) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (workspace_id, scope, target) DO UPDATE SET rule = EXCLUDED.rule, "
            "set_by = EXCLUDED.set_by, updated_at = now() "
            "RETURNING workspace_id, scope, target, rule, set_by, updated_at",
            workspace, scope, normalise_target(scope, target), rule, set_by,
        )
        assert row is not None
        return _override(row)

    async def clear_override(self, workspace: str, scope: Scope, target: str) -> bool:
        done = await self._pool.fetchval(
            "DELETE FROM policy_overrides WHERE workspace_id = $1 AND scope = $2 AND target = $3 RETURNING true",
            workspace, scope, normalise_target(scope, target),
        )
        return bool(done)

    async def list_overrides(self, workspace: str) -> list[Override]:
        rows = await self._pool.fetch(
            "SELECT workspace_id, scope, target, rule, set_by, updated_at FROM policy_overrides "
            "WHERE workspace_id = $1 ORDER BY scope DESC, target",
            workspace,
        )
        return [_override(r) for r in rows]


def normalise_target(scope: Scope, target: str) -> str:
    return target.strip().upper() if scope == "tool" else target.strip().lower()


def _override(row: Mapping[str, Any]) -> Override:
    return Override(row["workspace_id"], row["scope"], row["target"], row["rule"], row["set_by"], row["updated_at"])


def pick_override(overrides: Iterable[Override], tool_slug: str, toolkit: str | None = None) -> Override | None:
    slug = tool_slug.upper()
    best: Override | None = None
    for override in overrides:
        if override.scope == "tool":
            if override.target == slug:
                return override
            continue
        matches = override.target == toolkit if toolkit else slug.startswith(override.target.upper() + "_")
        if matches and (best is None or len(override.target) > len(best.target)):
            best = override
    return best


def verdict_for(
    tool_slug: str, risk: Risk, override: Override | None, *, turn_tainted: bool, tainted_by: Sequence[str] = ()
) -> Verdict:
    """The decision table, pure: deny override > taint (state-changing calls) > ask/auto override > default."""
    source = f"{override.scope}:{override.target}" if override else "default"
    if override is not None and override.rule == "deny":
        return Verdict("deny", risk, "A workspace admin has turned this tool off for this workspace.", source)
    if risk != "read" and turn_tainted:
        return Verdict("ask", risk, _taint_reason(tainted_by), "taint")
    if override is not None and override.rule == "ask":
        what = "this tool" if override.scope == "tool" else _humanise_toolkit(override.target)
        return Verdict("ask", risk, f"A workspace admin asked me to check with you before I use {what}.", source)
    if override is not None and override.rule == "auto":
        return Verdict("run", risk, "A workspace admin allowed this without asking.", source)
    if risk == "destructive":
        return Verdict("ask", risk, _reason_for(risk), source)
    return Verdict("run", risk, "", source)


# --- the seam the worker calls ---------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """What the worker does with one call: run it, return ``needs`` (approval), or refuse it."""

    action: Action
    risk: Risk
    reason: str
    source: str
    needs: NeedsApproval | None = None

    @property
    def decision(self) -> Literal["auto"] | None:
        """The audit ``decision`` for a call that runs without asking."""
        return "auto" if self.action == "run" else None


class ApprovalGate:
    """Classification, taint and policy in one object the worker calls around each execution.

    ``check`` before executing (it stores the approval request when one is needed), ``observe``
    after a successful execution (so later calls in the turn know it read untrusted content).
    """

    def __init__(
        self,
        policy: ApprovalPolicy,
        approvals: ApprovalStore,
        taint: TaintTracker | None = None,
        *,
        history: HistoryLoader | None = None,
    ) -> None:
        self.policy = policy
        self.approvals = approvals
        self.taint = taint or TaintTracker()
        # The thread's earlier messages; their tool output taints this turn too. Read once per turn,
        # and only when a state-changing call would otherwise run without asking.
        self._history = history
        self._history_read: OrderedDict[str, None] = OrderedDict()

    async def check(
        self, turn: Turn, call: ToolCall, raw_tool: Mapping[str, Any] | None, *, state: JSON | None = None
    ) -> GateResult:
        toolkit = toolkit_of(raw_tool) if raw_tool else None
        risk = classify(raw_tool) if raw_tool else rules_risk(call.name)
        sources = self.taint.sources(turn)
        if not sources and risk != "read":
            sources = await self._thread_sources(turn)
        verdict = await self.policy.evaluate(
            turn.workspace, call.name, risk, turn_tainted=bool(sources), toolkit=toolkit, tainted_by=sources
        )
        if verdict.action != "ask":
            return GateResult(verdict.action, risk, verdict.reason, verdict.source)
        shown_risk: Literal["write", "destructive"] = "destructive" if risk == "destructive" else "write"
        approval_id = await self.approvals.create(
            turn, call.name, call.arguments, verdict.reason,
            {**(state or {}), "call_id": call.id, "tainted_by": sources},
            risk=shown_risk, toolkit=toolkit,
        )
        needs = NeedsApproval(approval_id, call.name, call.arguments, verdict.reason, call.id, shown_risk)
        return GateResult("ask", risk, verdict.reason, verdict.source, needs)

    def observe(self, turn: Turn, call: ToolCall, content: Any, *, ok: bool = True) -> bool:
        """Inspect a result; True when it tainted the turn."""
        return self.taint.observe(turn, call.name, content, ok=ok, arguments=call.arguments)

    def restore(self, turn: Turn, state: Mapping[str, Any]) -> None:
        """On resuming after an approval: the turn stays as tainted as it was."""
        self.taint.mark(turn, *[str(s) for s in state.get("tainted_by") or []])
        # The thread now also holds what this turn read before it stopped: read it again.
        self._history_read.pop(self.taint.key(turn), None)

    async def _thread_sources(self, turn: Turn) -> list[str]:
        key = self.taint.key(turn)
        if self._history is None or not turn.channel or not turn.thread_ts or key in self._history_read:
            return []
        self._history_read[key] = None
        while len(self._history_read) > self.taint.max_turns:
            self._history_read.popitem(last=False)
        sources = [f"{tool}, earlier in this thread" for tool in thread_taint_sources(await self._history(turn))]
        self.taint.mark(turn, *sources)
        return self.taint.sources(turn)


class WorkerPolicy:
    """:class:`lucy.integrations.worker.CallPolicy` backed by an :class:`ApprovalGate`.

    Pass it as ``IntegrationWorker(policy=WorkerPolicy(gate, raw_tools=...))``. ``raw_tools``
    returns the raw Composio tool object of a slug (with its ``tags``); without it, the tool's
    own ``tags`` attribute (if the sanitised tool carries one) and the rules decide.
    """

    def __init__(
        self,
        gate: ApprovalGate,
        *,
        raw_tools: Callable[[str], Mapping[str, Any] | None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.gate = gate
        self._raw_tools = raw_tools
        self._limiter = limiter

    async def before_execute(self, prepared: PreparedCall) -> WorkerDecision:
        from lucy.errors import RateLimitedError
        from lucy.integrations.worker import Allow, Deny

        turn, call = prepared.turn, self._call(prepared)
        if self._limiter is not None:
            try:
                await self._limiter.check_tool(turn.workspace, turn.user)
            except RateLimitedError as exc:
                return Deny(exc.user_message, status="rate_limited")
        result = await self.gate.check(turn, call, self._raw(prepared), state={"call_name": prepared.call.name})
        if result.needs is not None:
            return result.needs
        if result.action == "deny":
            return Deny(result.reason)
        return Allow()

    async def after_execute(self, prepared: PreparedCall, result: ToolResult) -> None:
        self.gate.observe(prepared.turn, self._call(prepared), result.content, ok=result.ok)

    @staticmethod
    def _call(prepared: PreparedCall) -> ToolCall:
        # Policy, approval text and audit speak Composio's slug; the state keeps the model's name.
        return ToolCall(prepared.call.id, prepared.tool.slug, dict(prepared.arguments))

    def _raw(self, prepared: PreparedCall) -> Mapping[str, Any]:
        found = self._raw_tools(prepared.tool.slug) if self._raw_tools else None
        if found is not None:
            return found
        function = prepared.tool.definition.get("function") or {}
        return {"slug": prepared.tool.slug, "toolkit": prepared.tool.toolkit,
                "description": function.get("description") or "", "tags": list(getattr(prepared.tool, "tags", ()))}


# --- /lucy-policy ---------------------------------------------------------------------------

POLICY_COMMAND = "/lucy-policy"
_RULE_WORDS: dict[str, Rule | None] = {
    "ask": "ask", "always_ask": "ask", "always-ask": "ask", "confirm": "ask",
    "auto": "auto", "allow": "auto", "run": "auto",
    "deny": "deny", "block": "deny", "never": "deny", "off": "deny",
    "default": None, "reset": None, "clear": None,
}
POLICY_HELP = (
    f"*Approval policy.* By default I run reads, run changes you ask for, and ask before anything that "
    f"can't be undone (deleting, merging, sending, publishing); after I've read content someone else "
    f"wrote (an issue, an email, a web page) I ask before any change.\n"
    f"Admins can change this per app or per tool:\n"
    f"• `{POLICY_COMMAND} github ask`: always ask before using GitHub\n"
    f"• `{POLICY_COMMAND} GITHUB_MERGE_A_PULL_REQUEST auto`: run it without asking\n"
    f"• `{POLICY_COMMAND} gmail deny`: never use Gmail\n"
    f"• `{POLICY_COMMAND} github default`: back to the defaults\n"
    f"• `{POLICY_COMMAND}`: show what is set"
)


@dataclass(frozen=True)
class PolicyCommand:
    kind: Literal["show", "set", "clear", "help", "invalid"]
    scope: Scope = "toolkit"
    target: str = ""
    rule: Rule | None = None
    error: str = ""


def parse_policy_command(text: str, known_toolkits: Iterable[str] = ()) -> PolicyCommand:
    """``""``/``show`` · ``help`` · ``<toolkit|TOOL_SLUG|tool:X|toolkit:x> <ask|auto|deny|default>``."""
    words = text.split()
    if not words or words[0].lower() in ("show", "list", "status"):
        return PolicyCommand("show")
    if words[0].lower() in ("help", "?"):
        return PolicyCommand("help")
    if len(words) != 2 or words[1].lower() not in _RULE_WORDS:
        return PolicyCommand("invalid", error=f"I didn't understand that. Try `{POLICY_COMMAND} github ask`.")
    scope, target = _target(words[0], {k.lower() for k in known_toolkits})
    if not re.fullmatch(r"[A-Za-z0-9_]{1,128}", target):
        return PolicyCommand("invalid", error=f"`{target}` is not an app or tool name.")
    rule = _RULE_WORDS[words[1].lower()]
    return PolicyCommand("clear" if rule is None else "set", scope, normalise_target(scope, target), rule)


def _target(word: str, known: set[str]) -> tuple[Scope, str]:
    lowered = word.lower()
    if lowered.startswith("tool:"):
        return "tool", word[5:]
    if lowered.startswith(("toolkit:", "app:")):
        return "toolkit", word.split(":", 1)[1]
    if lowered in known or "_" not in word:
        return "toolkit", word
    return "tool", word


def describe_overrides(overrides: Sequence[Override]) -> str:
    if not overrides:
        return "No overrides: the defaults apply to every app and tool."
    names = {"ask": "always ask", "auto": "run without asking", "deny": "never run"}
    lines = [f"• `{o.target}` ({o.scope}): {names[o.rule]}" + (f", set by <@{o.set_by}>" if o.set_by else "")
             for o in overrides]
    return "Overrides for this workspace:\n" + "\n".join(lines)


async def run_policy_command(
    policy: ApprovalPolicy,
    *,
    workspace: str,
    user: str,
    is_admin: bool,
    text: str,
    known_toolkits: Iterable[str] = (),
) -> str:
    """Handle ``/lucy-policy <text>``; returns the (ephemeral) reply. Only admins may change it."""
    command = parse_policy_command(text, known_toolkits)
    if command.kind == "help":
        return POLICY_HELP
    if command.kind == "show":
        return describe_overrides(await policy.list_overrides(workspace)) + f"\n(`{POLICY_COMMAND} help` explains.)"
    if command.kind == "invalid":
        return command.error
    if not is_admin:
        return "Only workspace admins can change the approval policy."
    if command.kind == "clear":
        removed = await policy.clear_override(workspace, command.scope, command.target)
        return f"`{command.target}` follows the defaults again." if removed else (
            f"`{command.target}` had no override; it follows the defaults.")
    assert command.rule is not None
    await policy.set_override(workspace, command.scope, command.target, command.rule, user)
    words = {"ask": "I'll always ask before using", "auto": "I'll run without asking:", "deny": "I'll never use"}
    return f"Done. {words[command.rule]} `{command.target}`."


# --- catalog report (python -m lucy.integrations.policy DIR) -------------------------------


def catalog_report(tools: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts per class and source, and where the rules disagree with Composio's hints."""
    by_class: dict[str, int] = {"read": 0, "write": 0, "destructive": 0}
    by_source: dict[str, dict[str, int]] = {"tags": dict(by_class), "rules": dict(by_class)}
    disagreements: list[dict[str, str]] = []
    total = tagged = 0
    for tool in tools:
        total += 1
        c = explain(tool)
        by_class[c.risk] += 1
        by_source[c.source][c.risk] += 1
        if c.tags is not None:
            tagged += 1
            if c.rules != c.tags:
                disagreements.append({"slug": str(tool.get("slug")), "tags": c.tags, "rules": c.rules, "final": c.risk})
    return {
        "total": total, "by_class": by_class, "by_source": by_source, "tagged": tagged,
        "agree": tagged - len(disagreements), "disagreements": disagreements,
    }


def _main(argv: Sequence[str]) -> int:
    import sys
    from pathlib import Path

    root = Path(argv[0] if argv else "../shared/composio/tools")
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    tools = [t for f in files for t in json.loads(f.read_text(encoding="utf-8"))]
    report = catalog_report(tools)
    if "--slugs" not in argv:
        report["disagreements_by_pair"] = _pairs(report.pop("disagreements"))
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


def _pairs(disagreements: list[dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in disagreements:
        key = f"tags={d['tags']} rules={d['rules']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
