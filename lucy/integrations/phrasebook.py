"""The phrasebook: for each tool, a few requests people would type to get its job done.

Tool definitions speak the API's language ("Create a review for a pull request"); people don't
("LGTM on #530, approve it"). A phrasebook entry bridges the two from the tool's side: four
short requests written for each tool from its definition alone (never from anyone's real
requests), indexed as one more field of the tool (:mod:`lucy.integrations.selection`). This is
the "synthetic queries per tool" method of doc2query and Re-Invoke, done once per toolkit.

Phrasebooks are JSON files, one per toolkit: ``{"toolkit", "source", "asks": {slug: [str, …]}}``.
Lucy ships them for the toolkits of its catalog (``lucy/integrations/phrasebooks``); ``lucy tools
phrasebook`` writes them for any other toolkit with the configured model into
``$LUCY_DATA_DIR/phrasebooks``, which wins over the shipped ones. A tool without an entry is
ranked on its definition alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).with_name("phrasebooks")
ASKS_PER_TOOL = 4
_MAX_ASK_CHARS = 200


def local_dir(data_dir: Path) -> Path:
    """Where this deployment keeps the phrasebooks it wrote (``lucy tools phrasebook``, or itself)."""
    return data_dir / "phrasebooks"


def phrasebook_dirs(data_dir: Path) -> list[Path]:
    """Where phrasebooks are read from, later ones winning: the shipped ones, then the data dir's."""
    return [SHIPPED, local_dir(data_dir)]


def clean_asks(value: Any) -> tuple[str, ...]:
    """The usable asks of one entry: strings, trimmed, bounded; anything else is dropped."""
    if not isinstance(value, list):
        return ()
    asks = [" ".join(str(a).split())[:_MAX_ASK_CHARS] for a in value if isinstance(a, str)]
    return tuple(a for a in asks if a)[: 2 * ASKS_PER_TOOL]


def read_file(path: Path) -> dict[str, tuple[str, ...]]:
    """slug → asks of one phrasebook file; a file that is not a phrasebook reads as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("asks") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return {}
    return {str(slug): asks for slug, value in entries.items() if (asks := clean_asks(value))}


def load(dirs: Iterable[Path]) -> dict[str, tuple[str, ...]]:
    """slug → asks from every ``*.json`` of ``dirs``; an entry in a later directory wins."""
    merged: dict[str, tuple[str, ...]] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
            merged.update(read_file(path))
    return merged


def write_file(path: Path, toolkit: str, source: str, asks: Mapping[str, Sequence[str]]) -> None:
    """Write one toolkit's phrasebook (sorted, so regenerating it diffs cleanly), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"toolkit": toolkit, "source": source, "asks": {slug: list(asks[slug]) for slug in sorted(asks)}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
