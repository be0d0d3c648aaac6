"""`lucy tools phrasebook`: write phrasebooks for toolkits with the configured model.

The tools come from ``--catalog`` (Composio tool lists, as for ``lucy tools rank``), or, without
it, from Composio itself for each ``--toolkit`` (``COMPOSIO_API_KEY``). For each toolkit of
the catalog (or only those named with ``--toolkit``), tools are sent to the
model in batches with their definitions; it answers with four requests a person would type for
each (:mod:`lucy.integrations.phrasebook`). Files go to ``--out`` (default
``$LUCY_DATA_DIR/phrasebooks``) after every batch, so an interrupted run resumes where it
stopped, and tools that already have asks are not asked again. A batch the model answers with
something unusable is said on stderr and left for the next run; nothing half-parsed is kept.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucy.integrations import phrasebook
from lucy.integrations.rank_cli import load_catalog

if TYPE_CHECKING:
    from lucy.config import Settings
    from lucy.core.llm import LLM

BATCH = 20
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
    """Asks for ``tools``, ``batch`` tools per model call; a failed batch is skipped (said on stderr)."""
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
            print(f"lucy tools phrasebook: the model failed on {slugs[0]}…: {exc}", file=sys.stderr)
            continue
        got = parse_reply(reply.text, slugs)
        if len(got) < len(slugs):
            print(f"lucy tools phrasebook: no usable asks for {len(slugs) - len(got)} of {slugs[0]}…; "
                  "run again to retry them", file=sys.stderr)
        found.update(got)
    return found


async def build(llm: LLM, catalog: dict[str, list[dict[str, Any]]], out: Path, source: str,
                *, batch: int = BATCH) -> dict[str, tuple[int, int]]:
    """Write (or complete) ``out/<toolkit>.json`` for every toolkit; toolkit → (tools, with asks)."""
    summary: dict[str, tuple[int, int]] = {}
    for toolkit, tools in catalog.items():
        path = out / f"{toolkit}.json"
        known = phrasebook.read_file(path)
        missing = [t for t in tools if t.get("slug") and str(t["slug"]) not in known]
        for start in range(0, len(missing), batch * 5):  # saved every few batches: a run can stop anywhere
            known.update(await write_asks(llm, missing[start : start + batch * 5], batch=batch))
            phrasebook.write_file(path, toolkit, source, known)
        summary[toolkit] = (len(tools), sum(1 for t in tools if str(t.get("slug")) in known))
    return summary


async def from_composio(settings: Settings, toolkits: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The tools of ``toolkits`` as Composio serves them (the same objects a catalog file holds)."""
    from lucy.integrations.composio_client import client_from_settings

    client = await asyncio.to_thread(client_from_settings, settings)
    try:
        return {tk.lower(): list(await client.list_tools(toolkit=tk.lower())) for tk in toolkits}
    finally:
        await client.aclose()


def _from_catalog(catalog_path: str, toolkits: Sequence[str]) -> dict[str, list[dict[str, Any]]] | str:
    """The catalog's toolkits (only ``toolkits`` when named), or what is wrong with the request."""
    try:
        catalog = load_catalog(catalog_path)
    except (OSError, ValueError) as exc:
        return f"cannot read the catalog: {exc}"
    wanted = {t.lower() for t in toolkits}
    unknown = wanted - catalog.keys()
    if unknown:
        return f"not in the catalog: {', '.join(sorted(unknown))}"
    return {tk: tools for tk, tools in catalog.items() if not wanted or tk in wanted}


def run_phrasebook(settings: Settings, catalog_path: str | None, toolkits: Sequence[str], out: str | None) -> int:
    from lucy.core.llm import LiteLLM, LLMConfig

    if catalog_path is None and not toolkits:
        print("lucy tools phrasebook: name a --catalog, or the --toolkit(s) to fetch from Composio", file=sys.stderr)
        return 2
    catalog: dict[str, list[dict[str, Any]]] = {}
    if catalog_path is not None:
        read = _from_catalog(catalog_path, toolkits)
        if isinstance(read, str):
            print(f"lucy tools phrasebook: {read}", file=sys.stderr)
            return 2
        catalog = read
    target = Path(out) if out else settings.data_dir / "phrasebooks"

    async def go(catalog: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[int, int]]:
        if catalog_path is None:
            catalog = await from_composio(settings, toolkits)
        llm = LiteLLM(LLMConfig.from_settings(settings))
        try:
            return await build(llm, catalog, target, settings.llm_model)
        finally:
            await llm.aclose()

    summary = asyncio.run(go(catalog))  # a Composio or model failure is a LucyError: `lucy` says it
    for toolkit, (total, done) in summary.items():
        print(f"{toolkit}: {done} of {total} tools have asks ({target / (toolkit + '.json')})")
    return 0 if all(done == total for total, done in summary.values()) else 1
