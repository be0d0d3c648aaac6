"""Choose, each turn, the few tools that fit the request.

A workspace that connects GitHub alone brings 831 tools (~300k tokens of schemas); providers cap
a request at 128 tools and models choose worse as the list grows. :class:`ToolSelector` ranks the
connected toolkits' tools for the request with a lexical ranker that runs offline in about a
millisecond, and packs the best ones into a per-turn budget (K tools, N tokens).

The ranker is BM25F over the fields of each tool — slug and name, description, parameter names
and descriptions, category tags, and its phrasebook (:mod:`lucy.integrations.phrasebook`: four
requests people would type for it, written from its definition, so everyday words meet API
words from the tool's side too) — with:

* query normalisation and expansion (:mod:`lucy.integrations.selection_text`): case and accents
  folded, identifiers split, light stemming, a lexicon of how people talk about apps ("PR",
  "kill the run", "nuke", "mándale un correo") and words for shapes (``acme/web#12``, a sha);
* name bigrams, so "issue comment" prefers *create an issue comment* over *create an issue*;
* toolkit routing: a connected app named in the request ("in drive", "on linkedin", "gh") lifts
  that app's tools;
* the request's action (read / create / update / delete, from the clause that gives the order)
  lifts tools doing the same, and a tool that takes what the request's shapes give (``#88`` → an
  ``issue_number``) is lifted too;
* a catalog prior: Composio marks everyday tools ``important`` and rarely wanted ones
  ``mcpIgnore``; a small nudge breaks ties between near-synonyms toward the everyday one.
* doer/action forms ("review" ↔ "reviewer", "assign" ↔ "assignee") as a weak expansion, and
  spelling fixes weighted as the guesses they are;
* optionally, sentence similarity (:mod:`.selection_embed`): tools encoded once by
  all-MiniLM-L6-v2 on numpy, requests by a static encoder distilled from it (microseconds a
  turn); the z-scored lexical and cosine scores are summed, lexical leading (weight 0.3 on the
  cosine). Without the model files selection stays lexical.

A request with two tasks ("file an issue … and then put a reminder on my calendar") is also
ranked task by task and the rankings take turns. Packing sends a deprecated tool's successor
in its place, and an alias only once.

Indexes are built once per toolkit (:meth:`ToolSelector.add_toolkit`) and kept; only inverse
document frequencies are shared across toolkits and refreshed when a toolkit is added, so scores
from different apps compare fairly. Nothing here touches the network or imports an SDK.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

# The meta-tools are defined beside their names in lucy.core (the agent needs them without this
# module) and re-exported here, where the selector's callers build a turn's tools.
from lucy.core.meta_tools import MAX_CONNECT_ENUM, meta_tools
from lucy.core.types import ToolDef
from lucy.integrations.selection_text import (
    EXACT,
    LEXICON_WORDS,
    REQUEST_VERBS,
    STOPWORDS,
    action_cue,
    clause_starts,
    embedding_text,
    expand,
    fold,
    param_kinds,
    parse,
    proper_names,
    shape_kinds,
    split_tasks,
    stem,
    tokens,
    tool_actions,
    tool_description,
    words,
)

if TYPE_CHECKING:
    from lucy.config import Settings

__all__ = ["MAX_CONNECT_ENUM", "Selection", "ToolSelector", "estimate_tokens", "meta_tools", "plain_definition"]

# --- token estimate ----------------------------------------------------------------------------

# Fitted once (least squares) against tiktoken's o200k_base and cl100k_base counts — taking the
# larger of the two — of the compact JSON of all 1,357 catalog tools plus the 199 MetaTool tools,
# using the encodings litellm ships, offline. Per tool the estimate is within -6%/+7% (p5/p95) of
# the true count; over a 20-tool selection within ±3% (p1/p99). The 3% margin makes it an upper
# bound for 99% of selections, so a budget honoured here is honoured by the real tokenizer.
_TOKEN_COEF_CHARS = 0.0931
_TOKEN_COEF_WORDS = 0.6586
_TOKEN_COEF_PUNCT = 0.1988
_TOKEN_COEF_NON_ASCII = 2.1728
_TOKEN_COEF_DIGITS = 0.7005
_TOKEN_MARGIN = 1.03
_ALPHA_RUN = re.compile(r"[A-Za-z]+")
_PUNCT = re.compile(r"[^\w\s]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_DIGIT = re.compile(r"\d")


def estimate_text_tokens(text: str) -> int:
    """Tokens of ``text`` as an OpenAI tokenizer would count them (slightly over, never under by much)."""
    raw = (
        _TOKEN_COEF_CHARS * len(text)
        + _TOKEN_COEF_WORDS * len(_ALPHA_RUN.findall(text))
        + _TOKEN_COEF_PUNCT * len(_PUNCT.findall(text))
        + _TOKEN_COEF_NON_ASCII * len(_NON_ASCII.findall(text))
        + _TOKEN_COEF_DIGITS * len(_DIGIT.findall(text))
    )
    return max(1, math.ceil(raw * _TOKEN_MARGIN))


def estimate_tokens(definition: ToolDef) -> int:
    """Tokens one OpenAI-format tool definition costs in a request (offline, deterministic)."""
    return estimate_text_tokens(json.dumps(definition, separators=(",", ":"), ensure_ascii=False, sort_keys=True))


def plain_definition(tool: Mapping[str, Any]) -> ToolDef:
    """The unsanitised OpenAI-format definition of a raw Composio tool (used to count tokens)."""
    return {
        "type": "function",
        "function": {
            "name": str(tool["slug"]),
            "description": str(tool.get("description") or ""),
            "parameters": tool.get("input_parameters") or {"type": "object", "properties": {}},
        },
    }


# --- the index ---------------------------------------------------------------------------------

# BM25F: field weight, length normalisation. The name (slug + display name) says what a tool
# does; descriptions add vocabulary but ramble; parameter names say what it needs.
_FIELDS: dict[str, tuple[float, float]] = {
    "name": (4.0, 0.5),
    "desc": (1.0, 0.75),
    "params": (0.4, 0.5),
    "pdesc": (0.15, 0.75),
    "tags": (1.0, 0.3),
    "asks": (0.5, 0.75),  # the phrasebook: people's words, but four guesses of them (chosen on dev-train + tune)
}
_K1 = 1.2
_BIGRAM_WEIGHT = 0.5  # of a name bigram hit, relative to a query word
_EXPANSION_SCALE = 1.15  # times the lexicon's own weight (exact 0.9, loose 0.5)
_PAYLOAD_WEIGHT = 0.2  # of a word inside quotes or after "…:", relative to a written word
_ENTITY_WEIGHT = 0.3  # of a word describing a shape (``owner/repo#1``), relative to a written word
_HISTORY_WEIGHT = 0.3
_SHAPE_HINT = 1.0  # of the mention bonus, for an app only the request's shapes point to
_EMBED_WEIGHT = 0.3  # of the sentence-similarity z-score, relative to the lexical z-score (chosen on dev-train)
_STACKED_MEMORY = 64  # sets of connected toolkits whose stacked tool vectors are kept
_DERIVED_WEIGHT = 0.3  # of "reviewer" for a written "review" (and back)
_FIX_WEIGHT = 0.6  # of a word the spelling fix changed, relative to a written word
_MENTION_BONUS = 1.5  # score added to every tool of an app the request names
_ACTION_BONUS = 1.5  # when the tool does what the request asks (read / create / update / delete)
_SLOT_BONUS = 1.0  # when the tool takes every kind of value the request's shapes give (chosen on dev-train + tune)
_PRIOR_IMPORTANT = 0.5
_PRIOR_IGNORED = -0.4
_HINT_TAGS = frozenset({"readonlyhint", "destructivehint", "idempotenthint", "openworldhint", "updatehint",
                        "mcpignore", "important"})
_MAX_FIXES = 50_000
_MIN_FIX_LEN = 5  # shorter words have too many neighbours one edit away to guess from
_ALIAS_FILLER = frozenset(
    {"a", "an", "the", "for", "of", "to", "by", "repos", "repo", "repository", "authenticated", "user",
     "activity", "request"}
)
_DESC_CHARS = 600
_PARAM_DESC_CHARS = 160  # the opening of a description says what the tool is; the rest is usage notes


@dataclass
class _Doc:
    slug: str
    toolkit: str
    prior: float
    actions: frozenset[str]  # read / create / update / delete, from the slug's verbs
    takes: frozenset[str]  # the kinds of value its parameters take (number, email, url, …)
    tokens: int  # estimated tokens of the plain definition
    fields: dict[str, dict[str, int]]
    lengths: dict[str, int]


@dataclass
class _ToolkitIndex:
    """One toolkit's documents and the query-independent half of their BM25F weights."""

    toolkit: str
    docs: list[_Doc]
    # term → [(doc position, saturated tf)]; multiplied by the shared idf at query time
    postings: dict[str, list[tuple[int, float]]]
    name_words: tuple[str, ...]
    alias_of: dict[str, str]  # slug → the alias group it belongs to (its first member's slug)
    successor: dict[str, str]  # deprecated slug → the slug to send instead
    vocab: dict[str, int]  # unstemmed words of names and descriptions → count, for spelling fixes
    tools: list[dict[str, Any]] = field(default_factory=list)  # the indexed tools, in doc order
    vectors: Any = None  # their sentence vectors (numpy, one row per doc) once embedded
    # The same postings as numpy arrays, so a query term costs one vectorised add, not a loop:
    arrays: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # term → (doc positions, saturated tf)
    base: Any = None  # float64: each doc's prior
    does: dict[str, Any] = field(default_factory=dict)  # action → float64 mask of the docs doing it
    takes: dict[str, Any] = field(default_factory=dict)  # shape kind → float64 mask of the docs taking it
    slugs: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> list[int]:
        return self.merged_sizes or [len(self.slugs)]

    merged_sizes: list[int] = field(default_factory=list)  # docs per toolkit, for a merged index


class _MergedPostings(dict[str, tuple[Any, Any]]):
    """term → (doc positions, saturated tf) over several toolkits, concatenated on first use:
    a set of connected toolkits pays for the terms its requests use, not for its whole vocabulary."""

    def __init__(self, indexes: list[_ToolkitIndex], offsets: list[int]) -> None:
        super().__init__()
        self._parts = list(zip(indexes, offsets, strict=False))

    def get(self, term: str, default: Any = None) -> Any:
        found = super().get(term)
        if found is None:
            import numpy as np

            hits = [(ix.arrays[term], off) for ix, off in self._parts if term in ix.arrays]
            if not hits:
                return default
            found = (np.concatenate([pos + off for (pos, _), off in hits]),
                     np.concatenate([sat for (_, sat), _ in hits]))
            self[term] = found
        return found


def _merge(indexes: list[_ToolkitIndex]) -> _ToolkitIndex:
    """The scoring half of several toolkits' indexes, concatenated in order."""
    import numpy as np

    offsets = list(itertools.accumulate((len(ix.slugs) for ix in indexes), initial=0))

    def stacked(masks: list[dict[str, Any]]) -> dict[str, Any]:
        keys = dict.fromkeys(k for m in masks for k in m)
        return {k: np.concatenate([m.get(k, np.zeros(len(ix.slugs))) for m, ix in zip(masks, indexes, strict=True)])
                for k in keys}

    does, takes = stacked([ix.does for ix in indexes]), stacked([ix.takes for ix in indexes])
    return _ToolkitIndex(
        toolkit="+".join(ix.toolkit for ix in indexes), docs=[], postings={}, name_words=(), alias_of={},
        successor={}, vocab={}, arrays=_MergedPostings(indexes, offsets),
        base=np.concatenate([ix.base for ix in indexes]), does=does, takes=takes,
        slugs=[slug for ix in indexes for slug in ix.slugs], merged_sizes=[len(ix.slugs) for ix in indexes],
    )


def _slug_words(slug: str, toolkit: str) -> str:
    prefix = toolkit.upper() + "_"
    body = slug[len(prefix) :] if slug.upper().startswith(prefix) else slug
    # GitHub slugs spell "repos" as REPO_S and "gists" as GIST_S.
    return re.sub(r"_S(?=_|$)", "S", body)


def _param_names(schema: Any) -> list[str]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    return [str(name) for name in props] if isinstance(props, dict) else []


def _param_text(schema: Any) -> tuple[str, str]:
    """Parameter names with their enum values (``event: APPROVE``), and their descriptions."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return "", ""
    names: list[str] = []
    descriptions: list[str] = []
    for name, spec in props.items():
        names.append(str(name))
        if isinstance(spec, dict):
            enum = spec.get("enum")
            if isinstance(enum, list) and len(enum) <= 12:
                names.extend(str(v) for v in enum)
            descriptions.append(str(spec.get("description") or "")[:_PARAM_DESC_CHARS])
    return " ".join(names), " ".join(descriptions)


_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _edits1(word: str) -> list[str]:
    """Words one deletion, transposition, substitution or insertion away (Norvig's ``edits1``)."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return [
        *(a + b[1:] for a, b in splits if b),
        *(a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1),
        *(a + c + b[1:] for a, b in splits if b for c in _ALPHABET if c != b[0]),
        *(a + c + b for a, b in splits for c in _ALPHABET),
    ]


def _bigrams(seq: list[str]) -> list[str]:
    return [f"{a}_{b}" for a, b in itertools.pairwise(seq)]


def _counts(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _doc_for(tool: Mapping[str, Any], toolkit: str, asks: Sequence[str] = ()) -> _Doc:
    slug = str(tool["slug"])
    name_tokens = tokens(_slug_words(slug, toolkit)) + tokens(str(tool.get("name") or ""))
    description = tool_description(tool)[:_DESC_CHARS]
    tags = [str(t) for t in tool.get("tags") or []]
    param_names, param_descriptions = _param_text(tool.get("input_parameters"))
    fields = {
        "name": _counts(name_tokens + _bigrams(tokens(_slug_words(slug, toolkit)))),
        "desc": _counts(tokens(description)),
        "params": _counts(tokens(param_names)),
        "pdesc": _counts(tokens(param_descriptions)),
        "tags": _counts(tokens(" ".join(t for t in tags if fold(t) not in _HINT_TAGS))),
        "asks": _counts(tokens(" ".join(asks))),
    }
    lowered = {fold(t) for t in tags}
    prior = (_PRIOR_IMPORTANT if "important" in lowered else 0.0) + (_PRIOR_IGNORED if "mcpignore" in lowered else 0.0)
    return _Doc(
        slug=slug,
        toolkit=toolkit,
        prior=prior,
        actions=tool_actions(words(_slug_words(slug, toolkit))),
        takes=param_kinds(_param_names(tool.get("input_parameters"))),
        tokens=estimate_tokens(plain_definition(tool)),
        fields=fields,
        lengths={name: sum(c.values()) for name, c in fields.items()},
    )


def _build_index(toolkit: str, tools: list[dict[str, Any]], display_name: str,
                 phrasebook: Mapping[str, Sequence[str]]) -> _ToolkitIndex:
    tools = [tool for tool in tools if tool.get("slug")]
    docs = [_doc_for(tool, toolkit, phrasebook.get(str(tool["slug"]), ())) for tool in tools]
    avg: dict[str, float] = {f: (sum(d.lengths[f] for d in docs) / len(docs) or 1.0) if docs else 1.0 for f in _FIELDS}
    postings: dict[str, list[tuple[int, float]]] = {}
    for pos, doc in enumerate(docs):
        pseudo_tf: dict[str, float] = {}
        for fname, (weight, b) in _FIELDS.items():
            norm = 1.0 - b + b * doc.lengths[fname] / avg[fname]
            for term, tf in doc.fields[fname].items():
                pseudo_tf[term] = pseudo_tf.get(term, 0.0) + weight * tf / norm
        for term, ptf in pseudo_tf.items():
            postings.setdefault(term, []).append((pos, ptf / (_K1 + ptf)))
    name_words = tuple(stem(w) for w in words(display_name) if w not in STOPWORDS)
    alias_of = _alias_groups(toolkit, tools)
    vocab: dict[str, int] = {}
    for tool in tools:
        text = f"{_slug_words(str(tool.get('slug') or ''), toolkit)} {tool.get('name') or ''} " + str(
            tool.get("description") or ""
        )[:_DESC_CHARS]
        for w in words(text):
            if len(w) >= _MIN_FIX_LEN - 1:
                vocab[w] = vocab.get(w, 0) + 1
    import numpy as np

    return _ToolkitIndex(
        toolkit=toolkit,
        docs=docs,
        postings=postings,
        name_words=name_words,
        alias_of=alias_of,
        successor=_successors(toolkit, tools),
        vocab=vocab,
        tools=tools,
        arrays={
            term: (np.array([pos for pos, _ in plist], dtype=np.intp), np.array([sat for _, sat in plist]))
            for term, plist in postings.items()
        },
        base=np.array([doc.prior for doc in docs], dtype=np.float64),
        does=_masks([doc.actions for doc in docs]),
        takes=_masks([doc.takes for doc in docs]),
        slugs=[doc.slug for doc in docs],
    )


def _masks(labels: list[frozenset[str]]) -> dict[str, Any]:
    """label → float64 mask of the docs carrying it (an action they do, a kind of value they take)."""
    import numpy as np

    return {k: np.array([k in doc for doc in labels], dtype=np.float64) for k in sorted(set().union(*labels))}


def _alias_groups(toolkit: str, tools: list[dict[str, Any]]) -> dict[str, str]:
    """Group tools that are the same call under two names (``ISSUES_CREATE`` / ``CREATE_AN_ISSUE``).

    Composio keeps deprecated aliases beside their successors. Sending both costs a slot and
    tokens and makes the model hesitate, so a selection keeps only the better-ranked one.
    Aliases take the same parameters and their names say the same thing once the words that
    only one naming scheme uses ("repos", "activity", "authenticated user") are dropped.
    """
    leaders: dict[tuple[tuple[str, ...], frozenset[str]], str] = {}
    alias_of: dict[str, str] = {}
    for tool in tools:
        slug = str(tool.get("slug") or "")
        if not slug:
            continue
        props = (tool.get("input_parameters") or {}).get("properties") or {}
        core = frozenset(stem(w) for w in words(_slug_words(slug, toolkit))) - _ALIAS_FILLER
        if len(core) < 2:  # "search" alone would merge SEARCH_REPOS with SEARCH_USERS
            alias_of[slug] = slug
            continue
        alias_of[slug] = leaders.setdefault((tuple(sorted(props)), core), slug)
    return alias_of


_QUOTED_NAME = re.compile(r"[`'\"]([A-Za-z][A-Za-z0-9_]+)[`'\"]")


def _name_key(name: str, toolkit: str) -> str:
    return re.sub(r"[^a-z0-9]", "", _slug_words(name, toolkit).lower())


def _successors(toolkit: str, tools: list[dict[str, Any]]) -> dict[str, str]:
    """Deprecated tool → the tool its description says to use instead.

    Composio words it several ways ("DEPRECATED: Use the `get_an_issue` action instead",
    "… prefer using `GetAUser`"); names compare once case and separators are dropped.
    """
    by_key = {_name_key(str(t["slug"]), toolkit): str(t["slug"]) for t in tools if t.get("slug")}
    out: dict[str, str] = {}
    for tool in tools:
        slug, description = str(tool.get("slug") or ""), str(tool.get("description") or "")
        if not slug or not description.lstrip().upper().startswith("DEPRECATED"):
            continue
        for name in _QUOTED_NAME.findall(description):
            successor = by_key.get(_name_key(name, toolkit))
            if successor is not None and successor != slug:
                out[slug] = successor
                break
    return out


_AGENT_SUFFIXES = ("er", "r", "ee", "or")


def _agent_forms(term: str) -> list[str]:
    """The doer of an action and the action of a doer ("review" ↔ "reviewer", "assign" ↔ "assignee").

    The stemmer keeps them apart on purpose ("organizer" is not "organ"); as a weak expansion,
    checked against the catalog's vocabulary, they let "ask dana to review" meet *request
    reviewers* and "my followers" meet *follow*.
    """
    forms = [term + suffix for suffix in _AGENT_SUFFIXES]
    for suffix in _AGENT_SUFFIXES:
        if term.endswith(suffix) and len(term) - len(suffix) >= 4:
            forms.append(term[: -len(suffix)])
    return forms


def _interleave(lists: list[list[str]], limit: int) -> list[str]:
    """Round-robin over ``lists``, each slug once, at most ``limit``."""
    out: list[str] = []
    seen: set[str] = set()
    for row in itertools.zip_longest(*lists):
        for slug in row:
            if slug is not None and slug not in seen:
                seen.add(slug)
                out.append(slug)
    return out[:limit]


@dataclass(frozen=True)
class Selection:
    """What one turn gets: the ranking, the tools sent, and what they cost."""

    ranked: list[str]
    selected: list[str]
    tool_tokens: int


@dataclass
class _Query:
    weights: dict[str, float] = field(default_factory=dict)
    action: str | None = None
    sure: float = 0.0  # how surely the request asks for ``action`` (0–1)
    hints: frozenset[str] = frozenset()  # app words the request's shapes suggest
    shapes: frozenset[str] = frozenset()  # the kinds of value its shapes give (number, email, …)

    def add(self, term: str, weight: float) -> None:
        if weight > self.weights.get(term, 0.0):
            self.weights[term] = weight


class Embedder(Protocol):
    """Sentence vectors of tools and requests (:class:`lucy.integrations.selection_embed.ToolEmbedder`)."""

    def cached(self, toolkit: str, tools: list[dict[str, Any]]) -> Any | None: ...

    def vectors(self, toolkit: str, tools: list[dict[str, Any]]) -> Any: ...

    def query(self, text: str) -> Any: ...


def _zscores(values: Any) -> Any:
    spread = float(values.std())
    return (values - values.mean()) / (spread if spread > 1e-9 else 1.0)


@functools.lru_cache(maxsize=256)
def _history_tokens(history: str) -> tuple[str, ...]:
    """The thread's recent text as query terms. A turn ranks its request up to three times (whole,
    then task by task) with the same history, and follow-ups in a thread share most of it: the
    tokenising, ~1 ms for 1,500 characters, is done once."""
    return tuple(tokens(history))


class ToolSelector:
    """Ranks and selects tools per turn over per-toolkit indexes built once.

    Args:
        k: at most this many app tools per turn (pinned ones included).
        token_budget: at most this many tokens of tool definitions per turn (pinned ones and the
            ``meta`` definitions passed to :meth:`select` included).
        embedder: sentence vectors to fuse with the lexical scores; None ranks lexically. A
            toolkit is fused only once its vectors exist (cached ones are picked up by
            :meth:`add_toolkit`; :meth:`embed_pending` computes the rest).
        phrasebook: slug → requests people would type for that tool, indexed with it (read when
            a toolkit is added); a tool without an entry is ranked on its definition alone.
    """

    def __init__(self, *, k: int = 20, token_budget: int = 8000, embedder: Embedder | None = None,
                 phrasebook: Mapping[str, Sequence[str]] | None = None) -> None:
        self.k = k
        self.token_budget = token_budget
        self._embedder = embedder
        self._phrasebook: dict[str, Sequence[str]] = dict(phrasebook or {})
        self._indexes: dict[str, _ToolkitIndex] = {}
        self._idf: dict[str, float] = {}
        self._where: dict[str, tuple[str, int]] = {}  # slug → (toolkit, doc position)
        self._distinct: dict[str, frozenset[str]] = {}  # toolkit → words that name it alone
        self._share: dict[tuple[str, str], float] = {}  # (toolkit, name word) → how surely it names it
        self._vocab: dict[str, int] = {}  # words of all indexed tools → count
        self._fixes: dict[str, str] = {}  # unknown word → its spelling fix (or itself)
        self._stacked: dict[tuple[str, ...], Any] = {}  # connected toolkits → their tool vectors, stacked
        self._merged_indexes: dict[tuple[str, ...], _ToolkitIndex] = {}  # connected toolkits → one index

    # -- building -----------------------------------------------------------------------------

    def add_toolkit(self, toolkit: str, tools: list[dict[str, Any]]) -> None:
        """Index ``tools`` (raw Composio tool dicts) of ``toolkit``; a second call is a no-op."""
        key = toolkit.lower()
        if key not in self._indexes:
            self._install(key, tools, None)

    def _install(self, key: str, tools: list[dict[str, Any]], vectors: Any) -> None:
        display = next((str(t["toolkit"].get("name")) for t in tools if isinstance(t.get("toolkit"), dict)), key)
        index = _build_index(key, tools, display, self._phrasebook)
        if self._embedder is not None:
            index.vectors = vectors if vectors is not None else self._embedder.cached(key, index.tools)
        self._indexes[key] = index
        for pos, doc in enumerate(index.docs):  # re-indexing keeps the tools' order: positions hold
            self._where.setdefault(doc.slug, (key, pos))
        self._stacked = {}
        self._merged_indexes = {}
        self._refresh_shared()

    def unphrased(self, toolkit: str) -> list[dict[str, Any]]:
        """The indexed tools of ``toolkit`` that have no phrasebook entry yet."""
        index = self._indexes.get(toolkit.lower())
        return [] if index is None else [t for t in index.tools if str(t["slug"]) not in self._phrasebook]

    def teach(self, toolkit: str, asks: Mapping[str, Sequence[str]]) -> None:
        """Add phrasebook entries and re-index ``toolkit`` with them (its sentence vectors, which
        do not depend on them, are kept)."""
        self._phrasebook.update(asks)
        key = toolkit.lower()
        index = self._indexes.get(key)
        if index is not None:
            self._install(key, index.tools, index.vectors)

    def has_toolkit(self, toolkit: str) -> bool:
        return toolkit.lower() in self._indexes

    def embed_pending(self, toolkits: Iterable[str] | None = None) -> int:
        """Compute the sentence vectors that are not cached yet; returns how many toolkits got them.

        CPU-bound (seconds for a large toolkit the first time, then read from the cache): call
        it off the event loop (``asyncio.to_thread``). Until it runs, rankings are lexical.
        """
        if self._embedder is None:
            return 0
        wanted = self._known(toolkits) if toolkits is not None else sorted(self._indexes)
        done = 0
        for tk in wanted:
            index = self._indexes[tk]
            if index.vectors is None:
                index.vectors = self._embedder.vectors(tk, index.tools)
                done += 1
        if done:
            self._stacked = {}
        return done

    def fused(self, toolkits: Iterable[str]) -> bool:
        """Whether rankings over ``toolkits`` use sentence vectors (all of them are embedded)."""
        known = self._known(toolkits)
        return self._embedder is not None and bool(known) and all(
            self._indexes[tk].vectors is not None for tk in known
        )

    def _refresh_shared(self) -> None:
        """Recompute idf over all indexed tools, and which name words single out one app."""
        df: dict[str, int] = {}
        total = 0
        for index in self._indexes.values():
            total += len(index.docs)
            for term, plist in index.postings.items():
                df[term] = df.get(term, 0) + len(plist)
        self._idf = {t: math.log(1.0 + (total - n + 0.5) / (n + 0.5)) for t, n in df.items()}
        self._vocab = {}
        self._fixes = {}
        for index in self._indexes.values():
            for w, n in index.vocab.items():
                self._vocab[w] = self._vocab.get(w, 0) + n
        name_use: dict[str, int] = {}
        for index in self._indexes.values():
            for w in set(index.name_words):
                name_use[w] = name_use.get(w, 0) + 1
        self._distinct = {
            tk: frozenset({stem(fold(tk).replace("_", "")), *(w for w in ix.name_words if name_use[w] == 1)})
            for tk, ix in self._indexes.items()
        }
        # How surely a name word means its app: "calendar" is only ever Google Calendar's, "doc"
        # also turns up elsewhere. The slug itself ("googledrive") is sure.
        self._share = {}
        for tk, names in self._distinct.items():
            for w in names:
                inside = len(self._indexes[tk].postings.get(w, ()))
                total = df.get(w, 0)
                self._share[(tk, w)] = 1.0 if total == 0 or w == stem(fold(tk).replace("_", "")) else inside / total

    # -- ranking ------------------------------------------------------------------------------

    def _correct(self, word: str) -> str:
        """The vocabulary word one edit away from an unknown ``word`` ("reveiw" → "review")."""
        if len(word) < _MIN_FIX_LEN or word.isdigit() or word in self._vocab or word in REQUEST_VERBS:
            return word
        if word in LEXICON_WORDS or stem(word) in LEXICON_WORDS:  # the lexicon's keys are stems
            return word
        cached = self._fixes.get(word)
        if cached is not None:
            return cached
        best, best_count = word, 0
        if stem(word) not in self._idf:
            for candidate in _edits1(word):
                if candidate in LEXICON_WORDS:
                    best = candidate
                    break
                count = self._vocab.get(candidate, 0)
                if count > best_count:  # the more common word is the likelier meant
                    best, best_count = candidate, count
        if len(self._fixes) >= _MAX_FIXES:
            self._fixes.clear()  # bounded; words of real requests repeat, so it refills fast
        self._fixes[word] = best
        return best

    def _add_written(self, query: _Query, seq: list[str], raw: list[str], trust: list[float]) -> None:
        """The request's own words (each at its ``trust``), their bigrams and their doer/action forms."""
        content: list[str] = []
        for term, r, t in zip(seq, raw, trust, strict=True):
            if r not in STOPWORDS:
                # A bare number ("PR 340", "to 3") names a thing, it is not a tool word.
                query.add(term, _ENTITY_WEIGHT if term.isdigit() else t)
                content.append(term)
        for bigram in _bigrams(content):
            query.add(bigram, _BIGRAM_WEIGHT)
        for term in content:
            for related in _agent_forms(term):
                if related in self._idf:
                    query.add(related, _DERIVED_WEIGHT)

    def _query(self, text: str, history: str) -> tuple[_Query, set[str]]:
        """Weighted query terms, and the terms that may name an app."""
        query = _Query()
        parsed = parse(text)
        query.hints = frozenset(stem(w) for w in parsed.hinted)
        query.shapes = shape_kinds(parsed.entities)
        written = words(parsed.intent)
        names = proper_names(parsed.intent)
        raw = [w if w in names else self._correct(w) for w in written]
        query.action, query.sure = action_cue(raw, clause_starts(parsed.intent))
        seq = [stem(w) for w in raw]
        content = [w for w, r in zip(seq, raw, strict=True) if r not in STOPWORDS]
        naming = set(content) | {stem(w) for w in parsed.apps}
        # A spelling fix is a guess ("contract" is a word, not a typo of "contact"): the fixed word
        # and what it expands to weigh as one.
        trust = [1.0 if r == w else _FIX_WEIGHT for r, w in zip(raw, written, strict=True)]
        self._add_written(query, seq, raw, trust)
        for term, weight in expand(seq, trust):
            query.add(term, weight * _EXPANSION_SCALE)
            if weight >= EXACT:
                naming.add(term)
        for word in parsed.entities:
            query.add(stem(word), _ENTITY_WEIGHT)
        for word in parsed.apps:
            query.add(stem(word), _ENTITY_WEIGHT)
        for term in tokens(parsed.payload):
            query.add(term, _PAYLOAD_WEIGHT)
        if history:
            for term in _history_tokens(history):
                query.add(term, _HISTORY_WEIGHT)
        return query, naming

    def _app_bonus(self, naming: set[str], toolkits: list[str], hints: frozenset[str]) -> dict[str, float]:
        """Score added to all tools of an app the request names ("in drive", "on linkedin", "gh")."""
        bonus: dict[str, float] = {}
        for tk in toolkits:
            named = max((self._share.get((tk, w), 0.0) for w in self._distinct.get(tk, ()) if w in naming),
                        default=0.0)
            hinted = max((self._share.get((tk, w), 0.0) for w in self._distinct.get(tk, ()) if w in hints),
                         default=0.0)
            bonus[tk] = _MENTION_BONUS * max(named, _SHAPE_HINT * hinted)
        return bonus

    def _scores(self, text: str, toolkits: list[str], history: str) -> tuple[Any, list[str]]:
        """BM25F scores (float64, plus the app, action and catalog nudges) of ``toolkits``' tools,
        toolkit by toolkit in order, and their slugs."""
        import numpy as np

        query, naming = self._query(text, history)
        bonus = self._app_bonus(naming, toolkits, query.hints)
        weights = [(term, qw * self._idf.get(term, 0.0)) for term, qw in query.weights.items()]
        if not toolkits:
            return np.zeros(0), []
        merged = self._merged(toolkits)
        # Each doc's additions come in the order a loop over its postings would make them, so
        # the scores are the same, bit for bit, as toolkit by toolkit.
        acc = merged.base + np.repeat([bonus[tk] for tk in toolkits], merged.sizes)
        if query.action is not None and query.action in merged.does:
            acc += (_ACTION_BONUS * query.sure) * merged.does[query.action]
        for kind in query.shapes & merged.takes.keys():
            # Shared out so a request with many shapes does not outweigh one with a single shape.
            acc += (_SLOT_BONUS / len(query.shapes)) * merged.takes[kind]
        for term, w in weights:
            hit = merged.arrays.get(term)
            if hit is not None:
                acc[hit[0]] += w * hit[1]
        return acc, merged.slugs

    def _merged(self, toolkits: list[str]) -> _ToolkitIndex:
        """One index over the connected toolkits (kept per set): a term costs one numpy add, not
        one per toolkit. Only the fields scoring reads are filled in."""
        key = tuple(toolkits)
        found = self._merged_indexes.get(key)
        if found is not None:
            return found
        one = len(toolkits) == 1
        found = self._indexes[toolkits[0]] if one else _merge([self._indexes[tk] for tk in toolkits])
        if len(self._merged_indexes) >= _STACKED_MEMORY:
            self._merged_indexes = {}
        self._merged_indexes[key] = found
        return found

    def _known(self, toolkits: Iterable[str]) -> list[str]:
        return sorted({tk.lower() for tk in toolkits} & self._indexes.keys())

    def _ranked(self, text: str, known: list[str], history: str, limit: int) -> list[str]:
        """Lexical scores, fused with sentence similarity when every toolkit has vectors.

        Both are standardised over the connected tools (z-scores) so neither scale dominates;
        the lexical side leads (:data:`_EMBED_WEIGHT` < 1) because it knows the app
        vocabulary, shapes and actions, while the vectors rescue requests whose tool words
        are implicit.
        """
        import numpy as np

        lexical, slugs = self._scores(text, known, history)
        if not slugs or not self.fused(known):
            # Best first, ties to the later slug in sort order (as heapq.nlargest on (score, slug)).
            cut = np.partition(lexical, len(lexical) - limit)[len(lexical) - limit] if len(lexical) > limit else -np.inf
            near = np.flatnonzero(lexical >= cut)
            return [slug for _, slug in heapq.nlargest(limit, ((float(lexical[i]), slugs[i]) for i in near))]
        assert self._embedder is not None
        query = self._embedder.query(embedding_text(text))
        # einsum, not BLAS: a matrix-vector product this small runs 3-5x slower when BLAS hands
        # it to its threads on a busy machine, and a thread limit is process-wide state.
        similarity = np.einsum("ij,j->i", self._vectors(known), query)
        combined = _zscores(lexical) + _EMBED_WEIGHT * _zscores(similarity.astype(np.float64))
        top = np.argsort(-combined, kind="stable")[:limit]
        return [slugs[int(i)] for i in top]

    def _vectors(self, known: list[str]) -> Any:
        """The tool vectors of ``known`` (all embedded), stacked in ranking order, kept per set."""
        key = tuple(known)
        stacked = self._stacked.get(key)
        if stacked is None:
            import numpy as np

            if len(self._stacked) >= _STACKED_MEMORY:
                self._stacked = {}
            stacked = self._stacked[key] = np.concatenate([self._indexes[tk].vectors for tk in known])
        return stacked

    def rank(self, text: str, toolkits: Iterable[str], *, history: str = "", limit: int = 50) -> list[str]:
        """Slugs of the tools of ``toolkits`` that best fit ``text``, best first.

        A request with two tasks ("file an issue … and then put a reminder on my calendar") is
        also ranked task by task, and the rankings take turns, so each task gets the first
        places rather than the one whose words dominate the whole request.
        """
        known = self._known(toolkits)
        whole = self._ranked(text, known, history, limit)
        tasks = split_tasks(text)
        if not tasks:
            return whole
        return _interleave([whole, *(self._ranked(t, known, history, limit) for t in tasks)], limit)

    # -- selecting ----------------------------------------------------------------------------

    def tokens_of(self, slug: str, definitions: Mapping[str, ToolDef] | None = None) -> int:
        """Estimated tokens of ``slug``'s definition (the given one, else the plain conversion)."""
        if definitions is not None and slug in definitions:
            return estimate_tokens(definitions[slug])
        where = self._where.get(slug)
        return self._indexes[where[0]].docs[where[1]].tokens if where else 0

    def toolkit_of(self, slug: str) -> str | None:
        where = self._where.get(slug)
        return where[0] if where else None

    def select(
        self,
        text: str,
        toolkits: Iterable[str],
        *,
        history: str = "",
        pinned: Iterable[str] = (),
        definitions: Mapping[str, ToolDef] | None = None,
        meta: Iterable[ToolDef] = (),
    ) -> Selection:
        """The tools to send this turn: ``pinned`` first, then the best ranked, within K and budget.

        Args:
            pinned: tools used earlier in the thread; kept (if their app is still connected) and
                counted against K and the budget.
            definitions: slug → the definition that will really be sent; tokens are counted on it.
            meta: definitions always sent beside the app tools (``meta_tools(...)``); their tokens
                are reserved from the budget and included in ``tool_tokens``. K counts app tools only.
        """
        pinned = list(pinned)  # read twice below
        connected = self._known(toolkits)
        allowed = set(connected)
        ranked = self.rank(text, connected, history=history, limit=max(50, self.k * 3))
        spent = sum(estimate_tokens(d) for d in meta)
        selected: list[str] = []
        seen: set[str] = set()  # slugs and alias groups already in
        pinned_set = set(pinned)
        for candidate in [*pinned, *ranked]:
            toolkit = self.toolkit_of(candidate)
            slug = candidate
            if toolkit in allowed and candidate not in pinned_set:
                # The model should call what Composio maintains; the successor takes the slot.
                successor = self._indexes[toolkit].successor.get(candidate)
                if successor is not None and (definitions is None or successor in definitions):
                    slug = successor
            if len(selected) >= self.k or slug in seen or toolkit not in allowed:
                continue
            group = self._indexes[toolkit].alias_of.get(slug, slug) if toolkit else slug
            if group in seen and slug not in pinned_set:
                continue  # its alias is already in
            cost = self.tokens_of(slug, definitions)
            if spent + cost > self.token_budget:
                continue  # a smaller, lower-ranked tool may still fit
            seen.update((slug, group))
            selected.append(slug)
            spent += cost
        return Selection(ranked=ranked, selected=selected, tool_tokens=spent)


def selector_from_settings(settings: Settings) -> ToolSelector:
    """The selector a running Lucy uses: fused with the sentence model when it is installed,
    lexical (said once in the log) when it is not or ``LUCY_EMBEDDING_MODEL=off``. Loading the
    model reads ~90 MB: call this at start-up, not per turn."""
    from lucy.integrations.selection_embed import ModelUnavailable, embedder_for
    from lucy.log import get_logger

    try:
        embedder = embedder_for(settings.data_dir, settings.embedding_model)
    except ModelUnavailable as exc:
        get_logger("lucy.integrations.selection").info("tool selection is lexical: no sentence model", reason=str(exc))
        embedder = None
    from lucy.integrations import phrasebook

    return ToolSelector(embedder=embedder, phrasebook=phrasebook.load(phrasebook.phrasebook_dirs(settings.data_dir)))
