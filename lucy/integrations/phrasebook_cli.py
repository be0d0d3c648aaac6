"""`lucy tools phrasebook`: write phrasebooks for toolkits with the configured model.

The tools come from ``--catalog`` (Composio tool lists, as for ``lucy tools rank``), or, without
it, from Composio itself for each ``--toolkit`` (``COMPOSIO_API_KEY``). For each toolkit of
the catalog (or only those named with ``--toolkit``), tools are sent to the
model in batches with their definitions; it answers with four requests a person would type for
each (:mod:`lucy.integrations.phrasebook`). Files go to ``--out`` (default
``$LUCY_DATA_DIR/phrasebooks``) after every five batches, so an interrupted run resumes where
it stopped, and tools that already have asks are not asked again. A batch the model answers
with something unusable is logged (stderr) and left for the next run; nothing half-parsed is kept.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucy.integrations.phrasebook import local_dir
from lucy.integrations.phrasebook_writer import build
from lucy.integrations.rank_cli import load_catalog

if TYPE_CHECKING:
    from lucy.config import Settings


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
    target = Path(out) if out else local_dir(settings.data_dir)

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
