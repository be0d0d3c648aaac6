"""The tool definitions a workspace's model gets for one turn, and mid-turn tool search.

Only the toolkits the workspace has connected contribute tools (the registry decides), and a
request never carries more than 128 (OpenAI's hard limit). With a selector (issue 6's
:class:`lucy.integrations.selection.ToolSelector`, passed in) the tools are the best few for the
request within a token budget; without one, the first 128 in a fixed order. The ``search_tools``
and ``connect_app`` meta-tools ride along in both cases.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lucy.core.types import ToolDef
from lucy.integrations.registry import IntegrationRegistry
from lucy.integrations.schemas import SanitizedTool, ToolkitTools, ToolSchemaCache
from lucy.log import get_logger

log = get_logger("lucy.integrations.toolset")

MAX_TOOLS = 128  # OpenAI rejects more (array_above_max_length)
SEARCH_LIMIT = 8
MAPS_CACHED = 256  # sets of loaded toolkits whose lookups are kept


class SelectionLike(Protocol):
    @property
    def selected(self) -> list[str]: ...


class Selector(Protocol):
    """What the toolset needs of a tool selector (issue 6's ToolSelector has it)."""

    def add_toolkit(self, toolkit: str, tools: list[dict[str, Any]]) -> None: ...

    def has_toolkit(self, toolkit: str) -> bool: ...

    def unphrased(self, toolkit: str) -> list[dict[str, Any]]: ...

    def teach(self, toolkit: str, asks: Mapping[str, Sequence[str]]) -> None: ...

    def embed_pending(self, toolkits: Iterable[str] | None = None) -> int:
        """Compute the sentence vectors not cached yet (CPU-bound, seconds; 0 without a model)."""
        ...

    def rank(self, text: str, toolkits: Iterable[str], *, history: str = "", limit: int = 50) -> list[str]: ...

    def select(
        self,
        text: str,
        toolkits: Iterable[str],
        *,
        history: str = "",
        pinned: Iterable[str] = (),
        definitions: Mapping[str, ToolDef] | None = None,
        meta: Iterable[ToolDef] = (),
    ) -> SelectionLike: ...


# Writes the asks of a toolkit's tools (``PhrasebookWriter``): toolkit, its tools → slug → asks.
PhraseWriter = Callable[[str, list[dict[str, Any]]], Awaitable[Mapping[str, Sequence[str]]]]


def default_meta_tools(unconnected: Iterable[str]) -> list[ToolDef]:
    from lucy.integrations.selection import meta_tools

    return meta_tools(unconnected)


def capped(toolkits: Sequence[ToolkitTools], limit: int) -> list[SanitizedTool]:
    """At most ``limit`` tools, deterministically: toolkits take turns (so every connected app is
    represented), each in Composio's order, deprecated tools last."""
    queues = [
        sorted(tk.tools, key=lambda t: t.deprecated)  # stable: keeps Composio's order otherwise
        for tk in sorted(toolkits, key=lambda tk: tk.toolkit)
    ]
    chosen: list[SanitizedTool] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < limit:
                chosen.append(queue[depth])
        depth += 1
    return chosen


_WORD = re.compile(r"[a-z0-9]+")


def lexical_rank(query: str, tools: Iterable[SanitizedTool], limit: int) -> list[SanitizedTool]:
    """A small fallback ranking for search without a selector: query words found in the slug
    count double, in the description once."""
    words = {w for w in _WORD.findall(query.lower()) if len(w) > 2}
    scored: list[tuple[float, int, SanitizedTool]] = []
    for position, tool in enumerate(tools):
        slug_words = set(_WORD.findall(tool.slug.lower().replace("_", " ")))
        description = str(tool.definition["function"].get("description", "")).lower()
        score = sum(2.0 if w in slug_words else (1.0 if w in description else 0.0) for w in words)
        if score > 0:
            scored.append((-score, position, tool))
    return [tool for _, _, tool in sorted(scored, key=lambda s: (s[0], s[1]))[:limit]]


@dataclass(frozen=True)
class _Maps:
    definitions: dict[str, ToolDef]  # slug → what the model is sent
    changed: dict[str, ToolDef]  # slug → definitions sanitising changed (see _changed)
    slug_of: dict[str, str]  # sent name → slug


class WorkspaceToolset:
    """Implements :class:`lucy.core.types.Toolset` and :class:`lucy.core.types.ToolCatalog`.

    Args:
        registry: which toolkits each workspace has connected.
        schemas: the sanitised schemas of every toolkit.
        selector: ranks tools per request; None → the first 128 in a fixed order.
        connectable: toolkits that could be connected (``Connections.known_toolkits``), for the
            ``connect_app`` enum.
        meta_tools: builds the meta-tool definitions; None → no meta-tools.
        phrasebook_writer: writes the phrasebook of a toolkit whose tools have none, once per
            process, in the background (turns meanwhile rank on the definitions); None → never.
    """

    def __init__(
        self,
        registry: IntegrationRegistry,
        schemas: ToolSchemaCache,
        *,
        selector: Selector | None = None,
        connectable: Callable[[], Iterable[str]] = lambda: (),
        meta_tools: Callable[[Iterable[str]], list[ToolDef]] | None = default_meta_tools,
        max_tools: int = MAX_TOOLS,
        search_limit: int = SEARCH_LIMIT,
        phrasebook_writer: PhraseWriter | None = None,
    ) -> None:
        self._registry = registry
        self._schemas = schemas
        self._selector = selector
        self._connectable = connectable
        self._meta_tools = meta_tools
        self._max_tools = min(max_tools, MAX_TOOLS)
        self._search_limit = search_limit
        self._changed_cache: dict[tuple[str, float], dict[str, ToolDef]] = {}
        self._maps_cache: dict[tuple[tuple[str, float], ...], _Maps] = {}
        # Selection runs in worker threads (it is CPU work); the selector's indexes are shared, so
        # building them and reading them never overlap.
        self._selector_lock = threading.Lock()
        self._embedding: list[threading.Thread] = []
        self._writer = phrasebook_writer
        self._phrasing: dict[str, asyncio.Task[None]] = {}  # toolkit → its phrasebook being written, kept

    async def _loaded(self, workspace: str) -> list[ToolkitTools]:
        active = await self._registry.active_toolkits(workspace)
        loaded = await self._schemas.toolkits(active)
        if self._selector is not None:
            missing = [tk for tk in loaded if not self._selector.has_toolkit(tk.toolkit)]
            if missing:
                unphrased = await asyncio.to_thread(self._index, missing)
                self._phrase_later(unphrased)
        return loaded

    def _index(self, toolkits: list[ToolkitTools]) -> dict[str, list[dict[str, Any]]]:
        """Build the selector's index of new toolkits (CPU-bound: runs in a thread); returns the
        tools of each that have no phrasebook entry."""
        assert self._selector is not None
        with self._selector_lock:
            for tk in toolkits:
                if not self._selector.has_toolkit(tk.toolkit):
                    self._selector.add_toolkit(tk.toolkit, [dict(r) for r in tk.raw])
            unphrased = {tk.toolkit: self._selector.unphrased(tk.toolkit) for tk in toolkits}
        self._embed_later([tk.toolkit for tk in toolkits])
        return unphrased

    def _embed_later(self, toolkits: list[str]) -> None:
        # Sentence vectors take seconds for a large toolkit the first time (then come from the
        # disk cache); rankings stay lexical until they are ready, so no turn waits for them.
        # A daemon thread, not the default executor: shutdown must not wait a minute for it.
        assert self._selector is not None
        thread = threading.Thread(target=self._embed, args=(self._selector.embed_pending, toolkits), daemon=True)
        self._embedding = [t for t in self._embedding if t.is_alive()] + [thread]
        thread.start()

    def _phrase_later(self, unphrased: dict[str, list[dict[str, Any]]]) -> None:
        """Start writing the phrasebook of each toolkit with unphrased tools, once per process."""
        for toolkit, tools in unphrased.items():
            if self._writer is not None and tools and toolkit not in self._phrasing:
                self._phrasing[toolkit] = asyncio.create_task(self._phrase(toolkit, tools))

    async def _phrase(self, toolkit: str, tools: list[dict[str, Any]]) -> None:
        assert self._writer is not None and self._selector is not None
        log.info("writing a phrasebook", toolkit=toolkit, tools=len(tools))
        try:
            asks = await self._writer(toolkit, tools)
        except Exception:  # a background nicety: selection simply stays on the definitions
            log.exception("writing the phrasebook failed; tool selection uses the definitions", toolkit=toolkit)
            return
        wanted = {str(t["slug"]) for t in tools}
        learned = {slug: a for slug, a in asks.items() if slug in wanted}
        if learned:
            await asyncio.to_thread(self._teach, toolkit, learned)
        log.info("phrasebook written", toolkit=toolkit, tools=len(tools), with_asks=len(learned))

    def _teach(self, toolkit: str, asks: Mapping[str, Sequence[str]]) -> None:
        assert self._selector is not None
        with self._selector_lock:
            self._selector.teach(toolkit, asks)
        self._embed_later([toolkit])  # vectors still being computed went to the index it replaced

    async def aclose(self) -> None:
        """Stop phrasebooks still being written (what was written so far is kept on disk)."""
        tasks = list(self._phrasing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _embed(self, embed_pending: Callable[[list[str]], int], toolkits: list[str]) -> None:
        try:
            embed_pending(toolkits)
        except Exception:  # a broken model must never break selection: it stays lexical
            log.exception("computing tool vectors failed; tool selection stays lexical", toolkits=toolkits)

    def _select(self, *args: Any, **kwargs: Any) -> SelectionLike:
        assert self._selector is not None
        with self._selector_lock:
            return self._selector.select(*args, **kwargs)

    def _rank(self, *args: Any, **kwargs: Any) -> list[str]:
        assert self._selector is not None
        with self._selector_lock:
            return self._selector.rank(*args, **kwargs)

    def _meta(self, connected: Iterable[str]) -> list[ToolDef]:
        if self._meta_tools is None:
            return []
        unconnected = set(self._connectable()) - set(connected)
        return self._meta_tools(sorted(unconnected))

    def _changed(self, toolkit: ToolkitTools) -> dict[str, ToolDef]:
        """The definitions sanitising changed (names, repaired schemas, cut descriptions).

        The selector counts tokens of a definition it is given on every call (~20 µs each) and
        has the plain conversion of every other tool counted already; handing it only the few
        that differ keeps a turn's selection at about a millisecond instead of ~18 ms for GitHub.
        """
        key = (toolkit.toolkit, toolkit.loaded_at)
        found = self._changed_cache.get(key)
        if found is None:
            from lucy.integrations.selection import plain_definition

            found = {
                t.slug: t.definition for t, raw in zip(toolkit.tools, toolkit.raw, strict=True)
                if t.definition != plain_definition(raw)
            }
            self._changed_cache = {k: v for k, v in self._changed_cache.items() if k[0] != toolkit.toolkit}
            self._changed_cache[key] = found
        return found

    def _maps(self, loaded: list[ToolkitTools]) -> _Maps:
        """Lookups over one set of loaded toolkits, built once: ~1,000 tools per turn otherwise."""
        key = tuple((tk.toolkit, tk.loaded_at) for tk in loaded)
        found = self._maps_cache.get(key)
        if found is None:
            found = _Maps(
                definitions={t.slug: t.definition for tk in loaded for t in tk.tools},
                changed={slug: d for tk in loaded for slug, d in self._changed(tk).items()},
                slug_of={t.name: t.slug for tk in loaded for t in tk.tools},
            )
            if len(self._maps_cache) >= MAPS_CACHED:
                self._maps_cache.clear()  # reloaded toolkits leave stale keys behind; start over
            self._maps_cache[key] = found
        return found

    async def tools_for_turn(
        self, workspace: str, request: str, history_text: str = "", *, pinned: Sequence[str] = ()
    ) -> list[ToolDef]:
        """The turn's tools; ``pinned`` (tool names called earlier in the thread) stay selected."""
        loaded = await self._loaded(workspace)
        meta = self._meta(tk.toolkit for tk in loaded)
        if self._selector is None:
            tools = [t.definition for t in capped(loaded, self._max_tools - len(meta))]
        else:
            maps = self._maps(loaded)
            selection = await asyncio.to_thread(
                self._select, request, [tk.toolkit for tk in loaded], history=history_text,
                pinned=[maps.slug_of.get(name, name) for name in pinned], definitions=maps.changed, meta=meta,
            )
            tools = [maps.definitions[s] for s in selection.selected if s in maps.definitions]
        chosen = [*tools[: self._max_tools - len(meta)], *meta]
        log.debug("tools_for_turn", workspace=workspace, tools=len(chosen), toolkits=[tk.toolkit for tk in loaded])
        return chosen

    async def search(self, workspace: str, query: str, exclude: frozenset[str] = frozenset()) -> list[ToolDef]:
        """Up to ``search_limit`` more tools of the workspace's connected apps for ``query``,
        leaving out names already in the turn (``exclude``)."""
        loaded = await self._loaded(workspace)
        by_slug = {t.slug: t for tk in loaded for t in tk.tools}
        if self._selector is not None:
            ranked = await asyncio.to_thread(
                self._rank, query, [tk.toolkit for tk in loaded], limit=self._search_limit + len(exclude)
            )
            candidates = [by_slug[s] for s in ranked if s in by_slug]
        else:
            candidates = lexical_rank(query, by_slug.values(), self._search_limit + len(exclude))
        found = [t.definition for t in candidates if t.name not in exclude and t.slug not in exclude]
        return found[: self._search_limit]


async def get_workspace_tools(
    workspace: str,
    registry: IntegrationRegistry,
    schemas: ToolSchemaCache,
    *,
    request: str = "",
    selector: Selector | None = None,
    limit: int = MAX_TOOLS,
) -> list[ToolDef]:
    """OpenAI-format tool definitions of ``workspace``'s active toolkits only, at most ``limit``
    (≤ 128), without meta-tools."""
    toolset = WorkspaceToolset(registry, schemas, selector=selector, meta_tools=None, max_tools=limit)
    return await toolset.tools_for_turn(workspace, request)
