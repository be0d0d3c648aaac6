"""The phrasebook: each tool's everyday requests, written once per toolkit by the configured model,
make people's words find the tool. The command runs for real against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from lucy.integrations import phrasebook
from lucy.integrations.rank_cli import load_catalog
from lucy.integrations.selection import ToolSelector
from tests.fakes.fake_composio import FakeComposio
from tests.fakes.fake_llm import FakeLLM, RecordedRequest, Reply, text

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT.parent / "shared" / "composio" / "tools"
SLUGS = ["GITHUB_CREATE_AN_ISSUE", "GITHUB_LIST_STARGAZERS", "GITHUB_DELETE_A_REFERENCE"]

pytestmark = pytest.mark.skipif(not CATALOG.is_dir(), reason="the shared Composio catalog is not present")


def _small_catalog(tmp_path: Path) -> Path:
    tools = [t for t in json.loads((CATALOG / "github.json").read_text()) if t["slug"] in SLUGS]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(tools))
    return path


def _briefs(request: RecordedRequest) -> list[dict[str, Any]]:
    return [json.loads(line) for line in str(request.messages[-1]["content"]).splitlines()]


def writer(request: RecordedRequest) -> Reply:
    """A model that answers as asked, in a fenced block as models often do."""
    asks = {b["slug"]: [f"ask {i} about {b['name']}" for i in range(4)] for b in _briefs(request)}
    return text("Here you go:\n```json\n" + json.dumps(asks) + "\n```")


async def _run(fake_llm: FakeLLM, tmp_path: Path, catalog: Path | None, *args: str,
               **env_extra: str) -> tuple[int, str, str]:
    env = {**os.environ, "LLM_MODEL": "openai/fake", "LLM_API_BASE": fake_llm.base_url, "LLM_API_KEY": "sk-test",
           "LUCY_DATA_DIR": str(tmp_path / "data"), "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env_extra}
    where = ["--catalog", str(catalog)] if catalog else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lucy", "tools", "phrasebook", *where, *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_writes_every_tools_asks_and_a_second_run_asks_nothing(
    fake_llm: FakeLLM, tmp_path: Path,
) -> None:
    fake_llm.responder = writer
    code, out, _ = await _run(fake_llm, tmp_path, _small_catalog(tmp_path))

    assert code == 0 and "github: 3 of 3 tools have asks" in out
    written = phrasebook.load([tmp_path / "data" / "phrasebooks"])
    assert sorted(written) == sorted(SLUGS)
    assert written["GITHUB_LIST_STARGAZERS"] == tuple(f"ask {i} about List stargazers" for i in range(4))
    [request] = fake_llm.requests  # three tools, one batch
    assert {b["slug"] for b in _briefs(request)} == set(SLUGS)

    code, out, _ = await _run(fake_llm, tmp_path, _small_catalog(tmp_path))
    assert code == 0 and len(fake_llm.requests) == 1  # everything had asks: the model is not asked again


async def test_without_a_catalog_the_toolkits_tools_come_from_composio(
    fake_llm: FakeLLM, fake_composio: FakeComposio, tmp_path: Path,
) -> None:
    fake_llm.responder = writer
    code, out, err = await _run(fake_llm, tmp_path, None, "--toolkit", "googletasks",
                                COMPOSIO_API_KEY=fake_composio.api_key, COMPOSIO_BASE_URL=fake_composio.base_url)

    tasks = [t["slug"] for t in fake_composio.tools if t["slug"].startswith("GOOGLETASKS_")]
    assert code == 0, err
    assert f"googletasks: {len(tasks)} of {len(tasks)} tools have asks" in out
    assert sorted(phrasebook.load([tmp_path / "data" / "phrasebooks"])) == sorted(tasks)
    assert all(s.startswith("GOOGLETASKS_") for r in fake_llm.requests for s in (b["slug"] for b in _briefs(r)))


async def test_the_command_needs_a_catalog_or_a_toolkit(fake_llm: FakeLLM, tmp_path: Path) -> None:
    code, _, err = await _run(fake_llm, tmp_path, None)
    assert code == 2 and "name a --catalog, or the --toolkit(s) to fetch from Composio" in err
    assert fake_llm.requests == []


async def test_an_unusable_answer_keeps_nothing_and_says_to_run_again(fake_llm: FakeLLM, tmp_path: Path) -> None:
    fake_llm.responder = lambda request: text("Sure! Which tools did you mean?")
    code, out, err = await _run(fake_llm, tmp_path, _small_catalog(tmp_path))

    assert code == 1 and "github: 0 of 3 tools have asks" in out
    assert "run again to retry them" in err
    assert phrasebook.load([tmp_path / "data" / "phrasebooks"]) == {}


def test_the_shipped_phrasebook_lets_peoples_words_find_the_tool() -> None:
    catalog = load_catalog(str(CATALOG))
    plain, taught = ToolSelector(), ToolSelector(phrasebook=phrasebook.load([phrasebook.SHIPPED]))
    for selector in (plain, taught):
        selector.add_toolkit("github", catalog["github"])
    request = "LGTM on acme/web#530, approve it"  # approving a PR is *creating a review*, in API words

    assert plain.rank(request, ["github"], limit=1) == ["GITHUB_APPROVE_A_WORKFLOW_RUN_FOR_A_FORK_PULL_REQUEST"]
    assert taught.rank(request, ["github"], limit=1) == ["GITHUB_CREATE_A_REVIEW_FOR_A_PULL_REQUEST"]


def test_a_later_phrasebook_wins_and_a_broken_file_reads_as_empty(tmp_path: Path) -> None:
    shipped, local = tmp_path / "shipped", tmp_path / "local"
    phrasebook.write_file(shipped / "github.json", "github", "test", {"A": ["old ask"], "B": ["b ask"]})
    phrasebook.write_file(local / "github.json", "github", "test", {"A": ["new ask", 7, "  spaced   out  "]})
    (local / "broken.json").write_text("{not json")

    assert phrasebook.load([shipped, local]) == {"A": ("new ask", "spaced out"), "B": ("b ask",)}
    assert phrasebook.load([tmp_path / "missing"]) == {}


def test_every_shipped_phrasebook_names_real_tools_with_four_asks() -> None:
    catalog = {t["slug"] for tools in load_catalog(str(CATALOG)).values() for t in tools}
    shipped = phrasebook.load([phrasebook.SHIPPED])
    assert set(shipped) == catalog  # every catalog tool has its asks, and nothing else is there
    assert all(len(asks) == phrasebook.ASKS_PER_TOOL for asks in shipped.values())
