"""Pure pieces of the Slack layer, tested as data: Block Kit builders, Markdown → mrkdwn, message
splitting, app-name matching, progress sentences, and the scopes Lucy asks for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lucy.core.types import NeedsApproval, ToolCall, ToolkitConnection
from lucy.slack.apps import display_name, match_app
from lucy.slack.blocks import (
    approval_blocks,
    connect_blocks,
    connections_blocks,
    no_match_blocks,
)
from lucy.slack.events import is_person_message, strip_mention
from lucy.slack.markdown import split_message, to_mrkdwn
from lucy.slack.progress import describe_call, describe_slug

KNOWN = ["github", "gmail", "googlecalendar", "googledocs", "googledrive", "googletasks", "notion", "linear",
         "youtube", "linkedin", "slack"]


def buttons(blocks: list[dict]) -> list[dict]:
    return [e for b in blocks for e in b.get("elements", []) if e.get("type") == "button"]


def test_connect_blocks_have_one_url_button_acked_by_its_action_id() -> None:
    blocks = connect_blocks("googlecalendar", "https://connect.composio.dev/link/lk_1", "Connect *Google Calendar*.")
    assert blocks[0] == {"type": "section", "text": {"type": "mrkdwn", "text": "Connect *Google Calendar*."}}
    [button] = buttons(blocks)
    assert button == {
        "type": "button", "action_id": "lucy_connect_googlecalendar",
        "text": {"type": "plain_text", "text": "Connect Google Calendar"},
        "url": "https://connect.composio.dev/link/lk_1", "value": "googlecalendar", "style": "primary",
    }


@pytest.mark.parametrize("url", [None, "https://connect.composio.dev/link/" + "x" * 3000])
def test_without_a_usable_link_the_blocks_point_to_the_slash_command(url: str | None) -> None:
    blocks = connect_blocks("github", url, "I need GitHub.")
    assert buttons(blocks) == [] and "`/lucy-connect github`" in blocks[1]["elements"][0]["text"]


def test_connections_overview_lists_status_and_offers_buttons() -> None:
    conns = [ToolkitConnection("gmail", "inactive"), ToolkitConnection("github", "active", "ca_1")]
    blocks = connections_blocks(conns, [("notion", "https://c/1"), ("linear", "https://c/2")])
    listing = blocks[0]["text"]["text"]
    assert listing.index("GitHub") < listing.index("Gmail")
    assert ":white_check_mark: *GitHub* — connected" in listing and ":warning: *Gmail*" in listing
    assert [b["action_id"] for b in buttons(blocks)] == ["lucy_connect_notion", "lucy_connect_linear"]
    assert connections_blocks([], [])[0]["text"]["text"].startswith("*No apps are connected")


def test_no_match_blocks_name_the_candidates() -> None:
    blocks = no_match_blocks("git<hub>", [("github", "https://c/1"), ("gitlab", None)])
    text = blocks[0]["text"]["text"]
    assert "*git&lt;hub&gt;*" in text and "*GitHub*, *GitLab*" in text
    assert [b["action_id"] for b in buttons(blocks)] == ["lucy_connect_github"]


def test_approval_blocks_carry_the_approval_id_on_both_buttons() -> None:
    approval = NeedsApproval("ap_9", "GITHUB_DELETE_A_REPOSITORY", {"repo": "web"}, "Deletes the repository.")
    blocks = approval_blocks(approval, "Approve?")
    approve, deny = buttons(blocks)
    assert (approve["action_id"], approve["value"], approve["style"]) == ("lucy_approve", "ap_9", "primary")
    assert (deny["action_id"], deny["value"], deny["style"]) == ("lucy_deny", "ap_9", "danger")
    assert approve["confirm"]["title"]["text"] == "Run this action?"  # destructive: asks twice
    assert '"repo": "web"' in blocks[1]["text"]["text"]
    write = NeedsApproval("ap_1", "GMAIL_SEND_EMAIL", {}, "Sends an email.", risk="write")
    assert "confirm" not in buttons(approval_blocks(write))[0]
    assert approval_blocks(write)[0]["text"]["text"].startswith("*GMAIL_SEND_EMAIL*")


@pytest.mark.parametrize("md, expected", [
    ("**bold** and __also__", "*bold* and *also*"),
    ("*italic* and _this_", "_italic_ and _this_"),
    ("~~gone~~", "~gone~"),
    ("[Lucy](https://example.com/a?b=1&c=2)", "<https://example.com/a?b=1&c=2|Lucy>"),
    ("see <https://x.dev> now", "see <https://x.dev> now"),
    ("# Title\n## Sub", "*Title*\n*Sub*"),
    ("- a\n  - b\n* c\n+ d", "• a\n    ◦ b\n• c\n• d"),
    ("1. one\n2. two", "1. one\n2. two"),
    ("- [x] done\n- [ ] todo", "• ☑ done\n• ☐ todo"),
    ("> quoted **bit**", "> quoted *bit*"),
    ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
    ("hi <@U123> in <#C9|general> <!here>", "hi <@U123> in <#C9|general> <!here>"),
    ("`**not bold**` and `a<b`", "`**not bold**` and `a&lt;b`"),
    ("```python\nif a < b:\n    **x**\n```", "```\nif a &lt; b:\n    **x**\n```"),
    ("snake_case_name stays", "snake_case_name stays"),
    ("![chart](https://img/x.png)", "<https://img/x.png|chart>"),
    ("---", "──────────"),
    ("| a | bb |\n|---|---|\n| 1 | 2 |", "```\na  bb\n1  2\n```"),
])
def test_markdown_becomes_mrkdwn(md: str, expected: str) -> None:
    assert to_mrkdwn(md) == expected


def test_an_unclosed_code_block_is_closed() -> None:
    assert to_mrkdwn("```\nx = 1") == "```\nx = 1\n```"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \n`*#-")), min_size=0, max_size=3000),
       st.integers(min_value=200, max_value=1200))
def test_split_keeps_every_piece_within_the_limit(text: str, limit: int) -> None:
    pieces = split_message(text, limit)
    assert all(len(p) <= limit for p in pieces)
    assert "".join(pieces).replace("```", "").replace("\n", "").replace(" ", "") == (
        text.replace("```", "").replace("\n", "").replace(" ", ""))


def test_split_reopens_a_code_block_it_cuts() -> None:
    text = "intro\n\n```\n" + "\n".join(f"line {i}" for i in range(400)) + "\n```"
    pieces = split_message(text, 1000)
    assert len(pieces) > 2 and all(p.count("```") % 2 == 0 for p in pieces)
    assert all(p.startswith("```") for p in pieces[1:])


@pytest.mark.parametrize("typed, slug", [
    ("gh", "github"), ("GitHub", "github"), ("google calendar", "googlecalendar"), ("Gmail", "gmail"),
    ("gcal", "googlecalendar"), ("google-docs", "googledocs"), ("notio", "notion"),
    ("Google Drive", "googledrive"), ("linea", "linear"), ("you tube", "youtube"),
])
def test_app_names_are_matched_loosely(typed: str, slug: str) -> None:
    assert match_app(typed, KNOWN).slug == slug


def test_an_unclear_app_name_gives_the_closest_matches() -> None:
    match = match_app("google", KNOWN)
    assert match.slug is None and set(match.candidates) <= {"googlecalendar", "googledocs", "googledrive",
                                                            "googletasks"}
    assert len(match.candidates) == 3
    assert match_app("zzzzqqq", KNOWN).candidates == []
    assert set(match_app("lin", KNOWN).candidates) == {"linear", "linkedin"}
    assert match_app("githib", KNOWN).candidates[0] == "github"  # a typo is suggested, not assumed


def test_display_names() -> None:
    assert [display_name(s) for s in ("github", "googlecalendar", "some_new_tool")] == [
        "GitHub", "Google Calendar", "Some New Tool"]


@pytest.mark.parametrize("slug, sentence", [
    ("GITHUB_CREATE_AN_ISSUE", "Creating the GitHub issue"),
    ("GMAIL_SEND_EMAIL", "Sending the Gmail email"),
    ("GOOGLECALENDAR_FIND_EVENT", "Finding the Google Calendar event"),
    ("NOTION_SEARCH", "Searching in Notion"),
    ("LINEAR_XYZ_THING", "Using Linear: xyz thing"),
])
def test_progress_sentences(slug: str, sentence: str) -> None:
    assert describe_slug(slug) == sentence


def test_meta_tool_progress() -> None:
    assert describe_call(ToolCall("1", "search_tools", {"query": "x"})) == "Looking for the right tool"
    assert describe_call(ToolCall("1", "connect_app", {"toolkit": "github"})) == "Preparing a link to connect GitHub"


def test_which_messages_are_a_person_talking() -> None:
    base = {"type": "message", "user": "U1", "text": "hi", "ts": "1.1", "channel": "C1"}
    assert is_person_message(base)
    assert is_person_message({**base, "subtype": "thread_broadcast"})
    assert not is_person_message({**base, "subtype": "message_changed"})
    assert not is_person_message({**base, "bot_id": "B1"})
    assert not is_person_message({**base, "text": "  "})
    assert strip_mention("<@U0LUCY>  please  <@U0BOB> look", "U0LUCY") == "please <@U0BOB> look"


def test_lucy_asks_for_the_scopes_its_manifest_declares() -> None:
    from lucy.slack.app import BOT_SCOPES

    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "manifest.yml").read_text())
    assert sorted(BOT_SCOPES) == sorted(manifest["oauth_config"]["scopes"]["bot"])
