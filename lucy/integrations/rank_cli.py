"""`lucy tools rank`: offline tool selection over a catalog, JSONL in, JSONL out.

Reads Composio tool lists (a JSON file, or a directory of them), then for each request line
``{"id", "text", "connected", ["history", "pinned"]}`` prints
``{"id", "ranked", "selected", "tool_tokens"}``. ``tool_tokens`` counts what a turn would send:
the selected app tools plus the two meta-tools. No network, no keys, no SDK imports.

With the sentence model in place (``scripts/_setup.sh`` puts it in ``.lucy/models``; see
``LUCY_EMBEDDING_MODEL``) rankings fuse lexical and sentence similarity; the vectors of the
toolkits the requests connect, and the static request encoder, are computed once and cached in
``.lucy/cache/embeddings``. Without it the command ranks lexically and says so once on stderr.
Tools are indexed with their phrasebooks: the shipped ones and ``$LUCY_DATA_DIR/phrasebooks``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lucy.integrations import phrasebook
from lucy.integrations.selection import Embedder, ToolSelector, meta_tools
from lucy.integrations.selection_embed import ModelUnavailable, embedder_for


def load_catalog(path: str) -> dict[str, list[dict[str, Any]]]:
    """Tools by toolkit slug from a JSON file or every ``*.json`` file of a directory."""
    root = Path(path)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    by_toolkit: dict[str, list[dict[str, Any]]] = {}
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{file}: expected a JSON list of tool objects")
        for tool in data:
            toolkit = tool.get("toolkit")
            slug = toolkit.get("slug") if isinstance(toolkit, dict) else toolkit
            by_toolkit.setdefault(str(slug or file.stem).lower(), []).append(tool)
    return by_toolkit


def _answer(selector: ToolSelector, request: dict[str, Any], k: int, all_toolkits: set[str]) -> dict[str, Any]:
    connected = [str(t).lower() for t in request.get("connected") or []]
    text = str(request.get("text") or "")
    history = str(request.get("history") or "")
    ranked = selector.rank(text, connected, history=history, limit=k)
    selection = selector.select(
        text,
        connected,
        history=history,
        pinned=[str(p) for p in request.get("pinned") or []],
        meta=meta_tools(all_toolkits - set(connected)),
    )
    return {"id": request.get("id"), "ranked": ranked, "selected": selection.selected,
            "tool_tokens": selection.tool_tokens}


@functools.lru_cache(maxsize=1)
def _settings() -> tuple[Path, str]:
    """The data directory and the sentence-model choice the settings name (defaults if unreadable).
    Read once: the encoder and the phrasebooks both need it, and a bad setting is said once."""
    from lucy.config import load_settings
    from lucy.errors import ConfigError

    try:
        settings = load_settings()
        return settings.data_dir, settings.embedding_model.strip()
    except ConfigError as exc:
        # An unrelated bad setting must not stop an offline command; the defaults still apply.
        print(f"lucy tools rank: ignoring the settings ({exc})", file=sys.stderr)
        return Path(".lucy"), ""


def _embedder() -> Embedder | None:
    """The sentence encoder the settings name, or None (said once on stderr) to rank lexically."""
    data_dir, choice = _settings()
    try:
        return embedder_for(data_dir, choice)
    except ModelUnavailable as exc:
        print(f"lucy tools rank: ranking lexically, no sentence model ({exc})", file=sys.stderr)
        return None


def _phrasebook(extra: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """The shipped phrasebooks, the data directory's, then ``extra`` ones (:mod:`.phrasebook`)."""
    return phrasebook.load([*phrasebook.phrasebook_dirs(_settings()[0]), *map(Path, extra)])


def run_rank(catalog: str, queries: str, k: int, phrasebooks: Sequence[str] = ()) -> int:
    try:
        by_toolkit = load_catalog(catalog)
    except (OSError, ValueError) as exc:
        print(f"lucy tools rank: cannot read the catalog: {exc}", file=sys.stderr)
        return 2
    try:
        lines = Path(queries).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        print(f"lucy tools rank: cannot read the queries: {exc}", file=sys.stderr)
        return 2
    requests: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            requests.append(json.loads(line))
        except json.JSONDecodeError as exc:
            print(f"lucy tools rank: {queries}:{number}: not JSON ({exc.msg})", file=sys.stderr)
            return 2
    selector = ToolSelector(embedder=_embedder(), phrasebook=_phrasebook(phrasebooks))
    for toolkit, tools in by_toolkit.items():
        selector.add_toolkit(toolkit, tools)
    # Only the toolkits some request connects need vectors (GitHub alone is 831 tools).
    selector.embed_pending({str(t).lower() for r in requests for t in r.get("connected") or []})
    out = sys.stdout
    for request in requests:
        out.write(json.dumps(_answer(selector, request, k, set(by_toolkit)), ensure_ascii=False) + "\n")
    out.flush()
    return 0
