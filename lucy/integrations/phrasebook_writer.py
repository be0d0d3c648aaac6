"""Writing phrasebooks (:mod:`lucy.integrations.phrasebook`) with the configured model.

Tools are sent in batches with their definitions (name, the opening of the description, the
parameter names); the model answers with four requests a person would type for each. Only what
parses as asks for the batch's own slugs is kept; a batch answered with anything else is said
in the log (stderr for the command), and left for the next run. Used by ``lucy tools
phrasebook`` and, for toolkits that have none, by a running Lucy in the background
(:class:`~lucy.integrations.toolset.WorkspaceToolset`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucy.integrations import phrasebook
from lucy.log import get_logger

if TYPE_CHECKING:
    from lucy.core.llm import LLM

log = get_logger("lucy.integrations.phrasebook")

BATCH = 20
_BATCHES_PER_SAVE = 5  # a file write every hundred tools: an interrupted run loses little
_DESCRIPTION_CHARS = 400

INSTRUCTIONS = f"""You write a phrasebook for a Slack assistant's tool index. For each API tool below, \
write {phrasebook.ASKS_PER_TOOL} short requests (under 20 words each) that a person in a work Slack would \
type to get exactly that tool's job done:
1. a plain request in everyday words, not the API's words where people say it differently;
2. a casual, terse chat message;
3. a question or an indirect ask where that fits ("is … still …?", "can you check …", "we should …");
4. a request with concrete made-up details the tool needs (a repo, an id, an email, a date).
Each must mean this tool rather than its neighbours (list vs get one, repository vs organization, \
create vs update): put the distinguishing detail in the wording. English only.
Answer with one JSON object and nothing else: {{"<slug>": ["…", "…", "…", "…"], …}} with every slug below."""


def tool_brief(tool: dict[str, Any]) -> dict[str, Any]:
    """What the model reads of a tool: enough to know what it does, not its whole schema."""
    props = (tool.get("input_parameters") or {}).get("properties") or {}
    return {"slug": tool["slug"], "name": tool.get("name"),
            "description": str(tool.get("description") or "")[:_DESCRIPTION_CHARS],
            "params": list(props)[:12] if isinstance(props, dict) else []}


_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


def parse_reply(text: str, slugs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The asks the model gave for ``slugs`` (a fenced or bare JSON object); others are ignored."""
    match = _JSON_OBJECT.search(text)
    if match is None:
        return {}
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    wanted = set(slugs)
    return {slug: asks for slug, value in data.items() if slug in wanted and (asks := phrasebook.clean_asks(value))}


async def write_asks(llm: LLM, tools: list[dict[str, Any]], *, batch: int = BATCH) -> dict[str, tuple[str, ...]]:
    """Asks for ``tools``, ``batch`` tools per model call; a failed batch is skipped (and logged)."""
    from lucy.errors import LLMError

    found: dict[str, tuple[str, ...]] = {}
    for start in range(0, len(tools), batch):
        part = tools[start : start + batch]
        slugs = [str(t["slug"]) for t in part]
        messages = [{"role": "system", "content": INSTRUCTIONS},
                    {"role": "user", "content": "\n".join(json.dumps(tool_brief(t), ensure_ascii=False) for t in part)}]
        try:
            reply = await llm.complete(messages, [], tool_choice="none")
        except LLMError as exc:
            log.warning("the model failed to write asks; run again to retry them", first=slugs[0],
                        tools=len(slugs), error=str(exc))
            continue
        got = parse_reply(reply.text, slugs)
        if len(got) < len(slugs):
            log.warning("no usable asks for some tools; run again to retry them", first=slugs[0],
                        missing=len(slugs) - len(got))
        found.update(got)
    return found


class PhrasebookWriter:
    """Completes the phrasebooks kept in ``directory`` (one ``<toolkit>.json`` each) with ``llm``.

    Calling it with a toolkit's tools asks the model for the ones that have no asks yet, saves
    after every few batches (an interrupted run resumes) and returns the toolkit's asks.
    """

    def __init__(self, llm: LLM, directory: Path, source: str, *, batch: int = BATCH) -> None:
        self._llm = llm
        self._directory = directory
        self._source = source
        self._batch = batch

    async def __call__(self, toolkit: str, tools: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
        path = self._directory / f"{toolkit}.json"
        known = await asyncio.to_thread(phrasebook.read_file, path)
        missing = [t for t in tools if t.get("slug") and str(t["slug"]) not in known]
        step = self._batch * _BATCHES_PER_SAVE
        for start in range(0, len(missing), step):
            known.update(await write_asks(self._llm, missing[start : start + step], batch=self._batch))
            await asyncio.to_thread(phrasebook.write_file, path, toolkit, self._source, dict(known))
        return known


async def build(llm: LLM, catalog: dict[str, list[dict[str, Any]]], out: Path, source: str,
                *, batch: int = BATCH) -> dict[str, tuple[int, int]]:
    """Write (or complete) ``out/<toolkit>.json`` for every toolkit; toolkit → (tools, with asks)."""
    writer = PhrasebookWriter(llm, out, source, batch=batch)
    summary: dict[str, tuple[int, int]] = {}
    for toolkit, tools in catalog.items():
        known = await writer(toolkit, tools)
        summary[toolkit] = (len(tools), sum(1 for t in tools if str(t.get("slug")) in known))
    return summary
