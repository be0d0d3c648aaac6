"""The static request encoder: distilled once from all-MiniLM-L6-v2, then microseconds a request.

Tests that need the model's files skip where ``scripts/_setup.sh`` has not fetched them. They
distil only the vocabulary entries their requests use (the whole vocabulary costs minutes):
a request's vector reads no other row, so it is the vector the full table would give.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest

from lucy.integrations.rank_cli import load_catalog
from lucy.integrations.selection import ToolSelector, selector_from_settings
from lucy.log import configure

if TYPE_CHECKING:
    from lucy.config import Settings
    from lucy.integrations.selection_embed import MiniLM

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT.parent / "shared" / "composio" / "tools"
MODEL = ROOT / ".lucy" / "models" / "all-MiniLM-L6-v2"
needs_model = pytest.mark.skipif(
    not (MODEL / "model.safetensors").is_file(), reason="scripts/_setup.sh has not fetched the sentence model"
)

# Requests written for these tests (not taken from any benchmark set), each in words its tool's
# name does not use.
PARAPHRASES = [
    ("how many people follow our channel?", ["youtube"], "YOUTUBE_GET_CHANNEL_STATISTICS"),
    ("put a meeting with the design team on thursday at 3", ["googlecalendar"], "GOOGLECALENDAR_CREATE_EVENT"),
    ("am I free tomorrow afternoon?", ["googlecalendar"], "GOOGLECALENDAR_FIND_FREE_SLOTS"),
]


@pytest.fixture(scope="module")
def model() -> MiniLM:
    from lucy.integrations.selection_embed import MiniLM

    return MiniLM(MODEL)


def _ids(model: MiniLM, texts: list[str]) -> list[int]:
    return sorted({i for t in texts for i in model.tokenizer.encode(t, add_special_tokens=False).ids})


def _seed_static(model: MiniLM, cache: Path, texts: list[str]) -> None:
    """Put a table distilled for ``texts``' tokens where the embedder looks for the full one."""
    from lucy.integrations.selection_embed import distill, save_static

    save_static(distill(model, _ids(model, texts)), cache / "static-request-encoder.npz")


@needs_model
def test_the_static_encoder_is_deterministic_and_loads_offline(
    model: MiniLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lucy.integrations.selection_embed import distill, load_static, save_static

    texts = ["cancel the deploy that is running", "who reviewed my pull request"]
    ids = _ids(model, texts)
    first, second = distill(model, ids), distill(model, ids)
    assert (first == second).all()  # the same model gives the same table, bit for bit
    save_static(first, tmp_path / "static.npz")

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the static encoder reached for the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    encoder = load_static(tmp_path / "static.npz", model.tokenizer)
    assert encoder is not None
    a, b = encoder.encode(texts[0]), encoder.encode(texts[0])
    assert (a == b).all() and abs(float(a @ a) - 1.0) < 1e-5
    assert encoder.encode("") is not None and float(abs(encoder.encode("")).sum()) == 0.0


@needs_model
def test_static_request_vectors_live_in_the_full_models_space(model: MiniLM, tmp_path: Path) -> None:
    from lucy.integrations.selection_embed import StaticEncoder, distill

    texts = ["schedule a meeting with the team", "delete the old branch", "send an email to the client"]
    static = StaticEncoder(model.tokenizer, distill(model, _ids(model, texts)))
    full = model.encode(texts)
    for i, text in enumerate(texts):
        similarity = full @ static.encode(text)
        # Each static request vector is nearest to the full model's vector of the same request.
        others = max(float(v) for j, v in enumerate(similarity) if j != i)
        assert int(similarity.argmax()) == i and float(similarity[i]) > others + 0.3


@needs_model
def test_a_table_of_another_recipe_or_model_is_not_trusted(model: MiniLM, tmp_path: Path) -> None:
    import numpy as np

    from lucy.integrations.selection_embed import load_static

    table = np.zeros((model.tokenizer.get_vocab_size(), 384), dtype=np.float16)
    np.savez(tmp_path / "old.npz", recipe=np.array("an-older-recipe"), model=np.array("all-MiniLM-L6-v2"), table=table)
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 not a whole file")
    assert load_static(tmp_path / "old.npz", model.tokenizer) is None
    assert load_static(tmp_path / "torn.npz", model.tokenizer) is None
    assert load_static(tmp_path / "absent.npz", model.tokenizer) is None


@needs_model
@pytest.mark.skipif(not CATALOG.is_dir(), reason="the shared Composio catalog is not present")
def test_a_paraphrased_request_finds_its_tool_in_the_top_five(model: MiniLM, tmp_path: Path) -> None:
    from lucy.integrations.selection_embed import load_embedder
    from lucy.integrations.selection_text import embedding_text

    catalog = load_catalog(str(CATALOG))
    cache = tmp_path / "vectors"
    _seed_static(model, cache, [embedding_text(text) for text, _, _ in PARAPHRASES])
    selector = ToolSelector(embedder=load_embedder(MODEL, cache))
    for toolkit in ("youtube", "googlecalendar"):
        selector.add_toolkit(toolkit, catalog[toolkit])
    selector.embed_pending()  # full-model tool vectors; the seeded table is used, not re-distilled

    for text, connected, gold in PARAPHRASES:
        assert selector.fused(connected)
        assert gold in selector.rank(text, connected, limit=5), text


def test_missing_model_files_mean_lexical_selection_and_one_log_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure("info", "json", stream)
    try:
        settings = cast("Settings", SimpleNamespace(data_dir=tmp_path, embedding_model=str(tmp_path / "no-model")))
        selector = selector_from_settings(settings)
    finally:
        configure("warning", "json")
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    lexical = [r for r in records if "lexical" in str(r.get("event"))]
    assert len(lexical) == 1 and "missing" in str(lexical[0].get("reason"))
    selector.add_toolkit("tiny", [{"slug": "TINY_CREATE_NOTE", "name": "Create note", "description": "Create a note"}])
    assert not selector.fused(["tiny"]) and selector.embed_pending() == 0
    assert selector.rank("make a note", ["tiny"]) == ["TINY_CREATE_NOTE"]
